// markdown.js - a small, safe Markdown renderer for the agent's answers.
//
// It builds DOM nodes (createElement, text nodes) and never parses HTML:
// a "<script>" or "<img onerror=...>" in the model's text is shown as those
// characters.  Links are made only for http(s), mailto and relative targets
// (dom.js safeUrl); images are shown as links, never loaded.
//
// The subset is what coding agents write: ATX headings, paragraphs (a
// single newline is a line break, as in chat), fenced code blocks with a
// language label, block quotes, bullet / ordered / task lists with nesting,
// pipe tables, horizontal rules; inline code, **strong**, *em*, ~~del~~,
// [links](url), <autolinks>, bare URLs and backslash escapes.  Text that is
// cut mid-stream renders sensibly: an unclosed fence is a code block up to
// the end, an unclosed ** is literal text.
import { h, safeUrl } from "./dom.js";

const MAX_INPUT = 400_000; // longer answers are shown as plain text
const MAX_DEPTH = 12;      // nesting of quotes/lists (and inline recursion)

export function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    const src = String(text ?? "").replace(/\r\n?/g, "\n");
    if (src.length > MAX_INPUT) {
        frag.append(h("pre.plain", { text: src }));
        return frag;
    }
    for (const node of blocks(src.split("\n"), 0)) frag.append(node);
    return frag;
}

// ---- blocks -----------------------------------------------------------------

const RE_FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const RE_HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RE_HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const RE_QUOTE = /^ {0,3}> ?(.*)$/;
const RE_ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])([ \t]+|$)(.*)$/;
const RE_TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function isBlank(line) {
    return /^\s*$/.test(line);
}

function startsBlock(line) {
    return RE_FENCE.test(line) || RE_HEADING.test(line) || RE_HR.test(line) ||
        RE_QUOTE.test(line) || RE_ITEM.test(line);
}

function blocks(lines, depth) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
        const line = lines[i];
        if (isBlank(line)) { i++; continue; }
        let m;
        if ((m = RE_FENCE.exec(line))) {
            const fence = m[1];
            const lang = m[2] || "";
            const body = [];
            i++;
            while (i < lines.length) {
                const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[i]);
                if (close && close[1][0] === fence[0] && close[1].length >= fence.length) { i++; break; }
                body.push(lines[i]);
                i++;
            }
            out.push(codeBlock(body.join("\n"), lang));
            continue;
        }
        if ((m = RE_HEADING.exec(line))) {
            out.push(h(`h${m[1].length}`, inline(m[2] || "", 0)));
            i++;
            continue;
        }
        if (RE_HR.test(line)) {
            out.push(h("hr"));
            i++;
            continue;
        }
        if (RE_QUOTE.test(line)) {
            const inner = [];
            while (i < lines.length && (m = RE_QUOTE.exec(lines[i]))) {
                inner.push(m[1]);
                i++;
            }
            out.push(depth < MAX_DEPTH ? h("blockquote", blocks(inner, depth + 1)) : h("blockquote", { text: inner.join("\n") }));
            continue;
        }
        if (RE_ITEM.test(line)) {
            const r = list(lines, i, depth);
            out.push(r.node);
            i = r.next;
            continue;
        }
        if (line.includes("|") && i + 1 < lines.length && RE_TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
            const r = table(lines, i);
            if (r) {
                out.push(r.node);
                i = r.next;
                continue;
            }
        }
        const para = [];
        while (i < lines.length && !isBlank(lines[i]) && (para.length === 0 || !startsBlock(lines[i]))) {
            para.push(lines[i].replace(/^\s+/, ""));
            i++;
        }
        out.push(h("p", inline(para.join("\n"), 0)));
    }
    return out;
}

function codeBlock(code, lang) {
    const pre = h("pre.code");
    if (lang) pre.dataset.lang = lang.slice(0, 32);
    pre.append(h("code", { text: code }));
    return pre;
}

function indentOf(s) {
    let n = 0;
    for (const c of s) {
        if (c === " ") n++;
        else if (c === "\t") n += 4 - (n % 4);
        else break;
    }
    return n;
}

// Strip up to n columns of leading spaces.
function dedent(s, n) {
    let i = 0, col = 0;
    while (i < s.length && col < n && (s[i] === " " || s[i] === "\t")) {
        col += s[i] === "\t" ? 4 - (col % 4) : 1;
        i++;
    }
    return s.slice(i);
}

