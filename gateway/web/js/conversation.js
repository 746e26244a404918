// conversation.js - one session's event stream drawn as a conversation.
//
// The app hands every notification of the open session here, in seq order
// and exactly once (app.js checks _meta.seq).  Turns are grouped by
// _meta.turnId: the user's message, then the agent's items in arrival
// order (answer text as Markdown, thinking collapsed, tool cards, the plan,
// permission prompts), then a footer with usage, cost and how it ended.
// Everything is built from DOM nodes; model and tool text is never HTML.
import { h, clear, duration, money, count, localTime } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { diffView } from "./diff.js";

const RENDER_DELAY_MS = 30; // coalesce streamed chunks into one re-render
const STATUS_TEXT = {
    pending: "pending", in_progress: "running", completed: "done", failed: "failed",
};
// Plain symbols, not emoji: they render without a colour-emoji font.
const KIND_ICON = {
    read: "≡", edit: "✎", delete: "✕", move: "⇄", search: "⌕", execute: "▶",
    think: "✱", fetch: "↓", switch_mode: "⇄", other: "⚙",
};
const TERMINAL = new Set(["completed", "failed"]);

export class Conversation {
    // log: the element to draw into.  hooks: {answer(rpcId, optionId, card),
    // turnEnded(turnId, event), usage()}.
    constructor(log, hooks) {
        this.log = log;
        this.hooks = hooks;
        this.following = true;
        this.reset();
        this.ticker = setInterval(() => this.tick(), 1000);
        // Follow the end while the reader is there; stay put once they scroll up.
        log.addEventListener("scroll", () => { this.following = this.nearBottom(); });
        let pending = false;
        new MutationObserver(() => {
            if (!this.following || pending) return;
            pending = true; // one scroll per frame, however many nodes changed
            requestAnimationFrame(() => {
                pending = false;
                if (this.following) this.log.scrollTop = this.log.scrollHeight;
            });
        }).observe(log, { childList: true, subtree: true, characterData: true });
    }

    reset() {
        clear(this.log);
        this.following = true;
        this.turns = new Map();
        this.tools = new Map();  // turnId/toolCallId -> card state
        this.perms = new Map();  // turnId/requestId -> card state
        this.dirty = new Set();  // text blocks waiting to be re-rendered
        this.usageByTurn = new Map();
        clearTimeout(this.renderTimer);
        this.renderTimer = null;
    }

    destroy() {
        clearInterval(this.ticker);
    }

    // ---- scrolling: follow the end unless the reader scrolled up -------------

    nearBottom() {
        const el = this.log;
        return el.scrollHeight - el.scrollTop - el.clientHeight < 120;
    }

    stick(fn) {
        fn(); // the MutationObserver scrolls when following
    }

    // ---- turns ------------------------------------------------------------------

    turn(turnId) {
        const key = turnId || "";
        let t = this.turns.get(key);
        if (t) return t;
        const el = h("section.turn", { dataset: { turn: key } });
        const user = h("div.msg.user", { hidden: true });
        const body = h("div.turn-body");
        const foot = h("div.turn-foot", { hidden: true });
        el.append(user, body, foot);
        t = { id: key, el, user, userText: "", body, foot, last: null, usage: null, ended: null };
        this.turns.set(key, t);
        this.stick(() => this.log.append(el));
        return t;
    }

    system(text, cls = "") {
        this.stick(() => this.log.append(h(`div.note${cls ? "." + cls : ""}`, { text })));
    }

    // ---- the stream -----------------------------------------------------------

    // The server's clock, as far as we can tell: event times (ts) and
    // deadlines are the server's; live timers count from them.
    serverNow() {
        return Date.now() - (this.skew || 0);
    }

    apply(method, p) {
        const meta = p._meta || {};
        // only live events tell the offset (a replayed one is old)
        if (meta.ts && this.live) this.skew = Date.now() - meta.ts;
        if (method === "session/update") this.update(p.update || {}, meta);
        else if (method === "_corral/session/event") this.event(p.event || {}, meta);
        else if (method === "_corral/session/state") this.state(p, meta);
    }

