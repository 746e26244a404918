/*  wrk_orphans.c - find and kill what a dead worker left running.

    A command's shell dies with its worker (PR_SET_PDEATHSIG), but what the
    shell started does not: `sleep 300 & sleep 300`, a dev server, a test
    runner's children are re-parented to init (or the nearest subreaper)
    and run on, holding ports, files and memory, when a worker is killed
    with -9 or crashes.

    Recognition, by an environment marker (wrk_procs.h): each worker
    incarnation puts CORRAL_WORKER_MARK=m1.<pid>.<start time>.<scope>.<id>
    in the environment of every command it runs, and children inherit it.
    A sweep - at start, then every cfg->orphan_sweep_ms (default 10 s) -
    reads /proc/<pid>/environ of every process it may read (same user) and
    kills each process whose marker names a worker of the same stack
    (scope: a hash of the session service's worker endpoint) that is no
    longer alive (the pid is gone, or has another start time).  So any
    worker of a stack cleans up after any dead one of that stack on its
    host; other stacks on the host (another deployment, a test run) are
    left to their own workers; a live worker's commands are never touched;
    the pid + start time pair cannot be fooled by pid reuse.

    Why not a pid file in a state directory: the worker has none (it is
    stateless by design), a pid file cannot see the grandchildren, and a
    recorded pid may have been reused by the time it is read.

    Each orphan gets SIGKILL to its process group (when the group's leader
    is itself an orphan of the same dead worker, so no live process group
    of someone else is hit) and to itself; each is logged (pid, command
    name, the dead worker's marker) and counted in orphans_killed, which
    the worker reports in its heartbeat stats.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"
#include "wrk_worker.h"

int wrk_orphans_init (wrk_server_t *self)
{
    int rc = wrk_mark_value (self->cfg->worker_id, wrk_mark_scope (self->cfg->endpoint),
                             self->mark, sizeof self->mark);
    if (rc) return rc;
    //  Appended to the scrubbed environment directly: the CORRAL_ prefix
    //  is denied to `extra` entries (secrets), and this one is no secret.
    size_t n = 0;
    while (self->env && self->env[n]) n++;
    char **env = realloc (self->env, (n + 2) * sizeof *env);
    if (!env) return CM_E_NOMEM;
    self->env = env;
    size_t len = strlen (WRK_MARK_NAME) + 1 + strlen (self->mark) + 1;
    env[n] = malloc (len);
    if (!env[n]) return CM_E_NOMEM;
    snprintf (env[n], len, "%s=%s", WRK_MARK_NAME, self->mark);
    env[n + 1] = NULL;
    return 0;
}

//  Is the marker of a dead worker of our stack?  (Not ours to judge: a
//  marker we cannot read, or another stack's - its own workers clean up.)
static bool orphaned (const char *mark, uint32_t scope)
{
    pid_t pid;
    uint64_t start;
    uint32_t their;
    if (wrk_mark_parse (mark, &pid, &start, &their) || their != scope) return false;
    return wrk_procs_start_ticks ("/proc", pid) != start;
}

static void comm_of (pid_t pid, char *out, size_t outlen)
{
    char path[64];
    snprintf (path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen (path, "re");
    out[0] = '\0';
    if (f) {
        if (fgets (out, (int)outlen, f)) out[strcspn (out, "\n")] = '\0';
        fclose (f);
    }
}

typedef struct {
    pid_t pid, pgrp;
    bool group;
    char comm[32];
    char mark[WRK_MARK_MAX];
} orphan_t;

#define SWEEP_MAX 4096 //  orphans handled in one sweep (the next gets the rest)

void wrk_orphans_sweep (wrk_server_t *self, int64_t now)
{
    if (now < self->sweep_next_ms) return;
    int64_t every = self->cfg->orphan_sweep_ms;
    self->sweep_next_ms = every > 0 ? now + every : INT64_MAX; //  0: at start only
    if (wrk_procs_scan (&self->procs, "/proc")) return;
    pid_t me = getpid ();
    uint32_t scope = wrk_mark_scope (self->cfg->endpoint);
    orphan_t *found = NULL;
    size_t n = 0;
    //  First find them all, then kill: a group's kill turns its other
    //  members into zombies, whose environment can no longer be read.
    for (size_t i = 0; i < self->procs.count && n < SWEEP_MAX; i++) {
        const wrk_proc_t *p = &self->procs.items[i];
        char mark[WRK_MARK_MAX];
        if (p->pid == me || wrk_mark_read ("/proc", p->pid, mark, sizeof mark) != 1)
            continue;
        if (strcmp (mark, self->mark) == 0 || !orphaned (mark, scope)) continue;
        if (!found && !(found = calloc (SWEEP_MAX, sizeof *found))) return;
        orphan_t *o = &found[n++];
        o->pid = p->pid;
        o->pgrp = p->pgrp;
        snprintf (o->mark, sizeof o->mark, "%s", mark);
        comm_of (p->pid, o->comm, sizeof o->comm);
        //  The group too, but only when its leader is an orphan of the same
        //  dead worker, or gone (a group outlives its leader), so no group
        //  of anyone else is hit.
        if (p->pgrp == p->pid)
            o->group = true;
        else if (p->pgrp > 1) {
            char lead[WRK_MARK_MAX];
            o->group = !wrk_procs_find (&self->procs, p->pgrp) ||
                       (wrk_mark_read ("/proc", p->pgrp, lead, sizeof lead) == 1 &&
                        strcmp (lead, mark) == 0);
        }
    }
    for (size_t i = 0; i < n; i++) {
        orphan_t *o = &found[i];
        if (o->group) kill (-o->pgrp, SIGKILL);
        kill (o->pid, SIGKILL);
        self->orphans_killed++;
        cm_warn (
            "killed orphan pid %d (%s, group %d) left by dead worker %s; %llu in all",
            (int)o->pid, o->comm[0] ? o->comm : "?", (int)o->pgrp, o->mark,
            (unsigned long long)self->orphans_killed);
    }
    if (n) cm_info ("orphan sweep: %zu process(es) of dead workers killed", n);
    free (found);
}
