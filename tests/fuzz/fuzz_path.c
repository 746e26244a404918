/*  fuzz_path.c - libFuzzer target on path confinement.

    A fixed workspace is made once per process under a fresh temp dir:
        <tmp>/outer/ws       root (cwd: ws/sub)  with files, a subdir, and
                             links pointing inside, outside (absolute and
                             relative), to a directory outside, and to
                             /proc/self/root
        <tmp>/outer/second   second root
        <tmp>/outer/ws2      sibling with the root's name as a prefix
        <tmp>/outer/outside  what must never be reached
    Input: one control byte (bit 0: realpath fallback; bits 1-2: open
    flags, one of them O_CREAT|O_EXCL; bit 3: wrk_path_mkdirs instead, for
    paths of up to 32 slashes),
    then the path, cut at the first NUL and at PATH_MAX + 16 bytes.

    Every success must lie inside a root: rel_out is relative, has no ".."
    component, and /proc/self/fd/<fd> is exactly <root>/<rel_out>.  The
    directories outside the roots must never change.  Writes stay inside
    the temp dir; the tree is rebuilt every few hundred writes so it stays
    small, and removed at exit.
*/
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_error.h"
#include "wrk_path.h"

#define S_REBUILD_EVERY      256
#define S_MKDIRS_MAX_SLASHES 32

static char s_base[256];
static char s_ws[512], s_second[512], s_sub[512];
static char s_watch[3][512]; //  directories outside the roots
static struct timespec s_watch_mtime[3];
static unsigned s_writes;

static void s_path (char *out, const char *rel)
{
    snprintf (out, 600, "%s/%s", s_base, rel);
}

static void s_mkdir (const char *rel)
{
    char p[600];
    s_path (p, rel);
    if (mkdir (p, 0755)) abort ();
}

static void s_file (const char *rel)
{
    char p[600];
    s_path (p, rel);
    int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort ();
    close (fd);
}

static void s_link (const char *target, const char *rel)
{
    char p[600];
    s_path (p, rel);
    if (symlink (target, p)) abort ();
}

static int s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

