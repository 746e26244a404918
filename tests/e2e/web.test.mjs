// web.test.mjs - the web page (gateway/web) in headless Chromium, driven by
// playwright-core, against a whole stack with the scripted model
// (web_script.json):
//
//   wrong key refused with a clear message -> sign in -> new session from
//   the dialog -> a prompt streamed progressively, Markdown rendered, no
//   HTML injected, thinking collapsed, usage and cost -> a second tab on the
//   same session -> write_file: both tabs asked, the first answers, the
//   second's prompt closes saying another client answered, the file is in
//   the workspace, the tool card has a diff -> edit_file answered from the
//   keyboard, diff view -> a write denied from the second tab -> a long
//   command, a second prompt queued visibly, Esc cancels, the queued prompt
//   runs -> the gateway killed mid-stream and restarted: both tabs resume
//   with no gap and no duplicate (checked against the store's events) ->
//   reload restores the session -> offline and back -> auto mode: a
//   command's output scrolls, a plan checklist -> 360 px has no horizontal scroll ->
//   dark theme -> close and delete a session -> sign out.
//
// Screenshots of the main states go to CORRAL_WEB_ARTIFACTS (web.cmake sets
// it to <build>/tests/e2e/web-artifacts).  The helpers and the first steps
// (sign-in, new session, streamed Markdown) are in web_common.mjs, shared
// with web_firefox.test.mjs.
//
// Run: python3 corral_stack.py BUILD --script web_script.json
//        --worker-args "--prices web_prices.json" -- node web.test.mjs
// (env CORRAL_HTTP, CORRAL_KEY, CORRAL_WORKSPACE, CORRAL_CONTROL).  Exit 0 = pass.
import path from "node:path";
import { chromium } from "playwright-core";
import {
    HTTP, WS, ART, W, watchdog, check, passed, t, shot, until, rest, control, watch,
    turns, lastTurn, send, turnEnded, openPerm, fileText, narrowViewport, writeOffered, writeDone, editFromKeyboard,
    signIn, newSession, streamedMarkdown,
} from "./web_common.mjs";

const CHROMIUM = process.env.CORRAL_CHROMIUM || "/usr/bin/chromium";
const dog = watchdog(150, "web");