    update(u, meta) {
        const turnId = meta.turnId;
        switch (u.sessionUpdate) {
        case "user_message_chunk": {
            const t = this.turn(turnId);
            const text = u.content?.type === "text" ? u.content.text : `[${u.content?.type || "content"}]`;
            t.userText += (t.userText ? "\n" : "") + text;
            t.user.hidden = false;
            t.user.replaceChildren(h("div.who", { text: "You" }), h("div.user-text", { text: t.userText }));
            if (meta.ts) t.user.title = localTime(meta.ts);
            break;
        }
        case "agent_message_chunk":
            this.appendText(turnId, "answer", u.content);
            break;
        case "agent_thought_chunk":
            this.appendText(turnId, "thought", u.content);
            break;
        case "tool_call":
            this.toolCall(turnId, u, meta);
            break;
        case "tool_call_update":
            this.toolUpdate(turnId, u, meta);
            break;
        case "plan":
            this.plan(turnId, u.entries || []);
            break;
        case "current_mode_update":
            this.system(`Mode: ${u.currentModeId}`);
            break;
        case "session_info_update":
            if (u.title) this.system(`Title: ${u.title}`);
            break;
        case "config_option_update":
            this.system("Settings changed");
            break;
        default:
            break;
        }
    }

    appendText(turnId, kind, content) {
        const text = content?.type === "text" ? content.text : "";
        if (!text) return;
        const t = this.turn(turnId);
        let item = t.last;
        if (!item || item.kind !== kind) {
            if (kind === "answer") {
                const el = h("div.msg.agent.md");
                item = { kind, el, raw: "" };
            } else {
                const body = h("div.thought-text");
                const el = h("details.thought", h("summary", { text: "Thinking" }), body);
                item = { kind, el, body, raw: "" };
            }
            t.last = item;
            this.stick(() => t.body.append(item.el));
        }
        item.raw += text;
        this.dirty.add(item);
        if (!this.renderTimer) this.renderTimer = setTimeout(() => this.flush(), RENDER_DELAY_MS);
    }

    // Re-render the text blocks that changed since the last flush.
    flush() {
        this.renderTimer = null;
        const items = [...this.dirty];
        this.dirty.clear();
        this.stick(() => {
            for (const item of items) {
                if (item.kind === "answer") item.el.replaceChildren(renderMarkdown(item.raw));
                else item.body.textContent = item.raw;
            }
        });
    }

    toolCall(turnId, u, meta) {
        const t = this.turn(turnId);
        const key = `${turnId}/${u.toolCallId}`;
        let c = this.tools.get(key);
        if (!c) {
            c = {
                start: meta.ts || this.serverNow(), end: null, status: "pending",
                el: h("div.card.tool"), head: h("div.tool-head"), input: h("div.tool-input"),
                body: h("div.tool-body"), statusEl: h("span.badge"), durEl: h("span.dur"),
            };
            c.el.append(c.head, c.input, c.body);
            this.tools.set(key, c);
            t.last = { kind: "tool", el: c.el };
            this.stick(() => t.body.append(c.el));
        }
        c.kind = u.kind || c.kind || "other";
        c.title = u.title || c.title || u.toolCallId;
        c.el.dataset.kind = c.kind;
        c.el.dataset.toolCallId = u.toolCallId;
        c.head.replaceChildren(
            h("span.icon", { text: KIND_ICON[c.kind] || KIND_ICON.other, "aria-hidden": "true" }),
            h("span.tool-title", { text: c.title }),
            c.statusEl, c.durEl);
        this.toolInput(c, u.rawInput);
        this.toolStatus(c, u.status || "pending", meta);
        if (u.content) this.toolContent(c, u.content);
    }

    toolInput(c, raw) {
        if (raw === undefined || raw === null) return;
        clear(c.input);
        if (c.kind === "execute" && typeof raw.command === "string") {
            c.input.append(h("pre.command", h("span.prompt", { text: "$ ", "aria-hidden": "true" }), raw.command));
            return;
        }
        if (c.kind === "edit" || c.kind === "think") return; // the diff or the plan says it better
        const text = JSON.stringify(raw, null, 2);
        c.input.append(h("details.raw-input", h("summary", { text: "Input" }), h("pre", { text: text.length > 20000 ? text.slice(0, 20000) + "\n…" : text })));
    }

    toolStatus(c, status, meta) {
        c.status = status;
        c.el.dataset.status = status;
        c.statusEl.className = `badge status-${status}`;
        c.statusEl.textContent = STATUS_TEXT[status] || status;
        if (TERMINAL.has(status) && !c.end) c.end = meta.ts || this.serverNow();
        this.toolDuration(c);
    }

    toolDuration(c) {
        if (c.end) c.durEl.textContent = duration(c.end - c.start);
        else if (c.status === "in_progress") c.durEl.textContent = duration(this.serverNow() - c.start);
        else c.durEl.textContent = "";
    }

