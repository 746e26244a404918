/*  wrk_procs.c - process snapshots, trees and the orphan marker (see
    wrk_procs.h).
*/
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_error.h"
#include "wrk_procs.h"

//  Parse /proc/<pid>/stat text.  Fields after the command name (which may
//  hold spaces and parentheses: the last ')' ends it): state is field 3.
static int s_parse_stat (const char *text, wrk_proc_t *p, long page)
{
    const char *close = strrchr (text, ')');
    if (!close) return -1;
    const char *s = close + 1;
    //  fields 3.. : index 0 = field 3
    unsigned long long v[22] = {0};
    int idx = 0;
    while (*s && idx < 22) {
        while (*s == ' ') s++;
        if (!*s) break;
        if (idx == 0) { //  state: a letter
            s++;
        } else {
            char *end;
            errno = 0;
            long long n = strtoll (s, &end, 10);
            if (end == s || errno) return -1;
            v[idx] = n < 0 ? 0 : (unsigned long long)n;
            s = end;
        }
        idx++;
        while (*s && *s != ' ') s++;
    }
    if (idx < 22) return -1;
    p->ppid = (pid_t)v[1];                           //  field 4
    p->pgrp = (pid_t)v[2];                           //  field 5
    p->start_ticks = v[19];                          //  field 22
    p->rss_bytes = v[21] * (unsigned long long)page; //  field 24
    return 0;
}

static int s_read_stat (const char *proc_root, pid_t pid, wrk_proc_t *p, long page)
{
    char path[300], text[1024];
    snprintf (path, sizeof path, "%s/%d/stat", proc_root, (int)pid);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read (fd, text, sizeof text - 1);
    close (fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    p->pid = pid;
    return s_parse_stat (text, p, page);
}

static int s_by_pid (const void *a, const void *b)
{
    pid_t x = ((const wrk_proc_t *)a)->pid, y = ((const wrk_proc_t *)b)->pid;
    return (x > y) - (x < y);
}

int wrk_procs_scan (wrk_procs_t *snap, const char *proc_root)
{
    DIR *d = opendir (proc_root);
    if (!d) return CM_E_IO;
    long page = sysconf (_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    snap->count = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir (d)) && snap->count < WRK_PROCS_MAX) {
        if (!isdigit ((unsigned char)de->d_name[0])) continue;
        long pid = strtol (de->d_name, NULL, 10);
        if (pid <= 0) continue;
        if (snap->count == snap->cap) {
            size_t cap = snap->cap ? snap->cap * 2 : 256;
            wrk_proc_t *items = realloc (snap->items, cap * sizeof *items);
            if (!items) {
                rc = CM_E_NOMEM;
                break;
            }
            snap->items = items;
            snap->cap = cap;
        }
        if (s_read_stat (proc_root, (pid_t)pid, &snap->items[snap->count], page) == 0)
            snap->count++;
    }
    closedir (d);
    //  By pid, so a parent is found by binary search (wrk_procs_find).
    qsort (snap->items, snap->count, sizeof *snap->items, s_by_pid);
    return rc;
}

void wrk_procs_fini (wrk_procs_t *snap)
{
    free (snap->items);
    memset (snap, 0, sizeof *snap);
}