//  Remove everything under <base>/outer without following links.
static void s_clear (void)
{
    char p[600];
    s_path (p, "outer");
    nftw (p, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_build (void)
{
    s_mkdir ("outer");
    s_mkdir ("outer/ws");
    s_mkdir ("outer/ws/sub");
    s_mkdir ("outer/ws/sub/deep");
    s_mkdir ("outer/second");
    s_mkdir ("outer/ws2");
    s_mkdir ("outer/outside");
    s_file ("outer/ws/a.txt");
    s_file ("outer/ws/sub/b.txt");
    s_file ("outer/second/c.txt");
    s_file ("outer/ws2/f.txt");
    s_file ("outer/outside/secret");
    char target[600];
    s_path (target, "outer/outside/secret");
    s_link ("sub/b.txt", "outer/ws/link_in");
    s_link (target, "outer/ws/link_out_abs");
    s_link ("../outside/secret", "outer/ws/link_out_rel");
    s_link ("../outside", "outer/ws/link_dir_out");
    s_link ("../outside/created", "outer/ws/link_dangling");
    s_link ("/proc/self/root", "outer/ws/proc_link");
    s_link ("../../../../../../../../../../..", "outer/ws/sub/up");
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (stat (s_watch[i], &st)) abort ();
        s_watch_mtime[i] = st.st_mtim;
    }
}

static void s_cleanup (void)
{
    nftw (s_base, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_setup (void)
{
    const char *tmp = getenv ("TMPDIR");
    char tmpl[PATH_MAX], real[PATH_MAX];
    snprintf (tmpl, sizeof tmpl, "%s/corral-fuzz-path-XXXXXX",
              tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp (tmpl) || !realpath (tmpl, real) || strlen (real) >= sizeof s_base)
        abort ();
    strcpy (s_base, real);
    snprintf (s_ws, sizeof s_ws, "%s/outer/ws", s_base);
    snprintf (s_second, sizeof s_second, "%s/outer/second", s_base);
    snprintf (s_sub, sizeof s_sub, "%s/outer/ws/sub", s_base);
    snprintf (s_watch[0], sizeof s_watch[0], "%s", s_base);
    snprintf (s_watch[1], sizeof s_watch[1], "%s/outer", s_base);
    snprintf (s_watch[2], sizeof s_watch[2], "%s/outer/outside", s_base);
    s_build ();
    atexit (s_cleanup);
}

static bool s_has_dotdot (const char *rel)
{
    for (const char *p = rel; *p;) {
        size_t n = strcspn (p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') return true;
        p += n;
        while (*p == '/') p++;
    }
    return false;
}

//  fd must be exactly <root>/<rel> for one of the roots.
static void s_check_fd (int fd, const char *rel)
{
    if (fd < 0 || !*rel || rel[0] == '/' || s_has_dotdot (rel)) abort ();
    char link[64], real[PATH_MAX], want[PATH_MAX + 600];
    snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink (link, real, sizeof real - 1);
    if (n <= 0) abort ();
    real[n] = '\0';
    const char *roots[2] = {s_ws, s_second};
    bool inside = false;
    for (int i = 0; i < 2 && !inside; i++) {
        if (strcmp (rel, ".") == 0)
            snprintf (want, sizeof want, "%s", roots[i]);
        else
            snprintf (want, sizeof want, "%s/%s", roots[i], rel);
        inside = strcmp (real, want) == 0;
    }
    if (!inside) abort ();
}

static void s_check_outside (void)
{
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (stat (s_watch[i], &st)) abort ();
        if (st.st_mtim.tv_sec != s_watch_mtime[i].tv_sec ||
            st.st_mtim.tv_nsec != s_watch_mtime[i].tv_nsec)
            abort ();
    }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        s_setup ();
        ready = true;
    }
    if (size == 0) return 0;
    static const int flags_for[4] = {O_RDONLY, O_PATH, O_RDONLY | O_DIRECTORY,
                                     O_WRONLY | O_CREAT | O_EXCL};
    uint8_t control = data[0];
    char path[PATH_MAX + 17];
    size_t len = size - 1 < sizeof path - 1 ? size - 1 : sizeof path - 1;
    memcpy (path, data + 1, len);
    path[len] = '\0';

    wrk_path_force_fallback (control & 1);
    wrk_scope_t scope = {.roots = {s_ws, s_second}, .count = 2, .cwd = s_sub};
    char rel[PATH_MAX], err[256];
    int fd = -1, rc;
    //  mkdirs only on paths of a few components: deep trees are a unit
    //  test (test_wrk_path), and here they would spend the run in mkdir(2)
    //  on a disk-backed /tmp.
    size_t slashes = 0;
    for (const char *p = path; *p; p++) slashes += *p == '/';
    bool mkdirs = (control & 8) && slashes <= S_MKDIRS_MAX_SLASHES;
    bool writes = mkdirs || ((control >> 1) & 3) == 3;
    if (mkdirs) {
        rc = wrk_path_mkdirs (&scope, path, err, sizeof err);
        if (rc == 0) {
            rc = wrk_path_open (&scope, path, O_PATH | O_DIRECTORY, 0, &fd, rel,
                                sizeof rel, err, sizeof err);
            if (rc != 0) abort (); //  what mkdirs made must open
        }
    } else
        rc = wrk_path_open (&scope, path, flags_for[(control >> 1) & 3], 0600, &fd, rel,
                            sizeof rel, err, sizeof err);
    if (rc == 0) {
        s_check_fd (fd, rel);
        close (fd);
    } else if (fd != -1 || !*err)
        abort ();
    else if (rc != CM_E_FORBIDDEN && rc != CM_E_NOT_FOUND && rc != CM_E_INVALID &&
             rc != CM_E_IO)
        abort ();
    s_check_outside ();

    if (writes && ++s_writes % S_REBUILD_EVERY == 0) {
        s_clear ();
        s_build ();
    }
    return 0;
}