    toolUpdate(turnId, u, meta) {
        const key = `${turnId}/${u.toolCallId}`;
        if (!this.tools.has(key)) this.toolCall(turnId, { toolCallId: u.toolCallId, title: u.title, kind: u.kind }, meta);
        const c = this.tools.get(key);
        if (u.title) { c.title = u.title; c.head.querySelector(".tool-title").textContent = u.title; }
        if (u.rawInput !== undefined) this.toolInput(c, u.rawInput);
        if (u.status) this.toolStatus(c, u.status, meta);
        if (u.content) this.stick(() => this.toolContent(c, u.content));
    }

    toolContent(c, content) {
        clear(c.body);
        const hasDiff = content.some((b) => b.type === "diff");
        for (const b of content) {
            if (b.type === "diff") {
                c.body.append(diffView(b.path, b.oldText, b.newText));
            } else if (b.type === "content") {
                let text = b.content?.type === "text" ? b.content.text : `[${b.content?.type || "content"}]`;
                // edit_file's text repeats the change as a unified diff: the diff view shows it
                if (hasDiff) {
                    const cut = text.indexOf("\n--- a/");
                    if (cut !== -1) text = text.slice(0, cut).trimEnd();
                    c.body.append(h("div.tool-summary", { text }));
                } else if (c.kind === "think") {
                    // update_plan's result repeats the plan, which has its own card
                    c.body.append(h("details.raw-input", h("summary", { text: "Result" }), h("pre.output", { text })));
                } else {
                    c.body.append(h("pre.output", { tabindex: "0", "aria-label": "output", text }));
                }
            } else if (b.type === "terminal") {
                c.body.append(h("div.tool-summary", { text: `terminal ${b.terminalId || ""}` }));
            }
        }
    }

    plan(turnId, entries) {
        const t = this.turn(turnId);
        if (!t.plan) {
            t.plan = h("div.card.plan", { role: "group", "aria-label": "plan" });
            t.last = { kind: "plan", el: t.plan };
            this.stick(() => t.body.append(t.plan));
        }
        const done = entries.filter((e) => e.status === "completed").length;
        const list = h("ul.checklist");
        for (const e of entries) {
            const icon = e.status === "completed" ? "☑" : e.status === "in_progress" ? "▶" : "☐";
            list.append(h(`li.plan-${e.status || "pending"}`,
                h("span.check", { text: icon, "aria-label": e.status === "completed" ? "done" : e.status === "in_progress" ? "in progress" : "to do" }),
                h("span.plan-text", { text: e.content || "" }),
                e.priority ? h(`span.prio.prio-${e.priority}`, { text: e.priority }) : null));
        }
        t.plan.replaceChildren(h("div.plan-head", { text: `Plan · ${done} of ${entries.length} done` }), list);
    }

    // ---- Corral events -------------------------------------------------------------

    event(ev, meta) {
        const turnId = meta.turnId;
        switch (ev.kind) {
        case "session_created":
            this.system(`Session created in ${ev.cwd || "?"} · ${[ev.backend, ev.model].filter(Boolean).join(" / ")} · mode ${ev.mode || "?"}`, "created");
            break;
        case "turn_started":
            this.turn(turnId);
            break;
        case "usage_update":
            this.usage(turnId, ev);
            break;
        case "permission_request":
            this.permOpen(turnId, ev, meta);
            break;
        case "permission_resolved":
            this.permResolved(turnId, ev);
            break;
        case "turn_ended":
            this.turnEnded(turnId, ev);
            break;
        case "policy":
            this.system(`Policy: ${ev.message || ev.action || ev.reason || "applied"}`, "policy");
            break;
        case "setting_changed":
            this.system(`${ev.option || "setting"}: ${ev.value ?? ""}`);
            break;
        default:
            break;
        }
    }

    state(p) {
        if (p.state === "closed") this.system(`Session closed${p.reason ? ": " + p.reason : ""}`, "closed");
        else if (p.state === "hibernated") this.system("Session hibernated (it wakes up with the next prompt)");
    }

    usage(turnId, ev) {
        const t = this.turn(turnId);
        t.usage = { ...(ev.usage || {}), model: ev.model };
        this.usageByTurn.set(turnId, t.usage);
        this.footer(t);
        this.hooks.usage?.();
    }

    totalCostMicros() {
        let s = 0;
        for (const u of this.usageByTurn.values()) s += Number(u.costMicros) || 0;
        return s;
    }