function list(lines, start, depth) {
    const first = RE_ITEM.exec(lines[start]);
    const ordered = /\d/.test(first[2]);
    const baseIndent = indentOf(first[1]);
    const items = [];
    let i = start;
    let loose = false;
    while (i < lines.length) {
        const m = RE_ITEM.exec(lines[i]);
        if (!m || /\d/.test(m[2]) !== ordered || indentOf(m[1]) > baseIndent + 3 || indentOf(m[1]) < baseIndent) break;
        const contentIndent = indentOf(m[1]) + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
        const body = [m[4]];
        i++;
        let sawBlank = false;
        while (i < lines.length) {
            const l = lines[i];
            if (isBlank(l)) { sawBlank = true; body.push(""); i++; continue; }
            if (indentOf(l) >= contentIndent || (indentOf(l) > baseIndent && RE_ITEM.test(l))) {
                if (sawBlank) loose = true;
                sawBlank = false;
                body.push(dedent(l, Math.min(contentIndent, indentOf(l))));
                i++;
                continue;
            }
            if (!sawBlank && !startsBlock(l)) { body.push(l.trim()); i++; continue; } // lazy continuation
            break;
        }
        while (body.length && body[body.length - 1] === "") body.pop();
        items.push(body);
        // a blank line then the next item of this list: a loose list
        const nextItem = i < lines.length ? RE_ITEM.exec(lines[i]) : null;
        if (sawBlank && nextItem && /\d/.test(nextItem[2]) === ordered && indentOf(nextItem[1]) <= baseIndent + 3) loose = true;
    }
    const el = h(ordered ? "ol" : "ul");
    if (ordered) {
        const n = parseInt(first[2], 10);
        if (n !== 1) el.setAttribute("start", String(n));
    }
    for (const body of items) {
        const li = h("li");
        const task = /^\[([ xX])\][ \t]+/.exec(body[0]);
        if (task) {
            body[0] = body[0].slice(task[0].length);
            li.className = "task";
            li.append(h("input", { type: "checkbox", disabled: true, checked: task[1] !== " ", "aria-label": task[1] !== " " ? "done" : "not done" }));
        }
        const kids = depth < MAX_DEPTH ? blocks(body, depth + 1) : [h("p", { text: body.join("\n") })];
        for (const k of kids) {
            // tight list: a lone paragraph's text goes straight into the item
            if (!loose && k.tagName === "P") li.append(...k.childNodes);
            else li.append(k);
        }
        el.append(li);
    }
    return { node: el, next: i };
}

function splitRow(line) {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    const cells = [];
    let cur = "", code = false;
    for (let k = 0; k < s.length; k++) {
        const c = s[k];
        if (c === "\\" && s[k + 1] === "|") { cur += "|"; k++; continue; }
        if (c === "`") code = !code;
        if (c === "|" && !code) { cells.push(cur.trim()); cur = ""; continue; }
        cur += c;
    }
    cells.push(cur.trim());
    return cells;
}

