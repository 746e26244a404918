/*  wrk_procs.h - the worker's view of /proc: process trees, their resident
    memory, and the marker that tells a worker's leftovers from anyone
    else's processes.  Used by the memory limit (wrk_memlimit.c) and the
    orphan sweep (wrk_orphans.c); kept free of the event loop so unit tests
    drive it against the real /proc.

    A snapshot reads /proc/<pid>/stat of every process once (pid, parent,
    process group, start time, resident pages).  A command's *tree* is every
    process of its process group (run_command gives each command its own,
    pgid = the shell's pid) plus every descendant of those, wherever it
    went (a child that called setsid leaves the group but stays a
    descendant until its parent dies).

    The marker: every command's environment carries
        CORRAL_WORKER_MARK=m1.<worker pid>.<worker start time>.<scope>.<worker id>
    (start time in clock ticks since boot, /proc/<pid>/stat field 22; scope
    8 hex digits naming the stack: a hash of the session service's worker
    endpoint), and children inherit it.  A process whose marker names a
    worker of the same stack that is no longer alive (no such pid, or a pid
    with another start time: reused) was left behind by a worker that
    died - an orphan.  A command that
    scrubs its own environment (env -i) escapes recognition; that is the
    documented limit of this method (docs/limits.md).
*/
#ifndef WRK_PROCS_H
#define WRK_PROCS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WRK_PROCS_MAX    65536 //  processes in one snapshot at most
#define WRK_MARK_NAME    "CORRAL_WORKER_MARK"
#define WRK_MARK_VERSION "m1." //  format tag: a marker of another format is never judged
#define WRK_MARK_MAX     256   //  bytes of a marker value
#define WRK_ENVIRON_MAX  (1u << 20) //  bytes of /proc/<pid>/environ read

typedef struct {
    pid_t pid, ppid, pgrp;
    uint64_t start_ticks; //  field 22 of /proc/<pid>/stat
    uint64_t rss_bytes;   //  resident pages times the page size
} wrk_proc_t;

typedef struct {
    wrk_proc_t *items; //  owned; in /proc's order
    size_t count, cap;
} wrk_procs_t;

//  Read every process of `proc_root` ("/proc"; tests may pass a copy).
//  Processes that vanish while being read are skipped.  Returns 0, or
//  CM_E_IO (the directory cannot be read), CM_E_NOMEM.  snap starts
//  zeroed or from an earlier scan (its memory is reused).
int wrk_procs_scan (wrk_procs_t *snap, const char *proc_root);
void wrk_procs_fini (wrk_procs_t *snap);

//  The entry of pid, or NULL.
const wrk_proc_t *wrk_procs_find (const wrk_procs_t *snap, pid_t pid);

//  Mark the tree of process group pgid in `in` (an array of snap->count
//  bools, filled here).  Returns how many processes it holds.
size_t wrk_procs_tree (const wrk_procs_t *snap, pid_t pgid, bool *in);

//  Resident bytes of the tree of pgid; *nprocs (may be NULL) its size.
uint64_t wrk_procs_tree_rss (const wrk_procs_t *snap, pid_t pgid, size_t *nprocs);

//  Send sig to every process of the tree of pgid that is outside the
//  group (the group itself is signalled by its owner, wrk_exec, while the
//  group leader is unreaped).  Returns how many were signalled.
size_t wrk_procs_tree_kill_strays (const wrk_procs_t *snap, pid_t pgid, int sig);

//  The start time of pid now (field 22), or 0 when it is gone.
uint64_t wrk_procs_start_ticks (const char *proc_root, pid_t pid);

//  The scope of a stack: FNV-1a (32 bits) of text (the worker endpoint).
uint32_t wrk_mark_scope (const char *text);

//  The marker value for this process: "m1.<pid>.<start>.<scope>.<id>" into
//  out.  Returns 0, or CM_E_INVALID (does not fit, or no start time).
int wrk_mark_value (const char *worker_id, uint32_t scope, char *out, size_t outlen);

//  Parse a marker value.  Returns 0, or CM_E_INVALID.
int wrk_mark_parse (const char *value, pid_t *pid, uint64_t *start_ticks,
                    uint32_t *scope);

//  Read the marker of pid from <proc_root>/<pid>/environ into out (the
//  value after "CORRAL_WORKER_MARK=").  Returns 1 when found, 0 when the
//  process has none (or cannot be read: another user's), CM_E_NOMEM.
int wrk_mark_read (const char *proc_root, pid_t pid, char *out, size_t outlen);

//  Limit message for a person: "memory limit 64 MiB exceeded by `cmd`
//  (peak 301 MiB)" (the command cut to fit, control characters as '?').
void wrk_mem_message (char *out, size_t outlen, uint64_t limit, const char *command,
                      uint64_t peak);

#endif
