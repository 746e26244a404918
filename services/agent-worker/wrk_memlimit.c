/*  wrk_memlimit.c - the per-turn memory limit on a command's process tree.

    Enforced here, in the worker, and not by corral-monitor: the worker
    owns the processes, knows which turn each command belongs to, and can
    kill a group the moment it measures it over the limit.  A round trip
    worker -> monitor -> session -> worker would let an allocation grow for
    a second or more (one heartbeat, then an action), which at a few GB/s
    is the whole machine.  The monitor still sees the outcome: the policy
    event, the failed turn, and the worker's mem_kills counter.

    Every cfg->turn_memory_poll_ms (default 200 ms) while any command runs,
    one /proc snapshot is taken and each command's tree (its process group
    plus descendants that left it, wrk_procs.h) is summed by resident set.
    Over cfg->turn_memory_limit:
      - the processes that left the group get SIGKILL, then the group
        (wrk_exec_cancel; the shell is reaped by the normal exec path);
      - an EV_POLICY event {policy "memory", action "kill", message} goes
        to the session, so every client watching sees it;
      - when the command is reaped, its tool result says what happened, the
        turn ends TURN_FAILED with CM_E_MEMORY_LIMIT and that message, and
        the conversation (with the result) is saved, so the session stays
        usable: the next prompt continues it.
    RSS and not virtual size: a program that maps much and touches little
    (JIT runtimes, sanitizers) is not penalised; what is measured is what
    the machine actually gives the command.  Between two polls a command
    can allocate beyond the limit; the interval bounds that overshoot.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_log.h"
#include "wrk_worker.h"

static bool any_command (wrk_server_t *self)
{
    for (wrk_turn_t *t = self->turns; t; t = t->next)
        if (t->exec && !t->mem_msg) return true;
    return false;
}

int64_t wrk_memlimit_deadline (wrk_server_t *self)
{
    if (self->cfg->turn_memory_limit <= 0 || !any_command (self)) return INT64_MAX;
    return self->mem_next_ms;
}

static const char *command_of (wrk_turn_t *t)
{
    if (!t->reply || t->tool_index >= wrk_reply_tool_count (t->reply)) return "?";
    const wrk_tool_call_t *call = wrk_reply_tool (t->reply, t->tool_index);
    const char *cmd =
        call ? json_string_value (json_object_get (call->input, "command")) : NULL;
    return cmd ? cmd : "?";
}

static void over_limit (wrk_server_t *self, wrk_turn_t *t, uint64_t rss, size_t nprocs)
{
    uint64_t limit = (uint64_t)self->cfg->turn_memory_limit;
    char msg[400];
    wrk_mem_message (msg, sizeof msg, limit, command_of (t), rss);
    t->mem_msg = strdup (msg);
    if (!t->mem_msg) return; //  try again at the next poll
    self->mem_kills++;
    pid_t pgid = wrk_exec_pid (t->exec);
    size_t strays = wrk_procs_tree_kill_strays (&self->procs, pgid, SIGKILL);
    wrk_exec_cancel (t->exec);
    char id[CM_UUID_STR_LEN], sid[CM_UUID_STR_LEN];
    cm_logc (CM_LOG_WARN,
             &(cm_log_ctx_t){.turn = cm_uuid_fmt (&t->id, id),
                             .session = cm_uuid_fmt (&t->session, sid)},
             "%s: killed %zu process(es) of group %d (%zu outside it)", msg, nprocs,
             (int)pgid, strays);
    proto_ev_policy_t ev = {.policy = "memory", .action = "kill", .message = msg};
    wrk_send_event (self, t, PROTO_EV_POLICY, &ev);
}

void wrk_memlimit_tick (wrk_server_t *self, int64_t now)
{
    int64_t limit = self->cfg->turn_memory_limit;
    if (limit <= 0 || now < self->mem_next_ms) return;
    self->mem_next_ms = now + self->cfg->turn_memory_poll_ms;
    if (!any_command (self)) return;
    if (wrk_procs_scan (&self->procs, "/proc")) {
        cm_warn ("cannot read /proc; the memory limit is not enforced this time");
        return;
    }
    for (wrk_turn_t *t = self->turns; t; t = t->next) {
        if (!t->exec || t->mem_msg || wrk_exec_finished (t->exec)) continue;
        size_t nprocs = 0;
        uint64_t rss = wrk_procs_tree_rss (&self->procs, wrk_exec_pid (t->exec), &nprocs);
        if (rss > t->mem_peak) t->mem_peak = rss;
        if (rss > (uint64_t)limit) over_limit (self, t, rss, nprocs);
    }
}

void wrk_memlimit_result (wrk_turn_t *t, wrk_tool_result_t *r)
{
    //  wrk_exec_result ends the output with the status "[cancelled]" (the
    //  kill went through wrk_exec_cancel): say what really happened.
    char status[512];
    snprintf (status, sizeof status, "[%s; the command's processes were killed]",
              t->mem_msg);
    const char *out = r->content ? r->content : "";
    const char *cut = NULL;
    for (const char *p = strstr (out, "[cancelled]"); p;
         p = strstr (p + 1, "[cancelled]"))
        cut = p;
    size_t keep = cut ? (size_t)(cut - out) : strlen (out);
    char *text = NULL;
    if (asprintf (&text, "%.*s%s%s%s", (int)keep, out,
                  keep && out[keep - 1] != '\n' ? "\n" : "", status,
                  cut ? cut + strlen ("[cancelled]") : "") < 0)
        text = NULL;
    wrk_tool_result_free (r);
    if (text) {
        r->content = text;
        r->is_error = true;
    } else
        wrk_tool_result_error (r, status);
}