function table(lines, start) {
    const head = splitRow(lines[start]);
    const aligns = splitRow(lines[start + 1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
    if (head.length !== aligns.length) return null;
    const cell = (tag, text, k) => {
        const el = h(tag, inline(text, 0));
        if (aligns[k]) el.className = `align-${aligns[k]}`;
        return el;
    };
    const thead = h("thead", h("tr", head.map((c, k) => cell("th", c, k))));
    const tbody = h("tbody");
    let i = start + 2;
    while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
        const row = splitRow(lines[i]);
        tbody.append(h("tr", head.map((_, k) => cell("td", row[k] ?? "", k))));
        i++;
    }
    return { node: h("div.table-wrap", h("table", thead, tbody)), next: i };
}

// ---- inline -------------------------------------------------------------------

const PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

// Nodes for one run of inline text.
export function inline(text, depth) {
    const out = [];
    let buf = "";
    const flush = () => {
        if (!buf) return;
        const parts = buf.split("\n");
        parts.forEach((p, k) => {
            if (k) out.push(h("br"));
            if (p) out.push(document.createTextNode(p));
        });
        buf = "";
    };
    const push = (node) => { flush(); out.push(node); };
    let i = 0;
    const n = text.length;
    while (i < n) {
        const c = text[i];
        // backslash escape
        if (c === "\\" && i + 1 < n && PUNCT.includes(text[i + 1])) {
            buf += text[i + 1];
            i += 2;
            continue;
        }
        // code span
        if (c === "`") {
            let run = 1;
            while (text[i + run] === "`") run++;
            const fence = "`".repeat(run);
            let j = i + run, end = -1;
            while ((j = text.indexOf(fence, j)) !== -1) {
                if (text[j + run] !== "`" && text[j - 1] !== "`") { end = j; break; }
                while (text[j] === "`") j++;
            }
            if (end !== -1) {
                let code = text.slice(i + run, end).replace(/\n/g, " ");
                if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
                push(h("code", { text: code }));
                i = end + run;
                continue;
            }
            buf += fence;
            i += run;
            continue;
        }
        // autolink <https://...>
        if (c === "<") {
            const m = /^<((?:https?|mailto):[^\s<>]+)>/i.exec(text.slice(i, i + 2100));
            if (m) {
                push(link(m[1], [document.createTextNode(m[1])]));
                i += m[0].length;
                continue;
            }
        }
        // link or image: [text](url "title")
        if (c === "[" || (c === "!" && text[i + 1] === "[")) {
            const image = c === "!";
            const r = parseLink(text, image ? i + 1 : i);
            if (r) {
                const label = depth < MAX_DEPTH ? inline(r.label, depth + 1) : [document.createTextNode(r.label)];
                if (image) push(link(r.url, [document.createTextNode(`[image: ${r.label || r.url}]`)], "image-link"));
                else push(link(r.url, label));
                i = r.end;
                continue;
            }
        }
        // bare URL
        if ((c === "h" || c === "H") && /^https?:\/\//i.test(text.slice(i, i + 8)) && (i === 0 || /[\s(]/.test(text[i - 1]))) {
            const m = /^https?:\/\/[^\s<>"'`]+/i.exec(text.slice(i, i + 2100));
            let url = m ? m[0] : "";
            while (/[.,;:!?)\]}*_]$/.test(url)) url = url.slice(0, -1);
            if (url.length > 8) {
                push(link(url, [document.createTextNode(url)]));
                i += url.length;
                continue;
            }
        }
        // emphasis: ** __ ~~ * _
        if (c === "*" || c === "_" || c === "~") {
            const r = emphasis(text, i, depth);
            if (r) {
                push(r.node);
                i = r.end;
                continue;
            }
        }
        buf += c;
        i++;
    }
    flush();
    return out;
}

function link(url, children, cls) {
    const safe = safeUrl(url);
    if (!safe) return h("span.unsafe-link", { title: "link not followed: unsupported address" }, children);
    return h("a", { href: safe, target: "_blank", rel: "noopener noreferrer nofollow", class: cls }, children);
}

// [label](url "title") starting at text[i] === "[".
function parseLink(text, i) {
    let depth = 0, j = i;
    for (; j < text.length && j - i < 2000; j++) {
        const c = text[j];
        if (c === "\\") { j++; continue; }
        if (c === "`") { const e = text.indexOf("`", j + 1); if (e !== -1) j = e; continue; }
        if (c === "[") depth++;
        else if (c === "]" && --depth === 0) break;
        else if (c === "\n" && text[j + 1] === "\n") return null;
    }
    if (depth !== 0 || text[j] !== "]" || text[j + 1] !== "(") return null;
    const m = /^\(\s*(<[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+("[^"]*"|'[^']*'))?\s*\)/.exec(text.slice(j + 1, j + 2200));
    if (!m) return null;
    let url = m[1];
    if (url.startsWith("<")) url = url.slice(1, -1);
    return { label: text.slice(i + 1, j), url, end: j + 1 + m[0].length };
}

function emphasis(text, i, depth) {
    if (depth >= MAX_DEPTH) return null;
    const c = text[i];
    const double = text[i + 1] === c;
    if (c === "~" && !double) return null;
    const delim = double ? c + c : c;
    const after = text[i + delim.length];
    if (!after || /\s/.test(after)) return null; // left-flanking only
    // "_" inside a word (snake_case) is not emphasis
    if (c === "_" && i > 0 && /[A-Za-z0-9]/.test(text[i - 1])) return null;
    let j = i + delim.length;
    while ((j = text.indexOf(delim, j)) !== -1) {
        const before = text[j - 1];
        const next = text[j + delim.length];
        const single = delim.length === 1;
        if (/\S/.test(before) && !(single && (next === c || before === c)) &&
            !(c === "_" && next && /[A-Za-z0-9]/.test(next)) && j > i + delim.length) {
            const inner = text.slice(i + delim.length, j);
            if (inner.includes("\n\n")) return null;
            const tag = c === "~" ? "del" : double ? "strong" : "em";
            return { node: h(tag, inline(inner, depth + 1)), end: j + delim.length };
        }
        j += delim.length;
    }
    return null;
}
