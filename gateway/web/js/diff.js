// diff.js - a line diff of a file edit (ACP's diff content: path, oldText,
// newText), as hunks with three lines of context, and its DOM view.
import { h } from "./dom.js";

const CONTEXT = 3;
const MAX_CELLS = 4_000_000; // LCS table budget; beyond it the middle is replaced whole

function splitLines(text) {
    if (!text) return [];
    const lines = text.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    return lines;
}

// Operations [{op: " "|"-"|"+", text, a, b}] (a, b: 1-based line numbers in
// the old and new text, or null).
export function diffLines(oldText, newText) {
    const a = splitLines(oldText), b = splitLines(newText);
    let pre = 0;
    while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
    let suf = 0;
    while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
    const am = a.slice(pre, a.length - suf), bm = b.slice(pre, b.length - suf);
    const mid = [];
    if (am.length * bm.length <= MAX_CELLS) {
        // LCS lengths from the end, then walk forward.
        const n = am.length, m = bm.length;
        const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
        for (let i = n - 1; i >= 0; i--)
            for (let j = m - 1; j >= 0; j--)
                L[i][j] = am[i] === bm[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
        let i = 0, j = 0;
        while (i < n || j < m) {
            // removed lines before added ones, as unified diffs show them
            if (i < n && j < m && am[i] === bm[j]) { mid.push([" ", am[i]]); i++; j++; }
            else if (i < n && (j === m || L[i + 1][j] >= L[i][j + 1])) { mid.push(["-", am[i]]); i++; }
            else { mid.push(["+", bm[j]]); j++; }
        }
    } else {
        for (const l of am) mid.push(["-", l]);
        for (const l of bm) mid.push(["+", l]);
    }
    const ops = [];
    let ai = 1, bi = 1;
    const add = (op, text) => {
        ops.push({ op, text, a: op === "+" ? null : ai, b: op === "-" ? null : bi });
        if (op !== "+") ai++;
        if (op !== "-") bi++;
    };
    for (let k = 0; k < pre; k++) add(" ", a[k]);
    for (const [op, text] of mid) add(op, text);
    for (let k = a.length - suf; k < a.length; k++) add(" ", a[k]);
    return ops;
}

// Group ops into hunks: changed lines with CONTEXT lines around them.
export function hunks(ops) {
    const keep = new Uint8Array(ops.length);
    ops.forEach((o, k) => {
        if (o.op === " ") return;
        for (let d = Math.max(0, k - CONTEXT); d <= Math.min(ops.length - 1, k + CONTEXT); d++) keep[d] = 1;
    });
    const out = [];
    let cur = null;
    ops.forEach((o, k) => {
        if (!keep[k]) { cur = null; return; }
        if (!cur) out.push((cur = []));
        cur.push(o);
    });
    return out;
}

// The view: a header with the path and +/- counts, then the hunks.
export function diffView(path, oldText, newText) {
    const ops = diffLines(oldText ?? "", newText ?? "");
    const added = ops.filter((o) => o.op === "+").length;
    const removed = ops.filter((o) => o.op === "-").length;
    const head = h("div.diff-head",
        h("span.diff-path", { text: path || "(file)" }),
        oldText === undefined || oldText === null ? h("span.diff-new", { text: "new file" }) : null,
        h("span.diff-add", { text: `+${added}` }),
        h("span.diff-del", { text: `−${removed}` }));
    const body = h("div.diff-body", { role: "table", "aria-label": `changes to ${path || "the file"}` });
    const hs = hunks(ops);
    if (!hs.length) body.append(h("div.diff-empty", { text: "no change" }));
    hs.forEach((hunk, k) => {
        if (k) body.append(h("div.diff-gap", { text: "⋯", "aria-hidden": "true" }));
        for (const o of hunk) {
            const cls = o.op === "+" ? "add" : o.op === "-" ? "del" : "ctx";
            body.append(h(`div.diff-line.${cls}`, { role: "row" },
                h("span.ln", { text: o.a ?? "", "aria-hidden": "true" }),
                h("span.ln", { text: o.b ?? "", "aria-hidden": "true" }),
                h("span.sign", { text: o.op === " " ? " " : o.op === "-" ? "−" : "+", "aria-label": o.op === "+" ? "added" : o.op === "-" ? "removed" : "unchanged" }),
                h("span.txt", { text: o.text })));
        }
    });
    return h("div.diff", head, h("div.diff-scroll", body));
}