// --no-sandbox: root in a container; a small /dev/shm must not crash it
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"] });
const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const pageErrors = [];
let A, B;
try {
    // ---- sign in ----------------------------------------------------------------------------
    A = await ctx.newPage();
    watch(A, "tab A", pageErrors);
    await signIn(ctx, A);

    // ---- the renderers on hostile and pathological input ---------------------------------------
    const hostile = await A.evaluate(async () => {
        const { renderMarkdown } = await import("/js/markdown.js");
        const { diffLines } = await import("/js/diff.js");
        const inputs = [
            "<script>window.__xss=1</script>", "<img src=x onerror=window.__xss=1>",
            "[a](javascript:window.__xss=1)", "[a]( JaVaScRiPt:window.__xss=1 )", "[a](java\tscript:x)",
            "[a](data:text/html,<script>x</script>)", "[a](vbscript:x)", "[a](//evil.example/x)",
            "<javascript:window.__xss=1>", "![i](javascript:x)", "![i](https://evil.example/x.png)",
            "```\n</code></pre><script>window.__xss=1</script>\n```", "`<b>`", "**<i>x</i>**",
            "| a | <b>b</b> |\n|---|---|\n| <script>x</script> | [l](javascript:x) |",
            "- [x] <img src=x onerror=window.__xss=1>\n  - nested <svg onload=window.__xss=1>",
            "> ".repeat(400) + "deep", "[".repeat(5000), "*".repeat(10000), "_".repeat(10000) + "x",
            "- ".repeat(300) + "x", "`".repeat(3000), "a **b *c ~~d [e](f) g~~ h* i** j\n".repeat(300),
            "https://a.example/?q=<script>&x=\"onmouseover=1", "\\<b>escaped\\</b>",
        ];
        const allowed = new Set(["P", "BR", "H1", "H2", "H3", "H4", "H5", "H6", "PRE", "CODE", "BLOCKQUOTE", "UL", "OL", "LI",
            "INPUT", "A", "SPAN", "STRONG", "EM", "DEL", "HR", "DIV", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"]);
        const bad = [];
        let slowest = 0;
        for (const text of inputs) {
            const t0 = performance.now();
            const box = document.createElement("div");
            box.append(renderMarkdown(text));
            slowest = Math.max(slowest, performance.now() - t0);
            for (const el of box.querySelectorAll("*")) {
                if (!allowed.has(el.tagName)) bad.push(`${el.tagName} from ${text.slice(0, 40)}`);
                for (const a of el.attributes) {
                    if (/^on/i.test(a.name) || a.name === "style" || a.name === "src") bad.push(`${a.name} from ${text.slice(0, 40)}`);
                    if (a.name === "href" && !/^(https?:|mailto:|[^:]*$)/i.test(a.value)) bad.push(`href ${a.value}`);
                    if (a.name === "href" && a.value.startsWith("//")) bad.push(`href ${a.value}`);
                }
            }
        }
        const d = diffLines("a\nb\nc\n", "a\nB\nc\nd\n").map((o) => o.op + o.text).join(",");
        return { bad, slowest, xss: window.__xss, d };
    });
    check(hostile.bad.length === 0 && hostile.xss === undefined, "hostile Markdown makes no elements, attributes or links beyond the safe set", hostile.bad);
    check(hostile.slowest < 1500, "pathological Markdown renders quickly", `${Math.round(hostile.slowest)} ms`);
    check(hostile.d === " a,-b,+B, c,+d", "the line diff", hostile.d);

    // ---- a new session from the dialog, streamed Markdown ------------------------------------
    const sid = await newSession(A, "web test", "ask");
    await streamedMarkdown(A, sid);

    // ---- a second tab on the same session -----------------------------------------------------
    B = await ctx.newPage();
    watch(B, "tab B", pageErrors);
    await B.goto(`${HTTP}/#s=${sid}`);
    await B.locator("#conn[data-state=connected]").waitFor({ timeout: W });
    await turnEnded(B, 1);
    check(await B.evaluate(() => window.corral.answerText()) === await A.evaluate(() => window.corral.answerText()),
        "the second tab shows the same conversation");

    // ---- write_file: permission in both tabs, the first answers ---------------------------------
    await send(A, "create notes");
    const permA = await openPerm(A);
    const permB = await openPerm(B);
    await writeOffered(permA);
    await shot(A, "04-permission-prompt");
    await permA.locator("button[data-option-id=allow]").click();
    await until("tab A: answered here", async () => (await permA.getAttribute("data-winner")) === "here");
    await until("tab B: its prompt closed, someone else answered", async () =>
        (await permB.getAttribute("data-state")) === "resolved" && (await permB.getAttribute("data-winner")) === "elsewhere");
    const bStatus = await permB.locator(".perm-status").textContent();
    check(/Allow — answered by another client/.test(bStatus), "tab B says who won and what", bStatus);
    check(await permB.locator("button").count() === 0, "tab B's buttons are gone");
    await shot(B, "05-permission-answered-elsewhere");
    await turnEnded(A, 2);
    await writeDone(A);
    await turnEnded(B, 2);

    // ---- edit_file answered from the keyboard: a diff view ----------------------------------
    const editCard = await editFromKeyboard(A, "06-tool-card-diff");

    // ---- a write denied (from the second tab) -----------------------------------------------
    await send(A, "forbidden");
    await openPerm(A);
    const permB3 = await openPerm(B);
    await permB3.locator("button[data-option-id=reject]").click();
    await turnEnded(A, 4);
    const permA3 = lastTurn(A).locator(".card.perm");
    check(await permA3.getAttribute("data-winner") === "elsewhere" && /Reject/.test(await permA3.textContent()), "tab A shows the rejection from the other tab");
    check(await fileText("forbidden.txt") === null, "a denied write leaves no file");
    check(await lastTurn(A).locator(".card.tool").getAttribute("data-status") === "failed", "the denied tool card failed");
    check((await lastTurn(A).locator(".msg.agent").last().textContent()).includes("was not written"), "the agent carried on");

    // ---- a long command: a second prompt queued, Esc cancels, the queue runs --------------------
    await send(A, "sleep");
    const permS = await openPerm(A);
    await permS.locator("button[data-option-id=allow]").click();
    const sleepTurn = turns(A).nth(4);
    const cmdCard = sleepTurn.locator(".card.tool[data-kind=execute]");
    await until("the command running", async () => (await cmdCard.getAttribute("data-status")) === "in_progress");
    check((await cmdCard.locator("pre.command").textContent()).includes("sleep 30"), "the command is shown");
    await send(A, "queued hello");
    await A.locator("#queue .queued.q-queued").waitFor({ timeout: W });
    check((await A.locator("#queue .q-text").textContent()) === "queued hello", "the second prompt is queued visibly");
    check(await A.locator("#cancel").isVisible(), "a Stop button while the turn runs");
    // the other tab queues one too: when the turn ends both send, and the
    // server takes one and refuses the other (busy), which waits its turn
    await send(B, "queued from B");
    await B.locator("#queue .queued.q-queued").waitFor({ timeout: W });
    await shot(A, "07-running-with-queue");
    const tCancel = Date.now();
    await A.keyboard.press("Escape");
    await turnEnded(A, 5, "cancelled");
    check(Date.now() - tCancel < 10_000, "Esc cancelled the 30 s command quickly", `${Date.now() - tCancel} ms`);
    check(["cancelled", "failed"].includes(await cmdCard.getAttribute("data-status")), "the command card shows it stopped", await cmdCard.getAttribute("data-status"));
    check((await sleepTurn.locator(".turn-foot .stop").textContent()) === "cancelled", "the turn says cancelled");
    await turnEnded(A, 6);
    await turnEnded(A, 7);
    await until("both queues empty", async () => await A.locator("#queue").isHidden() && await B.locator("#queue").isHidden());
    for (const [name, page] of [["A", A], ["B", B]]) {
        const users = await page.locator("#log .turn .user-text").allTextContents();
        check(users.filter((u) => u === "queued hello").length === 1 && users.filter((u) => u === "queued from B").length === 1,
            `tab ${name}: both queued prompts ran, each once`, users.slice(-3));
    }
    const busy = (await A.evaluate(() => window.corral.busyRefusals)) + (await B.evaluate(() => window.corral.busyRefusals));
    check(busy <= 2, "a prompt refused as busy is not resent in a loop", `${busy} refusals`);
    console.log(`     (the server refused ${busy} prompt(s) as busy; the page kept them queued)`);

    // ---- the gateway dies mid-stream and comes back -------------------------------------------
    await send(A, "slow story");
    await until("the story streaming", async () => (await lastTurn(A).locator(".msg.agent").textContent().catch(() => "")).includes("w08"));
    await control("kill");
    await A.locator("#conn[data-state=reconnecting]").waitFor({ timeout: W });
    await B.locator("#conn[data-state=reconnecting]").waitFor({ timeout: W });
    check(await A.locator("#s-banner").isVisible(), "the page says the connection is lost");
    const atDrop = await A.evaluate(() => window.corral.open.lastSeq);
    check(!(await lastTurn(A).locator(".msg.agent").textContent()).includes("w80"), "the socket dropped mid-stream");
    await shot(A, "08-reconnecting");
    // typed while disconnected: queued, sent once the page is back
    await send(A, "typed while offline");
    check((await A.locator("#queue .q-text").textContent()) === "typed while offline", "a prompt typed while disconnected waits in the queue");
    await new Promise((r) => setTimeout(r, 1200)); // the story goes on without us
    await control("start");
    await A.locator("#conn[data-state=connected]").waitFor({ timeout: W });
    await turnEnded(A, 8);
    await turnEnded(B, 8);
    await turnEnded(A, 9);
    check(await turns(A).nth(8).locator(".user-text").textContent() === "typed while offline", "the prompt typed while disconnected ran after the story");
    await turnEnded(B, 9);
    const story = Array.from({ length: 80 }, (_, k) => `w${String(k + 1).padStart(2, "0")}`).join(" ") + ".";
    for (const [name, page] of [["A", A], ["B", B]]) {
        check((await turns(page).nth(7).locator(".msg.agent").textContent()) === story, `tab ${name}: the story is whole, no gap, no duplicate`);
        const o = await page.evaluate(() => window.corral.open);
        check(o.dups === 0 && o.gaps === 0 && o.seqLog.every((s, k) => s === k + 1), `tab ${name}: seqs 1..${o.lastSeq} each once`, { dups: o.dups, gaps: o.gaps });
    }
    // the store's events are the truth
    const evs = (await rest(`/v1/sessions/${sid}/events?after=0`)).text.trim().split("\n").map((l) => JSON.parse(l));
    const storyTurnId = evs.find((e) => e.kind === "user_message" && e.prompt?.[0]?.text === "slow story").turnId;
    const storedStory = evs.filter((e) => e.turnId === storyTurnId && e.kind === "agent_message_chunk").map((e) => e.text).join("");
    check(storedStory === story, "the store has the same story");
    const oA = await A.evaluate(() => window.corral.open);
    check(oA.lastSeq === evs[evs.length - 1].seq, "the page saw every stored event", { page: oA.lastSeq, store: evs[evs.length - 1].seq });
    check(evs.filter((e) => e.seq > atDrop && e.kind === "agent_message_chunk").length > 5, "much of the story came after the drop (resumed, not merely reloaded)");
    for (const text of ["slow story", "typed while offline"])
        check(evs.filter((e) => e.kind === "user_message" && e.prompt?.[0]?.text === text).length === 1, `"${text}" ran exactly once`);
    check((await A.evaluate(() => window.corral.queue)).length === 0, "and it left the queue when its turn ended");
    await shot(A, "09-resumed-after-gateway-restart");

    // ---- a permission prompt open while the gateway restarts ------------------------------------
    await send(A, "second file");
    const permR = await openPerm(A);
    await control("kill");
    await A.locator("#conn[data-state=reconnecting]").waitFor({ timeout: W });
    check(await permR.locator("button[data-option-id=allow]").isDisabled(), "the prompt cannot be answered while disconnected");
    await control("start");
    await until("the prompt asked again after reconnecting", async () => (await permR.getAttribute("data-state")) === "open");
    await permR.locator("button[data-option-id=allow]").click();
    await turnEnded(A, 10);
    check(await fileText("second.txt") === "two\n" && (await permR.getAttribute("data-winner")) === "here", "answered after the restart: the file is written");
    await turnEnded(B, 10);

    // ---- reload restores the session ---------------------------------------------------------
    const before = await A.evaluate(() => window.corral.answerText());
    const nTurns = await turns(A).count();
    await A.reload();
    await A.locator("#conn[data-state=connected]").waitFor({ timeout: W });
    await until("the conversation restored", async () => (await turns(A).count()) === nTurns &&
        (await lastTurn(A).getAttribute("data-stop")) === "end_turn");
    check(await A.evaluate(() => window.corral.open.id) === sid, "the same session is open after reload");
    check(await A.evaluate(() => window.corral.answerText()) === before, "the same conversation after reload");
    check(await A.locator(".card.perm").count() === 5 && await A.locator(".card.perm[data-state=resolved]").count() === 5, "past permission prompts are shown resolved");
    check(await A.locator(".card.perm[data-winner=here]").count() === 4 && await A.locator(".card.perm[data-winner=elsewhere]").count() === 1,
        "after reload the tab still knows which answers were its own");

    // ---- offline and back --------------------------------------------------------------------
    await ctx.setOffline(true);
    await A.locator("#conn[data-state=offline]").waitFor({ timeout: W });
    check(/Offline/.test(await A.textContent("#conn-text")), "the page says it is offline");
    await ctx.setOffline(false);
    await A.locator("#conn[data-state=connected]").waitFor({ timeout: W });
    await B.locator("#conn[data-state=connected]").waitFor({ timeout: W });

    // ---- auto mode: a command's output, then a plan ----------------------------------------
    await A.selectOption("#s-mode", "auto");
    await until("the mode switched on the server", async () => JSON.parse((await rest(`/v1/sessions/${sid}`)).text).mode === "auto");
    await send(A, "list files");
    await turnEnded(A, nTurns + 1);
    const listTurn = turns(A).nth(nTurns);
    check(await listTurn.locator(".card.perm").count() === 0, "auto mode runs the command without asking");
    const out = listTurn.locator(".card.tool[data-kind=execute] pre.output");
    check((await out.textContent()).includes("line 60"), "the command output is shown");
    check(await out.evaluate((el) => el.scrollHeight > el.clientHeight && getComputedStyle(el).overflowY === "auto"), "long output scrolls in its own monospace block");
    await send(A, "plan");
    await turnEnded(A, nTurns + 2);
    const plan = turns(A).nth(nTurns + 1).locator(".card.plan");
    check(await plan.locator("li").count() === 3, "the plan is a checklist");
    check((await plan.locator(".plan-head").textContent()).includes("1 of 3 done"), "the plan says how far it is");
    check(await plan.locator("li").nth(0).getAttribute("class") === "plan-completed" &&
        await plan.locator("li").nth(1).getAttribute("class") === "plan-in_progress", "entries carry their status");
    await plan.scrollIntoViewIfNeeded();
    await shot(A, "10-output-and-plan");
    await send(A, "broken");
    await turnEnded(A, nTurns + 3, "failed");
    const failure = await turns(A).nth(nTurns + 2).locator(".error").textContent();
    check(/model provider refused the request \(HTTP 400\)/.test(failure) && !/fake model refuses/.test(failure),
        "a failed turn shows the server's message (ours, not the provider's)", failure);
    await until("the failed prompt leaves the queue", async () => await A.locator("#queue").isHidden());

    // ---- 360 px -------------------------------------------------------------------------------
    await narrowViewport(A, editCard, ["11-mobile-360", "12-mobile-sessions-drawer"]);

    // ---- dark ---------------------------------------------------------------------------------
    await A.emulateMedia({ colorScheme: "dark" });
    const bg = await A.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const lum = bg.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0) / 3;
    check(lum < 60, "the dark theme follows the system", bg);
    await shot(A, "13-dark");
    await A.click("#theme"); // auto -> light
    check(await A.evaluate(() => document.documentElement.dataset.theme) === "light", "the theme button overrides the system");
    await A.click("#theme"); // light -> dark
    await A.click("#theme"); // dark -> auto
    await A.emulateMedia({ colorScheme: "light" });

    // ---- close and delete -----------------------------------------------------------------------
    await A.click("#new-session");
    await A.fill("#new-cwd", WS);
    await A.fill("#new-title-input", "scratch");
    await A.selectOption("#new-mode", "auto");
    await A.click("#new-create");
    const sid2 = await until("the second session open", async () => {
        const id = await A.evaluate(() => window.corral.open?.id);
        return id && id !== sid ? id : null;
    });
    await until("scratch in the sidebar, newest first", async () =>
        (await A.locator(".session-item").first().getAttribute("data-session-id")) === sid2);
    check(await A.locator("#s-mode").inputValue() === "auto", "the permission mode chosen is the session's");
    await A.click("#s-close");
    await until("the session closed", async () => (await A.textContent("#s-state")) === "closed");
    check(await A.locator("#input").isDisabled() && await A.locator("#s-reopen").isVisible(), "a closed session cannot take prompts until reopened");
    await A.click("#s-reopen");
    await until("the session reopened", async () => !["closed", ""].includes(await A.textContent("#s-state")) && await A.locator("#input").isEnabled());
    await A.click("#s-close");
    await until("closed again", async () => (await A.textContent("#s-state")) === "closed");
    await A.click("#s-delete");
    await until("the session gone from the sidebar", async () =>
        (await A.locator(`.session-item[data-session-id="${sid2}"]`).count()) === 0 && await A.locator("#empty").isVisible());
    check((await rest(`/v1/sessions/${sid2}`)).status === 404, "deleted on the server");
    check(await A.locator(`.session-item[data-session-id="${sid}"]`).count() === 1, "the other session stays");

    // ---- sign out -----------------------------------------------------------------------------------
    await A.click("#signout");
    await A.locator("#signin").waitFor({ state: "visible" });
    await B.locator("#signin").waitFor({ state: "visible", timeout: W });
    check(await A.evaluate(() => localStorage.getItem("corral.key")) === null, "signing out forgets the key, in every tab");

    check(pageErrors.length === 0, "no script errors in the pages", pageErrors);
    console.log(`PASS web: ${passed()} checks in ${t()}; screenshots in ${ART}`);
} catch (e) {
    console.error(`FAIL at ${t()}: ${e.message}`);
    if (pageErrors.length) console.error("page errors:", pageErrors);
    for (const [name, page] of [["A", A], ["B", B]]) {
        if (!page) continue;
        try {
            await page.screenshot({ path: path.join(ART, `failure-tab-${name}.png`) });
            console.error(`tab ${name} state:`, JSON.stringify(await page.evaluate(() => ({ conn: window.corral.connection, open: window.corral.open && { ...window.corral.open, seqLog: window.corral.open.seqLog.length }, queue: window.corral.queue }))));
        } catch { /* the page may be gone */ }
    }
    process.exitCode = 1;
} finally {
    clearTimeout(dog);
    await browser.close();
}
