/*  wrk_path.c - confine model-supplied paths to the workspace roots (see
    wrk_path.h).

    Steps for every path:
      1. make it absolute (a relative path is joined to scope->cwd);
      2. find the roots that contain it component by component ("/ws2" is
         not inside "/ws"), longest first, and cut each root off to get the
         path beneath it;
      3. open it beneath the root: openat2(RESOLVE_BENEATH |
         RESOLVE_NO_MAGICLINKS) from an O_PATH fd of the root, or, where
         openat2 is missing, realpath + a component-wise prefix check;
      4. read back where the fd really is (/proc/self/fd) and refuse it if
         that is not beneath the root - a second, independent check that
         also gives rel_out its canonical form.
    Lexical work in steps 1-2 only chooses a root; nothing is trusted until
    the kernel (or realpath) has resolved it in step 3.
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cm_error.h"
#include "wrk_path.h"

//  How much of a path goes into an error message.
#define S_SHOWN "%.200s"

//  Process-wide, and the only mutable statics here: the test switch, and
//  whether this kernel (or seccomp policy) lets openat2 through, probed
//  once.  Atomics because tool threads may resolve paths concurrently.
static atomic_bool s_forced_fallback;
static atomic_int s_openat2_state; //  0 not probed, 1 usable, -1 missing

void wrk_path_force_fallback (bool on)
{
    atomic_store (&s_forced_fallback, on);
}

static long s_openat2 (int dirfd, const char *path, int flags, mode_t mode,
                       uint64_t resolve)
{
    //  openat2 refuses a mode without O_CREAT / O_TMPFILE.
    bool creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
    struct open_how how = {
        .flags = (uint64_t)(unsigned)(flags | O_CLOEXEC),
        .mode = creates ? (uint64_t)mode : 0,
        .resolve = resolve,
    };
    return syscall (SYS_openat2, dirfd, path, &how, sizeof how);
}

static bool s_use_openat2 (void)
{
    if (atomic_load (&s_forced_fallback)) return false;
    int state = atomic_load (&s_openat2_state);
    if (state == 0) {
        //  ENOSYS on old kernels; EPERM under older container seccomp
        //  profiles.  Any failure on "/" means we cannot rely on it.
        long fd = s_openat2 (AT_FDCWD, "/", O_PATH, 0, 0);
        state = fd >= 0 ? 1 : -1;
        if (fd >= 0) close ((int)fd);
        atomic_store (&s_openat2_state, state);
    }
    return state > 0;
}

//  --------------------------------------------------------------------------
//  Lexical helpers: they only choose a root, they never grant access.

//  Start of the next component at or after p ("." components and extra
//  slashes skipped), its length in *len; *len is 0 at the end.
static const char *s_next (const char *p, size_t *len)
{
    for (;;) {
        while (*p == '/') p++;
        size_t n = strcspn (p, "/");
        if (n == 1 && p[0] == '.') {
            p++;
            continue;
        }
        *len = n;
        return p;
    }
}

//  If `path` lies inside `root` component by component, the rest of path
//  after the root (leading slashes skipped, "" for the root itself), else
//  NULL.
static const char *s_beneath (const char *root, const char *path)
{
    size_t rlen, plen;
    const char *r = s_next (root, &rlen);
    const char *p = path;
    while (rlen > 0) {
        p = s_next (p, &plen);
        if (plen != rlen || memcmp (p, r, rlen) != 0) return NULL;
        p += plen;
        r = s_next (r + rlen, &rlen);
    }
    while (*p == '/') p++;
    return p;
}

//  Absolute form of the path a tool was given.
static int s_absolute (const wrk_scope_t *scope, const char *path, char *abs, char *err,
                       size_t errlen)
{
    if (!scope || scope->count == 0 || scope->count > WRK_PATH_MAX_ROOTS)
        return cm_err_set (err, errlen, CM_E_INVALID, "no workspace roots");
    if (!path || !*path) return cm_err_set (err, errlen, CM_E_INVALID, "empty path");
    size_t len = strnlen (path, PATH_MAX);
    if (len >= PATH_MAX)
        return cm_err_set (err, errlen, CM_E_INVALID, "path longer than %d bytes",
                           PATH_MAX - 1);
    if (path[0] == '/') {
        memcpy (abs, path, len + 1);
        return 0;
    }
    if (!scope->cwd || scope->cwd[0] != '/')
        return cm_err_set (err, errlen, CM_E_INVALID, "the session has no absolute cwd");
    int n = snprintf (abs, PATH_MAX, "%s/%s", scope->cwd, path);
    if (n < 0 || n >= PATH_MAX)
        return cm_err_set (err, errlen, CM_E_INVALID, "path longer than %d bytes",
                           PATH_MAX - 1);
    return 0;
}

//  Roots containing abs, longest first (the most specific root resolves
//  first; an outer root is tried when the inner one refuses).
static size_t s_candidates (const wrk_scope_t *scope, const char *abs, const char **roots)
{
    size_t n = 0;
    for (size_t i = 0; i < scope->count; i++) {
        const char *root = scope->roots[i];
        if (!root || root[0] != '/' || !s_beneath (root, abs)) continue;
        size_t at = n++;
        while (at > 0 && strlen (roots[at - 1]) < strlen (root)) {
            roots[at] = roots[at - 1];
            at--;
        }
        roots[at] = root;
    }
    return n;
}

//  Where fd really is, from /proc; -1 when /proc is not there.
static int s_fd_path (int fd, char *buf, size_t size)
{
    char link[64];
    snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink (link, buf, size - 1);
    if (n <= 0 || (size_t)n >= size - 1) return -1;
    buf[n] = '\0';
    return buf[0] == '/' ? 0 : -1;
}

//  Lexical normal form of a path beneath a root, used for rel_out only
//  when /proc is missing (the kernel has already confined the open).
static void s_normalise (const char *rel, char *out, size_t size)
{
    size_t len = 0, clen;
    out[0] = '\0';
    for (const char *c = s_next (rel, &clen); clen > 0; c = s_next (c + clen, &clen)) {
        if (clen == 2 && c[0] == '.' && c[1] == '.') {
            char *slash = strrchr (out, '/');
            len = slash ? (size_t)(slash - out) : 0;
            out[len] = '\0';
        } else if (len + (len > 0) + clen < size) {
            if (len > 0) out[len++] = '/';
            memcpy (out + len, c, clen);
            len += clen;
            out[len] = '\0';
        }
    }
}

//  --------------------------------------------------------------------------
//  Opening beneath one root

//  The fallback: resolve with realpath and check the prefix.  On success
//  returns the fd and leaves the resolved path in `resolved`; on failure a
//  negative errno (EXDEV for "outside the root").
static int s_fallback_open (const char *real_root, const char *rel, int flags,
                            mode_t mode, char *resolved)
{
    char work[PATH_MAX];
    int n = snprintf (work, sizeof work, "%s/%s", real_root, rel);
    if (n < 0 || n >= (int)sizeof work) return -ENAMETOOLONG;
    if (realpath (work, resolved)) {
        if (!s_beneath (real_root, resolved)) return -EXDEV;
        //  realpath resolved every link; O_NOFOLLOW keeps a link swapped in
        //  since then from being followed at the last component.
        int fd = open (resolved, flags | O_CLOEXEC | O_NOFOLLOW, mode);
        return fd >= 0 ? fd : -errno;
    }
    if (errno != ENOENT) return -errno;

    //  Missing: find the deepest ancestor that exists.  If it is outside
    //  the root the path escapes (as openat2 would say); if it is the
    //  immediate parent and we may create, create there.
    char base[NAME_MAX + 1] = "";
    bool parent = true;
    for (;;) {
        size_t len = strlen (work);
        while (len > 1 && work[len - 1] == '/') work[--len] = '\0';
        char *slash = strrchr (work, '/');
        if (!slash || slash == work) {
            //  Only "/" is left, which exists; nothing beneath any root.
            return -ENOENT;
        }
        *slash = '\0';
        if (parent) {
            if (strlen (slash + 1) > NAME_MAX) return -ENAMETOOLONG;
            strcpy (base, slash + 1);
        }
        if (realpath (work, resolved)) break;
        if (errno != ENOENT) return -errno;
        parent = false;
    }
    if (!s_beneath (real_root, resolved)) return -EXDEV;
    if (!parent || !(flags & O_CREAT) || !strcmp (base, ".") || !strcmp (base, ".."))
        return -ENOENT;
    size_t len = strlen (resolved);
    if (len + 1 + strlen (base) >= PATH_MAX) return -ENAMETOOLONG;
    snprintf (resolved + len, PATH_MAX - len, "%s%s", len > 1 ? "/" : "", base);
    int fd = open (resolved, flags | O_CLOEXEC | O_NOFOLLOW, mode);
    return fd >= 0 ? fd : -errno;
}

static int s_errno_code (int e, const char *shown, char *err, size_t errlen)
{
    switch (e) {
    case EXDEV:
        return cm_err_set (err, errlen, CM_E_FORBIDDEN, S_SHOWN " leaves the workspace",
                           shown);
    case ELOOP:
        //  NO_MAGICLINKS, O_NOFOLLOW on a link, or a link loop: in every
        //  case we refuse to follow.
        return cm_err_set (err, errlen, CM_E_FORBIDDEN,
                           S_SHOWN ": a symbolic link that may not be followed", shown);
    case ENOENT:
        return cm_err_set (err, errlen, CM_E_NOT_FOUND,
                           S_SHOWN ": no such file or directory", shown);
    case ENAMETOOLONG:
        return cm_err_set (err, errlen, CM_E_INVALID, S_SHOWN ": name too long", shown);
    case EINVAL:
        return cm_err_set (err, errlen, CM_E_INVALID, S_SHOWN ": invalid open flags",
                           shown);
    default:
        return cm_err_set (err, errlen, CM_E_IO, S_SHOWN ": %s", shown, strerror (e));
    }
}

//  Open `rel` beneath `root`.  rel_out may be NULL.
static int s_open_beneath (const char *root, const char *rel, int flags, mode_t mode,
                           const char *shown, int *fd_out, char *rel_out, size_t rel_len,
                           char *err, size_t errlen)
{
    if (!*rel) rel = ".";
    char real_root[PATH_MAX], real[PATH_MAX], resolved[PATH_MAX];
    int rc = 0, fd = -1;
    int rootfd = open (root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return cm_err_set (err, errlen, CM_E_IO, "workspace root " S_SHOWN ": %s", root,
                           strerror (errno));
    if (s_fd_path (rootfd, real_root, sizeof real_root) && !realpath (root, real_root)) {
        rc = cm_err_set (err, errlen, CM_E_IO, "workspace root " S_SHOWN ": %s", root,
                         strerror (errno));
        goto cleanup;
    }

    bool kernel = s_use_openat2 ();
    if (kernel) {
        long got;
        int tries = 0;
        //  EAGAIN: a rename raced with the beneath check; the kernel asks
        //  us to try again.
        do
            got = s_openat2 (rootfd, rel, flags, mode,
                             RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
        while (got < 0 && (errno == EAGAIN || errno == EINTR) && ++tries < 8);
        fd = got >= 0 ? (int)got : -errno;
    } else
        fd = s_fallback_open (real_root, rel, flags, mode, resolved);
    if (fd < 0) {
        rc = s_errno_code (-fd, shown, err, errlen);
        goto cleanup;
    }

    //  Check where the fd landed, independently of how it was opened.
    const char *below;
    if (s_fd_path (fd, real, sizeof real) == 0) {
        below = s_beneath (real_root, real);
        if (!below) {
            rc = cm_err_set (err, errlen, CM_E_FORBIDDEN, S_SHOWN " leaves the workspace",
                             shown);
            goto cleanup;
        }
    } else if (kernel) {
        s_normalise (rel, real, sizeof real);
        below = real;
    } else
        below = s_beneath (real_root, resolved); //  checked in s_fallback_open
    if (!below) below = "";
    if (rel_out) {
        if (!*below) below = ".";
        if (strlen (below) >= rel_len) {
            rc = cm_err_set (err, errlen, CM_E_INVALID, "rel_out too small for " S_SHOWN,
                             shown);
            goto cleanup;
        }
        strcpy (rel_out, below);
    }
    *fd_out = fd;
    fd = -1;
cleanup:
    if (fd >= 0) close (fd);
    close (rootfd);
    return rc;
}

//  --------------------------------------------------------------------------
//  Public

int wrk_path_open (const wrk_scope_t *scope, const char *path, int flags, mode_t mode,
                   int *fd_out, char *rel_out, size_t rel_len, char *err, size_t errlen)
{
    *fd_out = -1;
    if (err && errlen) err[0] = '\0';
    char abs[PATH_MAX];
    int rc = s_absolute (scope, path, abs, err, errlen);
    if (rc) return rc;
    const char *roots[WRK_PATH_MAX_ROOTS];
    size_t n = s_candidates (scope, abs, roots);
    if (n == 0)
        return cm_err_set (err, errlen, CM_E_FORBIDDEN,
                           S_SHOWN " is outside the workspace", path);
    for (size_t i = 0; i < n; i++) {
        rc = s_open_beneath (roots[i], s_beneath (roots[i], abs), flags, mode, path,
                             fd_out, rel_out, rel_len, err, errlen);
        if (rc != CM_E_FORBIDDEN) break;
    }
    return rc;
}

//  One step of mkdirs: the directory `name` in `parent`, made if missing.
//  Returns an fd or a negative errno; *confined is true when the kernel
//  kept the step inside parent (a plain directory), false when it followed
//  ".." or a symlink and the caller must check where the fd landed.
static int s_mkdirs_step (int parent, const char *name, bool kernel, bool *confined)
{
    *confined = false;
    if (strcmp (name, "..") != 0) {
        for (int made = 0; made < 2; made++) {
            long fd;
            int tries = 0;
            do
                fd = kernel ? s_openat2 (parent, name, O_PATH | O_DIRECTORY, 0,
                                         RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
                            : openat (parent, name,
                                      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            while (fd < 0 && (errno == EAGAIN || errno == EINTR) && ++tries < 8);
            if (fd >= 0) {
                *confined = true;
                return (int)fd;
            }
            if (errno != ENOENT || made) break;
            //  mkdir never follows a link at its last component: a
            //  dangling link here gives EEXIST and then ENOENT below.
            if (mkdirat (parent, name, 0777) && errno != EEXIST) return -errno;
        }
    }
    int fd = openat (parent, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int wrk_path_mkdirs (const wrk_scope_t *scope, const char *path, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    char abs[PATH_MAX];
    int rc = s_absolute (scope, path, abs, err, errlen);
    if (rc) return rc;
    const char *roots[WRK_PATH_MAX_ROOTS];
    size_t n = s_candidates (scope, abs, roots);
    if (n == 0)
        return cm_err_set (err, errlen, CM_E_FORBIDDEN,
                           S_SHOWN " is outside the workspace", path);
    bool kernel = s_use_openat2 ();

    for (size_t i = 0; i < n; i++) {
        //  Walk from the root one component at a time, each step relative
        //  to the directory fd of the one before, so the work is linear in
        //  the path (resolving every prefix from the root is cubic with
        //  realpath).  A step the kernel did not confine is checked against
        //  the root through /proc; without /proc it is redone from the
        //  root, confined, as wrk_path_open would.
        const char *rel = s_beneath (roots[i], abs);
        char prefix[PATH_MAX] = ".", real_root[PATH_MAX], real[PATH_MAX];
        size_t plen = 1, clen;
        int parent;
        rc = s_open_beneath (roots[i], ".", O_PATH | O_DIRECTORY, 0, path, &parent, NULL,
                             0, err, errlen);
        if (rc) return rc;
        bool have_proc = s_fd_path (parent, real_root, sizeof real_root) == 0;
        for (const char *c = s_next (rel, &clen); clen > 0 && rc == 0;
             c = s_next (c + clen, &clen)) {
            char name[NAME_MAX + 1];
            if (clen > NAME_MAX || plen + 1 + clen >= sizeof prefix) {
                rc = cm_err_set (err, errlen, CM_E_INVALID, S_SHOWN ": name too long",
                                 path);
                break;
            }
            memcpy (name, c, clen);
            name[clen] = '\0';
            prefix[plen++] = '/';
            memcpy (prefix + plen, c, clen);
            plen += clen;
            prefix[plen] = '\0';

            bool confined;
            int fd = s_mkdirs_step (parent, name, kernel, &confined);
            if (fd < 0) {
                rc = s_errno_code (-fd, path, err, errlen);
                break;
            }
            if (!confined && have_proc) {
                if (s_fd_path (fd, real, sizeof real) || !s_beneath (real_root, real)) {
                    close (fd);
                    rc = cm_err_set (err, errlen, CM_E_FORBIDDEN,
                                     S_SHOWN " leaves the workspace", path);
                    break;
                }
            } else if (!confined) {
                close (fd);
                rc = s_open_beneath (roots[i], prefix, O_PATH | O_DIRECTORY, 0, path, &fd,
                                     NULL, 0, err, errlen);
                if (rc) break;
            }
            close (parent);
            parent = fd;
        }
        close (parent);
        if (rc != CM_E_FORBIDDEN) break;
    }
    return rc;
}
