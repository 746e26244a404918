// web_firefox.test.mjs - the web page (gateway/web) in Debian's headless
// Firefox ESR, driven by playwright-core over WebDriver BiDi (its "moz-"
// channels: stock Firefox, no patched build), against a whole stack with the
// scripted model (web_script.json, the same as the Chromium test's):
//
//   wrong key refused with a clear message -> sign in -> new session from
//   the dialog -> a prompt streamed progressively, Markdown rendered, no
//   HTML injected, thinking collapsed, usage and cost -> write_file: the
//   permission prompt approved, the file is in the workspace, the tool card
//   has a diff -> edit_file answered from the keyboard, diff view -> a long
//   command, a second prompt queued visibly, Esc cancels, the queued prompt
//   runs -> 360 px has no horizontal scroll (also with the drawer open) ->
//   dark from the theme button -> no script errors.
//
// The steps both browsers share live in web_common.mjs; web.test.mjs (Chromium)
// covers the rest (two tabs, the gateway restarted, reload, offline, the
// system's dark preference).
// Screenshots: CORRAL_WEB_ARTIFACTS/firefox-*.png.
//
// Run: python3 corral_stack.py BUILD --script web_script.json
//        --worker-args "--prices web_prices.json" -- node web_firefox.test.mjs
// (env CORRAL_HTTP, CORRAL_KEY, CORRAL_WORKSPACE, CORRAL_CONTROL;
// CORRAL_FIREFOX, default /usr/bin/firefox-esr).  Exit 0 = pass.
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { firefox } from "playwright-core";
import {
    ART, W, watchdog, check, passed, t, shot, until, setShotPrefix, watch,
    turns, lastTurn, send, turnEnded, openPerm, fileText, narrowViewport, writeOffered, writeDone, editFromKeyboard,
    signIn, newSession, streamedMarkdown,
} from "./web_common.mjs";

const FIREFOX = process.env.CORRAL_FIREFOX || "/usr/bin/firefox-esr";
const dog = watchdog(90, "Firefox web");
setShotPrefix("firefox-");

// playwright-core 1.65 sends emulation commands newer than Firefox ESR has
// (emulation.setMediaFeaturesOverride, for prefers-color-scheme, on every
// new context) and gives up when one is an "unknown command".  The test
// needs none of them (no colour-scheme or screen emulation here; the
// viewport is browsingContext.setViewport), so an "unknown command" answer
// to an emulation.* command is turned into success, and named below.  The
// hook is on the in-process server's WebSocket transport (the BiDi
// connection's), exported by playwright-core/lib/coreBundle.
const { server: pwServer } = createRequire(import.meta.url)("playwright-core/lib/coreBundle");
const missing = new Set();
{
    const proto = pwServer.WebSocketTransport.prototype;
    const send = proto.send;
    proto.send = function (msg) {
        if (!this.__corralAsked && this.onmessage) {
            this.__corralAsked = new Map();
            const deliver = this.onmessage;
            this.onmessage = (m) => {
                const method = this.__corralAsked.get(m.id);
                if (method !== undefined) this.__corralAsked.delete(m.id);
                if (method && m.type === "error" && m.error === "unknown command") {
                    missing.add(method);
                    m = { type: "success", id: m.id, result: {} };
                }
                deliver(m);
            };
        }
        if (this.__corralAsked && typeof msg.method === "string" && msg.method.startsWith("emulation."))
            this.__corralAsked.set(msg.id, msg.method);
        return send.call(this, msg);
    };
}

