/*  wrk_path.h - confine a path a model made up to the session's workspace
    roots.

    Every tool resolves its path arguments here.  A relative path is taken
    from the session's cwd (which lies inside a root); an absolute path must
    lie inside one of the roots.  Resolution uses openat2(2) with
    RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS from an fd of the root (Linux
    >= 5.6), so "..", absolute symlinks, symlinks pointing out, and
    /proc/self/root-style magic links cannot escape - the kernel checks every
    component at open time, with no race between check and use.

    Fallback where openat2 is missing (ENOSYS): realpath(3) of the target
    (or of its parent, for a file to create) and a prefix check against the
    root's realpath.  This is racy against a concurrent symlink swap inside
    the workspace; docs/security.md records the trade-off.  Tests can force
    the fallback with wrk_path_force_fallback().

    Rules that follow from resolving beneath one root at a time:
      - a path is tried beneath each root that contains it component by
        component (after joining a relative path to cwd, before resolving
        ".."), innermost first; "/ws2/f" is not inside root "/ws", and ".."
        cannot step from one root into a sibling root (name it absolutely);
      - with openat2, a symlink whose target is absolute is refused even if
        it points back inside (RESOLVE_BENEATH); the fallback follows it if
        it lands inside.  Relative links that stay inside work in both;
      - after the open, /proc/self/fd/<fd> is read back and must lie beneath
        the root (a second check in either mode); rel_out is that canonical
        path with symlinks resolved, "." for the root itself.
*/
#ifndef WRK_PATH_H
#define WRK_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define WRK_PATH_MAX_ROOTS 16

typedef struct {
    const char *roots[WRK_PATH_MAX_ROOTS]; //  absolute, canonical directories
    size_t count;
    const char *cwd; //  absolute, inside a root
} wrk_scope_t;

//  Open `path` (relative to scope->cwd, or absolute) for the tool with
//  open(2) flags (O_RDONLY, O_WRONLY|O_CREAT|O_TRUNC, O_DIRECTORY ...) and
//  mode.  On success returns 0 and *fd_out; if rel_out is not NULL it gets
//  the path relative to the root that contains it (for events and diffs).
//  Errors:
//    CM_E_FORBIDDEN  the path leaves every root (message in err), or needs
//                    a link that may not be followed (magic link, link
//                    loop, O_NOFOLLOW on a link)
//    CM_E_NOT_FOUND  no such file or directory
//    CM_E_INVALID    empty path, longer than PATH_MAX (alone or joined to
//                    cwd), no roots, rel_out too small.  A NUL byte cannot
//                    reach here in a C string: callers holding a length
//                    (JSON) must refuse embedded NULs themselves.
//    CM_E_IO         anything else (errno text in err)
int wrk_path_open (const wrk_scope_t *scope, const char *path, int flags, mode_t mode,
                   int *fd_out, char *rel_out, size_t rel_len, char *err, size_t errlen);

//  Create a directory (and its missing parents) inside the scope, one
//  component at a time with mkdirat(2) in a parent opened as above.  An
//  existing directory is success.  Errors as for wrk_path_open; components
//  created before a refusal stay.
int wrk_path_mkdirs (const wrk_scope_t *scope, const char *path, char *err,
                     size_t errlen);

//  For tests: use the realpath fallback even where openat2 exists.
void wrk_path_force_fallback (bool on);

#endif