const wrk_proc_t *wrk_procs_find (const wrk_procs_t *snap, pid_t pid)
{
    size_t lo = 0, hi = snap->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        pid_t p = snap->items[mid].pid;
        if (p == pid) return &snap->items[mid];
        if (p < pid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t wrk_procs_tree (const wrk_procs_t *snap, pid_t pgid, bool *in)
{
    //  A process is in the tree if it is in the group or its parent is.
    //  Each is settled once: walk up until a settled process, a member, or
    //  no parent, then settle the whole walk.  O(n log n) for a snapshot.
    enum { UNKNOWN, IN, OUT };
    size_t n = snap->count, count = 0;
    unsigned char *state = calloc (n ? n : 1, 1);
    size_t *walk = malloc ((n ? n : 1) * sizeof *walk);
    if (!state || !walk) {
        free (state);
        free (walk);
        for (size_t i = 0; i < n; i++) in[i] = false;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        size_t depth = 0, at = i;
        unsigned char result = OUT;
        while (depth < n) {
            if (state[at] != UNKNOWN) {
                result = state[at];
                break;
            }
            walk[depth++] = at;
            const wrk_proc_t *p = &snap->items[at];
            if (pgid > 0 && p->pgrp == pgid) {
                result = IN;
                break;
            }
            const wrk_proc_t *parent =
                p->ppid > 0 ? wrk_procs_find (snap, p->ppid) : NULL;
            if (!parent) break; //  OUT
            at = (size_t)(parent - snap->items);
        }
        for (size_t k = 0; k < depth; k++) state[walk[k]] = result;
    }
    for (size_t i = 0; i < n; i++) {
        in[i] = state[i] == IN;
        count += in[i];
    }
    free (state);
    free (walk);
    return count;
}

uint64_t wrk_procs_tree_rss (const wrk_procs_t *snap, pid_t pgid, size_t *nprocs)
{
    if (nprocs) *nprocs = 0;
    bool *in = calloc (snap->count ? snap->count : 1, sizeof *in);
    if (!in) return 0;
    size_t n = wrk_procs_tree (snap, pgid, in);
    uint64_t sum = 0;
    for (size_t i = 0; i < snap->count && n; i++)
        if (in[i]) sum += snap->items[i].rss_bytes;
    free (in);
    if (nprocs) *nprocs = n;
    return sum;
}

size_t wrk_procs_tree_kill_strays (const wrk_procs_t *snap, pid_t pgid, int sig)
{
    bool *in = calloc (snap->count ? snap->count : 1, sizeof *in);
    if (!in) return 0;
    size_t killed = 0;
    if (wrk_procs_tree (snap, pgid, in))
        for (size_t i = 0; i < snap->count; i++)
            if (in[i] && snap->items[i].pgrp != pgid &&
                kill (snap->items[i].pid, sig) == 0)
                killed++;
    free (in);
    return killed;
}

uint64_t wrk_procs_start_ticks (const char *proc_root, pid_t pid)
{
    long page = sysconf (_SC_PAGESIZE);
    wrk_proc_t p;
    if (s_read_stat (proc_root, pid, &p, page > 0 ? page : 4096)) return 0;
    return p.start_ticks;
}

uint32_t wrk_mark_scope (const char *text)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

int wrk_mark_value (const char *worker_id, uint32_t scope, char *out, size_t outlen)
{
    pid_t me = getpid ();
    uint64_t start = wrk_procs_start_ticks ("/proc", me);
    if (!start) return CM_E_INVALID;
    //  The id is for people reading logs only; keep it printable.
    char id[128];
    size_t n = 0;
    for (const char *p = worker_id ? worker_id : ""; *p && n + 1 < sizeof id; p++)
        id[n++] = (unsigned char)*p > 0x20 && *p != 0x7f ? *p : '_';
    id[n] = '\0';
    int len = snprintf (out, outlen, WRK_MARK_VERSION "%d.%llu.%08x.%s", (int)me,
                        (unsigned long long)start, (unsigned)scope, id);
    return len < 0 || (size_t)len >= outlen ? CM_E_INVALID : 0;
}

int wrk_mark_parse (const char *value, pid_t *pid, uint64_t *start_ticks, uint32_t *scope)
{
    char *end;
    errno = 0;
    if (strncmp (value, WRK_MARK_VERSION, strlen (WRK_MARK_VERSION)) != 0)
        return CM_E_INVALID;
    value += strlen (WRK_MARK_VERSION);
    long p = strtol (value, &end, 10);
    if (end == value || *end != '.' || errno || p <= 0) return CM_E_INVALID;
    const char *s = end + 1;
    unsigned long long st = strtoull (s, &end, 10);
    if (end == s || *end != '.' || errno || st == 0) return CM_E_INVALID;
    s = end + 1;
    if (!isxdigit ((unsigned char)*s)) return CM_E_INVALID;
    unsigned long sc = strtoul (s, &end, 16);
    if (end - s != 8 || (*end != '.' && *end != '\0') || errno) return CM_E_INVALID;
    *pid = (pid_t)p;
    *start_ticks = st;
    *scope = (uint32_t)sc;
    return 0;
}

int wrk_mark_read (const char *proc_root, pid_t pid, char *out, size_t outlen)
{
    char path[300];
    snprintf (path, sizeof path, "%s/%d/environ", proc_root, (int)pid);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char *buf = malloc (WRK_ENVIRON_MAX + 1);
    if (!buf) {
        close (fd);
        return CM_E_NOMEM;
    }
    size_t len = 0;
    ssize_t n;
    while (len < WRK_ENVIRON_MAX &&
           (n = read (fd, buf + len, WRK_ENVIRON_MAX - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        len += (size_t)n;
    }
    close (fd);
    buf[len] = '\0';
    int found = 0;
    static const char name[] = WRK_MARK_NAME "=";
    for (size_t off = 0; off < len && !found;) {
        const char *entry = buf + off;
        size_t elen = strnlen (entry, len - off);
        if (elen > sizeof name - 1 && memcmp (entry, name, sizeof name - 1) == 0) {
            snprintf (out, outlen, "%.*s", (int)(elen - (sizeof name - 1)),
                      entry + sizeof name - 1);
            found = 1;
        }
        off += elen + 1;
    }
    free (buf);
    return found;
}

void wrk_mem_message (char *out, size_t outlen, uint64_t limit, const char *command,
                      uint64_t peak)
{
    char cmd[160];
    size_t n = 0, max = sizeof cmd - 4;
    const char *p = command ? command : "?";
    for (; *p && n < max; p++) cmd[n++] = (unsigned char)*p < 0x20 ? '?' : *p;
    if (*p) {
        //  Cut on a character boundary (cmd mirrors command byte for byte).
        while (n > 0 && ((unsigned char)command[n] & 0xC0) == 0x80) n--;
        memcpy (cmd + n, "...", 3);
        n += 3;
    }
    cmd[n] = '\0';
    const uint64_t mib = 1024 * 1024;
    snprintf (out, outlen, "memory limit %llu MiB exceeded by `%s` (peak %llu MiB)",
              (unsigned long long)((limit + mib - 1) / mib), cmd,
              (unsigned long long)((peak + mib / 2) / mib));
}
