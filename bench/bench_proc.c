/*  bench_proc.c - what the benchmarks read about processes from /proc,
    and scratch-directory removal.  See bench_proc.h.  */
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_proc.h"

//  CPU seconds (user + system) a process used so far, all threads.
double bench_proc_cpu_s (pid_t pid)
{
    char path[64], line[1024];
    snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) return -1;
    size_t n = fread (line, 1, sizeof line - 1, f);
    fclose (f);
    line[n] = '\0';
    char *p = strrchr (line, ')');
    unsigned long long utime, stime;
    if (!p || sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                      &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf (_SC_CLK_TCK);
}

double bench_self_cpu_s (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

//  Bytes a process has passed to write(2)/pwrite(2) and friends so far
//  (/proc/<pid>/io wchar; socket sends are not in it).  -1 if unknown.
double bench_proc_wchar (pid_t pid)
{
    char path[64], line[128];
    snprintf (path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) return -1;
    double v = -1;
    unsigned long long n;
    while (fgets (line, sizeof line, f))
        if (sscanf (line, "wchar: %llu", &n) == 1) v = (double)n;
    fclose (f);
    return v;
}

//  A "VmRSS:"/"VmHWM:" line of /proc/<pid>/status, in KiB; -1 if unknown.
long bench_proc_status_kib (pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf (path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) return -1;
    long v = -1;
    size_t len = strlen (field);
    while (fgets (line, sizeof line, f))
        if (strncmp (line, field, len) == 0) v = atol (line + len);
    fclose (f);
    return v;
}

//  Open descriptors of a process; -1 if unknown.
int bench_proc_fds (pid_t pid)
{
    char path[64];
    snprintf (path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir (path);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir (d));)
        if (e->d_name[0] != '.') n++;
    closedir (d);
    return n;
}

static int rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove (path);
    return 0;
}

void bench_rmtree (const char *dir)
{
    nftw (dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