    footer(t) {
        const parts = [];
        const u = t.usage;
        if (u) {
            parts.push(h("span.usage", { title: `${count(u.inputTokens)} input tokens (${count(u.cacheTokens)} from cache), ${count(u.outputTokens)} output, ${count(u.modelCalls)} model calls${u.model ? " to " + u.model : ""}` },
                `${count(u.inputTokens)} in · ${count(u.outputTokens)} out`,
                u.cacheTokens ? ` · ${count(u.cacheTokens)} cached` : "",
                ` · ${count(u.modelCalls)} call${u.modelCalls === 1 ? "" : "s"}`),
                h("span.cost", { text: money(u.costMicros) }));
        }
        if (t.ended) {
            const e = t.ended;
            const why = {
                end_turn: "done", cancelled: "cancelled", max_tokens: "stopped: output limit",
                max_turn_requests: "stopped: too many steps", refusal: "the model refused", failed: "failed",
            }[e.stopReason] || e.stopReason;
            parts.push(h(`span.stop.stop-${e.stopReason}`, { text: why }));
        }
        t.foot.hidden = parts.length === 0;
        t.foot.replaceChildren(...parts);
        if (t.ended?.stopReason === "failed" && t.ended.message && !t.failEl) {
            t.failEl = h("div.error", { role: "alert" }, t.ended.message, t.ended.retryable ? " (you can send the prompt again)" : "");
            t.el.insertBefore(t.failEl, t.foot);
        }
    }

    turnEnded(turnId, ev) {
        const t = this.turn(turnId);
        t.ended = ev;
        t.el.dataset.stop = ev.stopReason || "";
        // any tool still running ends with the turn
        for (const [key, c] of this.tools) {
            if (key.startsWith(`${turnId}/`) && !TERMINAL.has(c.status)) {
                c.end = c.end || this.serverNow();
                c.statusEl.textContent = ev.stopReason === "cancelled" ? "cancelled" : "stopped";
                c.el.dataset.status = "cancelled";
                this.toolDuration(c);
            }
        }
        for (const [key, p] of this.perms) {
            if (key.startsWith(`${turnId}/`) && !p.resolved) this.permResolved(turnId, { requestId: p.requestId, outcome: "cancelled" });
        }
        this.footer(t);
        this.hooks.turnEnded?.(turnId, ev);
    }

    // ---- permissions -------------------------------------------------------------------

    permCard(turnId, requestId, ev) {
        const key = `${turnId}/${requestId}`;
        let p = this.perms.get(key);
        if (p) return p;
        const t = this.turn(turnId);
        p = {
            key, turnId, requestId, rpcId: null, resolved: null,
            answeredHere: this.hooks.remembered?.(key) ?? null, // this tab's answer, also from before a reload
            options: ev.options || [], title: ev.title || "a tool call", deadline: ev.deadlineMs || 0,
            el: h("div.card.perm", { role: "group", "aria-label": "permission request" }),
            opts: h("div.perm-options"), status: h("div.perm-status", { "aria-live": "polite" }),
        };
        p.el.append(h("div.perm-head", h("span.icon", { text: "⚠", "aria-hidden": "true" }), h("span", { text: "Permission needed: " }), h("strong", { text: p.title })), p.opts, p.status);
        p.el.dataset.requestId = requestId;
        this.perms.set(key, p);
        t.last = { kind: "perm", el: p.el };
        this.stick(() => t.body.append(p.el));
        this.permDraw(p);
        return p;
    }

    permOpen(turnId, ev, meta) {
        const p = this.permCard(turnId, ev.requestId, ev);
        if (meta.seq) p.seq = meta.seq;
    }

    // The seq of the oldest permission request still unanswered (or null).
    // The gateway asks a connection only about requests its replay passed,
    // so a page re-attaching after a drop starts its replay just before it.
    pendingPermissionSeq() {
        let min = null;
        for (const p of this.perms.values())
            if (!p.resolved && p.seq && (min === null || p.seq < min)) min = p.seq;
        return min;
    }

    // The gateway asks this connection (rpcId) to answer.
    permissionRequest(rpcId, params) {
        const meta = params._meta || {};
        const p = this.permCard(meta.turnId, meta.requestId || String(rpcId),
            { options: params.options, title: params.toolCall?.title, deadlineMs: meta.deadlineMs });
        if (p.resolved) return false;
        p.rpcId = rpcId;
        if (params.options?.length) p.options = params.options;
        p.withdrawn = false;
        this.permDraw(p);
        return true;
    }

