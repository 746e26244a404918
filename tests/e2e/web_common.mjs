// web_common.mjs - what the browser tests of the web page share:
// web.test.mjs (Chromium, the whole flow) and web_firefox.test.mjs (Firefox
// over WebDriver BiDi, a subset).  Environment from corral_stack.py, checks
// and waits, the page helpers, and the steps both browsers run the same way
// (sign-in, a new session from the dialog, a streamed Markdown answer).
import fs from "node:fs";
import path from "node:path";

export const HTTP = process.env.CORRAL_HTTP;
export const KEY = process.env.CORRAL_KEY;
export const WS = process.env.CORRAL_WORKSPACE;
export const CONTROL = process.env.CORRAL_CONTROL;
export const ART = process.env.CORRAL_WEB_ARTIFACTS || path.resolve("web-artifacts");
for (const [k, v] of Object.entries({ CORRAL_HTTP: HTTP, CORRAL_KEY: KEY, CORRAL_WORKSPACE: WS, CORRAL_CONTROL: CONTROL }))
    if (!v) { console.error(`${k} is not set; run under corral_stack.py`); process.exit(2); }
fs.mkdirSync(ART, { recursive: true });

export const T0 = Date.now();
export const W = 15_000; // the longest any one condition may take to appear

export function watchdog(seconds, name) {
    return setTimeout(() => {
        console.error(`FAIL the ${name} test took more than ${seconds} s`);
        process.exit(1);
    }, seconds * 1000);
}

let passedChecks = 0;
export const passed = () => passedChecks;
export function check(ok, name, detail) {
    if (!ok) {
        const d = detail === undefined ? "" : ": " + (typeof detail === "string" ? detail : JSON.stringify(detail));
        throw new Error(`check failed: ${name}${d}`);
    }
    passedChecks++;
    console.log(`ok   ${name}`);
}
export const t = () => `${((Date.now() - T0) / 1000).toFixed(1)} s`;

// Screenshot names get this prefix ("firefox-" for the Firefox test).
let shotPrefix = "";
export function setShotPrefix(p) { shotPrefix = p; }
export async function shot(page, name) {
    await page.screenshot({ path: path.join(ART, `${shotPrefix}${name}.png`) });
}
export async function until(what, fn, ms = W) {
    const end = Date.now() + ms;
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e.message;
        }
        if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
        await new Promise((r) => setTimeout(r, 50));
    }
}
export async function rest(p) {
    const res = await fetch(HTTP + p, { headers: { Authorization: `Bearer ${KEY}` } });
    return { status: res.status, text: await res.text() };
}
export async function control(action) {
    const res = await fetch(`${CONTROL}/gateway/${action}`, { method: "POST" });
    if (res.status !== 204) throw new Error(`fixture: gateway ${action}: ${res.status} ${await res.text()}`);
}

// Script errors and console errors of a page go to errors.  The browser's
// own notes on a refused request or a dropped socket are not the page's
// errors (Chromium: "Failed to load resource", "WebSocket connection to";
// Firefox: "can't establish a connection", "was interrupted").
export function watch(page, name, errors) {
    page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
    page.on("console", (m) => {
        if (m.type() === "error" &&
            !/Failed to load resource|WebSocket connection to|can.t establish a connection|was interrupted while the page was loading/.test(m.text()))
            errors.push(`${name} console: ${m.text()}`);
    });
    page.on("dialog", (d) => d.accept()); // the delete confirmation
}

// ---- helpers on the page ------------------------------------------------------------------

export const turns = (page) => page.locator("#log .turn");
export const lastTurn = (page) => turns(page).last();
export async function send(page, text) {
    await page.fill("#input", text);
    await page.press("#input", "Enter");
}
export async function turnEnded(page, n, stop = "end_turn") {
    await until(`turn ${n} to end ${stop}`, async () =>
        (await turns(page).nth(n - 1).getAttribute("data-stop")) === stop);
}
// The open permission prompt, as a locator that keeps naming that card
// after it is answered.
export async function openPerm(page) {
    const open = page.locator(".card.perm[data-state=open]").first();
    await open.waitFor({ timeout: W });
    const turn = await open.evaluate((el) => el.closest(".turn").dataset.turn);
    const req = await open.getAttribute("data-request-id");
    return page.locator(`.turn[data-turn="${turn}"] .card.perm[data-request-id="${req}"]`);
}
export async function fileText(rel) {
    try { return fs.readFileSync(path.join(WS, rel), "utf8"); } catch { return null; }
}
export async function noHorizontalScroll(page) {
    return page.evaluate(() => ({
        doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
        vw: window.innerWidth,
        log: (() => { const l = document.getElementById("log"); return l ? l.scrollWidth - l.clientWidth : 0; })(),
    }));
}

// ---- steps both browsers run ------------------------------------------------------------------