// channel "moz-firefox" selects playwright's WebDriver BiDi driver, which
// speaks to a stock Firefox; executablePath points it at Debian's.
const browser = await firefox.launch({ channel: "moz-firefox", executablePath: FIREFOX, headless: true });
console.log(`     (${browser.browserType().name()} ${browser.version()} over WebDriver BiDi, launched at ${t()})`);
const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
if (missing.size) console.log(`     (this Firefox lacks ${[...missing].join(", ")}: answered as done, unused here)`);
const pageErrors = [];
let A;
try {
    A = await ctx.newPage();
    watch(A, "firefox", pageErrors);

    // ---- sign in, a new session, streamed Markdown ---------------------------------------------
    await signIn(ctx, A);
    // the error watch works in this browser: an uncaught exception and a
    // console.error from the page both arrive (then are dropped)
    await A.evaluate(() => { setTimeout(() => { throw new Error("corral-probe thrown"); }); console.error("corral-probe logged"); });
    await until("the probe errors reported", async () => pageErrors.filter((e) => e.includes("corral-probe")).length === 2);
    check(pageErrors.some((e) => e.includes("corral-probe thrown")) && pageErrors.some((e) => e.includes("console: corral-probe logged")),
        "the page's uncaught errors and console errors reach the test", pageErrors);
    pageErrors.splice(0, pageErrors.length, ...pageErrors.filter((e) => !e.includes("corral-probe")));
    const sid = await newSession(A, "firefox test", "ask");
    await streamedMarkdown(A, sid);

    // ---- write_file: the permission prompt approved ----------------------------------------------
    await send(A, "create notes");
    const perm = await openPerm(A);
    await writeOffered(perm);
    await shot(A, "04-permission-prompt");
    await perm.locator("button[data-option-id=allow]").click();
    await until("answered here", async () => (await perm.getAttribute("data-winner")) === "here");
    await turnEnded(A, 2);
    await writeDone(A);

    // ---- edit_file answered from the keyboard: a diff view ----------------------------------
    const editCard = await editFromKeyboard(A, "05-tool-card-diff");

    // ---- a long command: a second prompt queued, Esc cancels, the queue runs --------------------
    await send(A, "sleep");
    const permS = await openPerm(A);
    await permS.locator("button[data-option-id=allow]").click();
    const sleepTurn = turns(A).nth(3);
    const cmdCard = sleepTurn.locator(".card.tool[data-kind=execute]");
    await until("the command running", async () => (await cmdCard.getAttribute("data-status")) === "in_progress");
    check((await cmdCard.locator("pre.command").textContent()).includes("sleep 30"), "the command is shown");
    await send(A, "queued hello");
    await A.locator("#queue .queued.q-queued").waitFor({ timeout: W });
    check((await A.locator("#queue .q-text").textContent()) === "queued hello", "the second prompt is queued visibly");
    check(await A.locator("#cancel").isVisible(), "a Stop button while the turn runs");
    await shot(A, "06-running-with-queue");
    const tCancel = Date.now();
    await A.keyboard.press("Escape");
    await turnEnded(A, 4, "cancelled");
    check(Date.now() - tCancel < 10_000, "Esc cancelled the 30 s command quickly", `${Date.now() - tCancel} ms`);
    check(["cancelled", "failed"].includes(await cmdCard.getAttribute("data-status")), "the command card shows it stopped", await cmdCard.getAttribute("data-status"));
    check((await sleepTurn.locator(".turn-foot .stop").textContent()) === "cancelled", "the turn says cancelled");
    await turnEnded(A, 5);
    check(await turns(A).nth(4).locator(".user-text").textContent() === "queued hello", "the queued prompt ran after the cancel");
    await until("the queue empty", async () => await A.locator("#queue").isHidden());

    // ---- 360 px -------------------------------------------------------------------------------
    await narrowViewport(A, editCard, ["07-mobile-360", "08-mobile-sessions-drawer"]);

    // ---- dark, from the theme button (this Firefox cannot emulate the system's) -------------
    const lum = (bg) => bg.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0) / 3;
    const bgNow = () => A.evaluate(() => getComputedStyle(document.body).backgroundColor);
    check(lum(await bgNow()) > 200, "light by default", await bgNow());
    await A.click("#theme"); // auto -> light
    await A.click("#theme"); // light -> dark
    check(await A.evaluate(() => document.documentElement.dataset.theme) === "dark", "the theme button chooses dark");
    await until("the dark colours applied", async () => lum(await bgNow()) < 60);
    // (headless Firefox drew the log's scrollbar white here until the page named its colours)
    const sc = await A.evaluate(() => getComputedStyle(document.getElementById("log")).scrollbarColor);
    check(sc !== "auto" && lum(sc.split(") ")[1] || "rgb(255,255,255)") < 60, "dark scrollbars", sc);
    await shot(A, "09-dark");
    await A.click("#theme"); // dark -> auto
    await until("back to the system's light", async () => lum(await bgNow()) > 200);

    // Playwright's screenshots in Firefox add a <style>body {}</style> for a
    // moment (to settle animations), which the page's CSP (style-src 'self')
    // rightly blocks and Firefox reports; that report, named by the hash of
    // "body {}", is the harness's, not the page's.
    const own = `sha256-${createHash("sha256").update("body {}").digest("base64")}`;
    const errors = pageErrors.filter((e) => !(e.includes("style-src") && e.includes(own)));
    check(errors.length === 0, "no script errors or CSP violations in the page", errors);
    console.log(`PASS web (Firefox): ${passed()} checks in ${t()}; screenshots in ${ART}/firefox-*.png`);
} catch (e) {
    console.error(`FAIL at ${t()}: ${e.message}`);
    if (pageErrors.length) console.error("page errors:", pageErrors);
    if (A) {
        try {
            await A.screenshot({ path: path.join(ART, "firefox-failure.png") });
            console.error("page state:", JSON.stringify(await A.evaluate(() => ({ conn: window.corral.connection, open: window.corral.open && { ...window.corral.open, seqLog: window.corral.open.seqLog.length }, queue: window.corral.queue }))));
        } catch { /* the page may be gone */ }
    }
    process.exitCode = 1;
} finally {
    clearTimeout(dog);
    await browser.close();
}
