// dom.js - small DOM helpers.  Everything the page shows is built with
// createElement and textContent: no string of HTML is ever parsed, so text
// from a model, a tool or another client cannot become markup.

// h("div.card.tool", {attrs}, child, ...): an element.  Children are nodes,
// strings (text nodes), arrays, or null/false (skipped).  Attributes:
// "class", "text" (textContent), "on<event>" (listener), "dataset" (an
// object), booleans (present or absent), other strings through setAttribute.
// "href" goes through safeUrl.
export function h(tag, attrs, ...children) {
    const [name, ...classes] = tag.split(".");
    const el = document.createElement(name || "div");
    if (classes.length) el.className = classes.join(" ");
    if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
        children.unshift(attrs);
        attrs = null;
    }
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") el.className = [el.className, v].filter(Boolean).join(" ");
        else if (k === "text") el.textContent = String(v);
        else if (k === "dataset") Object.assign(el.dataset, v);
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else if (k === "href") {
            const safe = safeUrl(v);
            if (safe) el.setAttribute("href", safe);
        } else if (v === true) el.setAttribute(k, "");
        else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
}

export function append(el, children) {
    for (const c of children) {
        if (c === null || c === undefined || c === false) continue;
        if (Array.isArray(c)) append(el, c);
        else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
}

export function clear(el) {
    while (el.firstChild) el.firstChild.remove();
    return el;
}

// A link target we are willing to make clickable: http(s), mailto, or a
// relative path/anchor.  Anything else (javascript:, data:, vbscript:, a
// scheme hidden by control characters) gives null.
export function safeUrl(url) {
    const s = String(url || "").trim();
    if (!s || /[\u0000-\u001f\u007f\s]/.test(s)) return null;
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(s);
    if (scheme) return /^(https?|mailto)$/i.test(scheme[1]) ? s : null;
    if (s.startsWith("//")) return null; // protocol-relative: another host, unannounced
    return s;
}

// "3 s", "2 min", "5 h", "4 d" ago; "just now" under 5 s.
export function ago(ms, now = Date.now()) {
    const d = Math.max(0, now - ms) / 1000;
    if (d < 5) return "just now";
    if (d < 60) return `${Math.floor(d)} s ago`;
    if (d < 3600) return `${Math.floor(d / 60)} min ago`;
    if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
    return `${Math.floor(d / 86400)} d ago`;
}

export function duration(ms) {
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
    const m = Math.floor(ms / 60000);
    return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}

// Micro-dollars as money: "$0.0123", "$1.23".
export function money(micros) {
    const usd = (Number(micros) || 0) / 1e6;
    if (usd === 0) return "$0";
    if (usd < 0.01) return `$${usd.toFixed(4)}`;
    if (usd < 100) return `$${usd.toFixed(usd < 1 ? 3 : 2)}`;
    return `$${Math.round(usd)}`;
}

export function count(n) {
    return (Number(n) || 0).toLocaleString("en-US");
}

export function localTime(ms) {
    try {
        return new Date(ms).toLocaleString();
    } catch {
        return "";
    }
}