// A write_file permission prompt as the server offers it: its options,
// what the tool wants, and nothing written before the answer.
export async function writeOffered(perm) {
    const names = await perm.locator("button.opt").allTextContents();
    check(JSON.stringify(names) === JSON.stringify(["Allow", "Always allow", "Reject"]), "the options are the server's", names);
    check((await perm.textContent()).includes("Write notes.txt"), "the prompt says what the tool wants");
    check(await fileText("notes.txt") === null, "nothing is written before the answer");
}

// After the approved write's turn: the file and its tool card (a new file
// is a diff of added lines).
export async function writeDone(page) {
    check(await fileText("notes.txt") === "alpha\nbeta\ngamma\n", "the file is written in the workspace");
    const card = lastTurn(page).locator(".card.tool[data-kind=edit]");
    check(await card.getAttribute("data-status") === "completed", "the tool card is completed");
    check((await card.locator(".tool-title").textContent()) === "Write notes.txt", "the tool card says what");
    check(/\d+ ms|\d+(\.\d)? s/.test(await card.locator(".dur").textContent()), "the tool card has a duration");
    check(await card.locator(".diff-line.add").count() === 3 && (await card.locator(".diff-new").count()) === 1, "a new file is a diff of added lines");
    return card;
}

// edit_file approved from the keyboard (the third turn): the file changed
// and its card is a diff with removed, added and context lines.
export async function editFromKeyboard(page, shotName) {
    await send(page, "change notes");
    const perm = await openPerm(page);
    await perm.locator("button[data-option-id=allow]").focus();
    await page.keyboard.press("Enter");
    await turnEnded(page, 3);
    check(await fileText("notes.txt") === "alpha\nBETA two\ngamma\n", "the edit reached the file");
    const card = turns(page).nth(2).locator(".card.tool[data-kind=edit]");
    check(await card.locator(".diff-line.del .txt").allTextContents().then((x) => x.join("|")) === "beta", "the diff shows the removed line");
    check(await card.locator(".diff-line.add .txt").allTextContents().then((x) => x.join("|")) === "BETA two", "the diff shows the added line");
    check(await card.locator(".diff-line.ctx").count() === 2, "with context lines");
    await card.scrollIntoViewIfNeeded();
    await shot(page, shotName);
    return card;
}

// The 360 px checks: no horizontal scroll with the conversation and with
// the sessions drawer open (which takes the keyboard focus); `card` is
// scrolled into view for the first screenshot.  Back to 1280 px after.
export async function narrowViewport(page, card, shots) {
    await page.setViewportSize({ width: 360, height: 760 });
    await page.locator("#menu").waitFor({ state: "visible" });
    let sw = await noHorizontalScroll(page);
    check(sw.doc <= 360 && sw.body <= 360 && sw.log <= 0, "no horizontal scroll at 360 px", sw);
    await card.scrollIntoViewIfNeeded();
    await shot(page, shots[0]);
    await page.click("#menu");
    await page.locator("#sidebar .session-item").first().waitFor({ state: "visible" });
    await until("the drawer slid in", () => page.evaluate(() => document.getElementById("sidebar").getBoundingClientRect().left >= 0));
    check(await page.evaluate(() => document.activeElement.id) === "new-session", "the drawer takes the keyboard focus");
    sw = await noHorizontalScroll(page);
    check(sw.doc <= 360 && sw.body <= 360, "no horizontal scroll with the drawer open", sw);
    await shot(page, shots[1]);
    await page.keyboard.press("Escape");
    await page.locator("#sidebar .session-item").first().waitFor({ state: "hidden" });
    await page.setViewportSize({ width: 1280, height: 860 });
}

// A wrong key (well formed but unknown, then malformed) is refused with a
// clear message and not stored; the right key connects and is kept.
export async function signIn(ctx, page) {
    await page.goto(HTTP + "/");
    await page.locator("#signin-key").waitFor();
    const mid = 10;
    const wrong = KEY.slice(0, mid) + (KEY[mid] === "A" ? "B" : "A") + KEY.slice(mid + 1);
    await page.fill("#signin-key", wrong);
    await page.click("#signin-submit");
    await page.locator("#signin-error:not([hidden])").waitFor({ timeout: W });
    const err1 = await page.textContent("#signin-error");
    check(/wrong key/i.test(err1) && /not accepted/i.test(err1), "an unknown key is refused with a clear message", err1);
    await page.fill("#signin-key", "crl_short");
    await page.click("#signin-submit");
    await until("the error for a malformed key", async () => /not accepted/i.test(await page.textContent("#signin-error")));
    check(await page.evaluate(() => localStorage.getItem("corral.key")) === null, "a refused key is not stored");
    await shot(page, "01-signin-wrong-key");

    await page.fill("#signin-key", KEY);
    await page.click("#signin-submit");
    await page.locator("#conn[data-state=connected]").waitFor({ timeout: W });
    check(await page.evaluate(() => localStorage.getItem("corral.key")) === KEY, "the key is kept in localStorage");
    check((await ctx.cookies()).some((c) => c.name === "corral_key" && c.httpOnly), "POST /v1/login set the HttpOnly cookie");
    await shot(page, "02-signed-in");
}