    // $/cancel_request: someone else answered (the resolution event came first
    // and says who), or the request ended.
    cancelRequest(rpcId) {
        for (const p of this.perms.values()) {
            if (p.rpcId !== null && p.rpcId === rpcId) {
                p.rpcId = null;
                if (!p.resolved) p.withdrawn = true;
                this.permDraw(p);
            }
        }
    }

    // The connection dropped: the gateway asks again after we re-attach.
    dropRequests() {
        for (const p of this.perms.values()) {
            if (p.rpcId !== null) {
                p.rpcId = null;
                this.permDraw(p);
            }
        }
    }

    permResolved(turnId, ev) {
        const p = this.perms.get(`${turnId}/${ev.requestId}`) || this.permCard(turnId, ev.requestId, {});
        p.resolved = ev;
        p.rpcId = null;
        this.permDraw(p);
    }

    choose(p, option) {
        if (p.rpcId === null || p.resolved) return;
        const rpcId = p.rpcId;
        p.answeredHere = option.optionId;
        this.hooks.remember?.(p.key, option.optionId);
        p.rpcId = null;
        this.permDraw(p);
        this.hooks.answer(rpcId, option.optionId, p);
    }

    optionName(p, optionId) {
        return p.options.find((o) => o.optionId === optionId)?.name || optionId || "?";
    }

    permDraw(p) {
        const r = p.resolved;
        p.el.dataset.state = r ? "resolved" : p.rpcId !== null ? "open" : p.answeredHere ? "answered" : "waiting";
        // The buttons are made once per set of options (the countdown redraws
        // every second: a button rebuilt under the pointer would lose the click).
        const sig = r ? "" : JSON.stringify(p.options);
        if (sig !== p.optsSig) {
            p.optsSig = sig;
            clear(p.opts);
            for (const o of r ? [] : p.options) {
                const kind = o.kind || "";
                p.opts.append(h(`button.opt.${kind.startsWith("reject") ? "danger" : kind === "allow_once" ? "primary" : "secondary"}`, {
                    type: "button", dataset: { optionId: o.optionId, kind },
                    onclick: () => this.choose(p, o), text: o.name || o.optionId,
                }));
            }
        }
        for (const b of p.opts.children) b.disabled = p.rpcId === null;
        p.opts.hidden = !!r;
        let text;
        if (r) {
            const name = this.optionName(p, r.optionId);
            if (r.outcome === "selected") {
                const mine = p.answeredHere !== null && p.answeredHere === r.optionId;
                const reject = /^reject/.test(p.options.find((o) => o.optionId === r.optionId)?.kind || "");
                text = `${reject ? "✖" : "✔"} ${name} — ${mine ? "answered here" : "answered by another client"}`;
                p.status.title = r.conn ? `answered on gateway connection ${r.conn}` : "";
                p.el.dataset.winner = mine ? "here" : "elsewhere";
            } else if (r.outcome === "timed_out") {
                text = "⏱ No answer in time: refused";
                p.el.dataset.winner = "timeout";
            } else {
                text = "Withdrawn: the turn ended before an answer";
                p.el.dataset.winner = "none";
            }
            if (p.answeredHere !== null && r.outcome === "selected" && p.answeredHere !== r.optionId)
                text += ` (your “${this.optionName(p, p.answeredHere)}” came too late)`;
        } else if (p.answeredHere !== null) {
            text = `Sent “${this.optionName(p, p.answeredHere)}”…`;
        } else if (p.withdrawn) {
            text = "Answered elsewhere…";
        } else if (p.rpcId === null) {
            text = "Waiting for the gateway to ask this window…";
        } else {
            const left = p.deadline ? Math.max(0, Math.round((p.deadline - this.serverNow()) / 1000)) : null;
            text = left !== null ? `Choose an answer · refused automatically in ${left} s` : "Choose an answer";
        }
        p.status.textContent = text;
    }

    tick() {
        for (const p of this.perms.values()) if (!p.resolved && p.rpcId !== null && p.deadline) this.permDraw(p);
        for (const c of this.tools.values()) if (!c.end && c.status === "in_progress") this.toolDuration(c);
    }

    // The agent's answer text of every turn, in order (tests compare it with the store).
    answerText() {
        return [...this.log.querySelectorAll(".msg.agent")].map((el) => el.textContent).join("\n");
    }
}
