/*  bench_proc.h - process measurements shared by the benchmarks.  */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <sys/types.h>

//  CPU seconds (user + system) a process used so far, all threads; -1 if
//  unknown.
double bench_proc_cpu_s (pid_t pid);
//  The same for this process.
double bench_self_cpu_s (void);
//  Bytes a process passed to write(2)/pwrite(2) so far (/proc/<pid>/io
//  wchar; socket sends not included); -1 if unknown.
double bench_proc_wchar (pid_t pid);
//  A "VmRSS:"/"VmHWM:" line of /proc/<pid>/status in KiB; -1 if unknown.
long bench_proc_status_kib (pid_t pid, const char *field);
//  Open descriptors of a process; -1 if unknown.
int bench_proc_fds (pid_t pid);
//  Remove a directory tree (best effort).
void bench_rmtree (const char *dir);

#endif