// A new session from the dialog: a cwd outside the roots is refused there,
// then the workspace with the given permission mode.  Returns its id.
export async function newSession(page, title, mode) {
    await page.click("#new-session");
    await page.locator("#new-dialog[open]").waitFor();
    await page.fill("#new-cwd", "/definitely/not/a/workspace");
    await page.fill("#new-title-input", title);
    await page.click("#new-create");
    await page.locator("#new-error:not([hidden])").waitFor({ timeout: W });
    check(/outside the workspace roots/.test(await page.textContent("#new-error")), "a cwd outside the roots is refused in the dialog", await page.textContent("#new-error"));
    check(await page.locator(`#cwd-list option[value="${WS}/"]`).count() === 1, "the refused cwd's message teaches the dialog the workspace root");
    await page.fill("#new-cwd", WS);
    await page.selectOption("#new-mode", mode);
    await page.click("#new-create");
    await page.locator("#session:not([hidden])").waitFor({ timeout: W });
    const sid = await until("the open session id", () => page.evaluate(() => window.corral.open?.id));
    check(/^[0-9a-f-]{36}$/.test(sid), "the new session is open", sid);
    check(page.url().endsWith(`#s=${sid}`), "the open session is in the address", page.url());
    await until("the session in the sidebar", async () =>
        (await page.locator(`.session-item[data-session-id="${sid}"] .s-title`).textContent()) === title);
    check(await page.locator("#s-title").textContent() === title, "the header shows the title");
    return sid;
}

// "markdown please" as the first turn: the answer grows while it streams
// (its length sampled every animation frame), is rendered as Markdown with
// no HTML from the model, thinking collapsed, usage and cost in the foot.
export async function streamedMarkdown(page, sid) {
    await page.evaluate(() => {
        window.__growth = [];
        const tick = () => {
            const el = [...document.querySelectorAll("#log .msg.agent")].pop();
            const n = el ? el.textContent.length : 0;
            if (n && window.__growth[window.__growth.length - 1] !== n) window.__growth.push(n);
            if (!window.__stopGrowth) requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    });
    await send(page, "markdown please");
    await until("a running turn", async () => (await page.textContent("#s-state")).includes("running") || (await turns(page).count()) > 0);
    await turnEnded(page, 1);
    const growth = await page.evaluate(() => { window.__stopGrowth = true; return window.__growth; });
    // (Markdown may shrink the text for a moment: "**bo" becomes "bold" later)
    const final = growth[growth.length - 1];
    check(growth.length >= 5 && growth[0] < final / 3,
        "the answer appeared progressively (lengths seen while streaming)", growth);
    const md = page.locator("#log .turn").first();
    check(await md.locator(".msg.user .user-text").textContent() === "markdown please", "the user's message is shown");
    check(await md.locator(".msg.agent h1").textContent() === "Formatting", "a Markdown heading");
    check(await md.locator(".msg.agent strong").first().textContent() === "bold", "bold text");
    check(await md.locator(".msg.agent em").first().textContent() === "italic", "italic text");
    check(await md.locator(".msg.agent ul > li").count() === 2 && await md.locator(".msg.agent ol > li").count() === 2, "lists");
    check((await md.locator(".msg.agent pre.code code").textContent()).includes('const x = "<b>not bold</b>";'), "a code block keeps its text literally");
    check(await md.locator(".msg.agent a[href='https://example.com/docs']").count() === 1, "a safe link");
    check(await md.locator(".msg.agent img, .msg.agent script, .msg.agent b").count() === 0, "no HTML from the model became elements");
    check(await md.locator(".msg.agent [href^='javascript']").count() === 0, "a javascript: link is not clickable");
    check((await md.locator(".msg.agent").textContent()).includes('<img src=x onerror="window.__xss=1">'), "the HTML is shown as text");
    check(await page.evaluate(() => window.__xss === undefined), "no injected script ran");
    const thought = md.locator("details.thought");
    check(await thought.count() === 1 && !(await thought.evaluate((d) => d.open)), "thinking is shown collapsed");
    check((await thought.textContent()).includes("headings, lists and code"), "the thinking text is inside");
    const usage = await md.locator(".turn-foot .usage").textContent();
    const cost = await md.locator(".turn-foot .cost").textContent();
    check(usage.includes("1,200 in") && usage.includes("200 cached"), "usage per turn", usage);
    check(/^\$0\.\d+$/.test(cost) && cost !== "$0", "cost per turn", cost);
    await until("the sidebar shows the session's cost", async () =>
        (await page.locator(`.session-item[data-session-id="${sid}"] .s-cost`).textContent()) !== "$0");
    await shot(page, "03-markdown-streamed");
}
