/*  test_wrk_path.c - path confinement: the same table of allowed and
    refused paths holds with openat2 and with the realpath fallback.

    Layout made under a fresh temp dir <base>:
        ws/            root 1 (also the cwd, or ws/sub)
          a.txt  sub/b.txt  sub/deep/  a/
          link_in        -> sub/b.txt               (inside)
          link_out_abs   -> <base>/outside/secret   (absolute, out)
          link_out_rel   -> ../outside/secret       (relative, out)
          link_dir_out   -> ../outside
          link_dangling  -> ../outside/created      (out, does not exist)
          proc_link      -> /proc/self/root
          loop           -> loop
          link_sub       -> sub
        second/c.txt   root 2
        ws2/f.txt      a sibling whose name starts with "ws": not a root
        outside/secret
        x              what "a/../../x" would reach
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_error.h"
#include "wrk_path.h"

static char s_base[256];
static char s_ws[512], s_second[512], s_sub[512];

static void s_write (const char *rel, const char *text)
{
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs (text, f);
    fclose (f);
}

static void s_mkdir (const char *rel)
{
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    assert_int_equal (mkdir (path, 0755), 0);
}

static void s_symlink (const char *target, const char *rel)
{
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    assert_int_equal (symlink (target, path), 0);
}

static bool s_exists (const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    if ((size_t)snprintf (path, sizeof path, "%s/%s", s_base, rel) >= sizeof path)
        return false;
    return lstat (path, &st) == 0;
}

static int s_setup (void **state)
{
    char tmpl[] = "/tmp/wrk-path-XXXXXX";
    assert_non_null (mkdtemp (tmpl));
    //  Roots must be canonical: resolve /tmp in case it is a link.
    char real[PATH_MAX];
    assert_non_null (realpath (tmpl, real));
    assert_true (strlen (real) < sizeof s_base);
    strcpy (s_base, real);
    snprintf (s_ws, sizeof s_ws, "%s/ws", s_base);
    snprintf (s_sub, sizeof s_sub, "%s/ws/sub", s_base);
    snprintf (s_second, sizeof s_second, "%s/second", s_base);
    s_mkdir ("ws");
    s_mkdir ("ws/sub");
    s_mkdir ("ws/sub/deep");
    s_mkdir ("ws/a");
    s_mkdir ("second");
    s_mkdir ("ws2");
    s_mkdir ("outside");
    s_write ("ws/a.txt", "hello");
    s_write ("ws/sub/b.txt", "bee");
    s_write ("second/c.txt", "sea");
    s_write ("ws2/f.txt", "sibling");
    s_write ("outside/secret", "secret");
    s_write ("x", "x");
    char target[PATH_MAX];
    s_symlink ("sub/b.txt", "ws/link_in");
    snprintf (target, sizeof target, "%s/outside/secret", s_base);
    s_symlink (target, "ws/link_out_abs");
    s_symlink ("../outside/secret", "ws/link_out_rel");
    s_symlink ("../outside", "ws/link_dir_out");
    s_symlink ("../outside/created", "ws/link_dangling");
    s_symlink ("/proc/self/root", "ws/proc_link");
    s_symlink ("loop", "ws/loop");
    s_symlink ("sub", "ws/link_sub");
    return 0;
}

static int s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

static int s_teardown (void **state)
{
    nftw (s_base, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

typedef struct {
    const char *path; //  "@" at the start stands for <base>
    const char *cwd;  //  "ws" or "sub"
    int flags;
    int rc;
    const char *rel;  //  expected rel_out on success
    const char *root; //  "ws" or "second": where rel lies
} s_case_t;

static const s_case_t s_cases[] = {
    //  Allowed, relative.
    {"a.txt", "ws", O_RDONLY, 0, "a.txt", "ws"},
    {"sub/b.txt", "ws", O_RDONLY, 0, "sub/b.txt", "ws"},
    {"./sub/../a.txt", "ws", O_RDONLY, 0, "a.txt", "ws"},
    {"sub/deep/../b.txt", "ws", O_RDONLY, 0, "sub/b.txt", "ws"},
    {".", "ws", O_RDONLY | O_DIRECTORY, 0, ".", "ws"},
    {"sub", "ws", O_PATH | O_DIRECTORY, 0, "sub", "ws"},
    {"b.txt", "sub", O_RDONLY, 0, "sub/b.txt", "ws"},
    {"../a.txt", "sub", O_RDONLY, 0, "a.txt", "ws"},
    {"link_in", "ws", O_RDONLY, 0, "sub/b.txt", "ws"},
    //  Allowed, absolute, in either root; the root itself.
    {"@/ws/a.txt", "ws", O_RDONLY, 0, "a.txt", "ws"},
    {"@//ws/./sub/b.txt", "ws", O_RDONLY, 0, "sub/b.txt", "ws"},
    {"@/ws", "ws", O_RDONLY | O_DIRECTORY, 0, ".", "ws"},
    {"@/ws/", "sub", O_RDONLY | O_DIRECTORY, 0, ".", "ws"},
    {"@/second/c.txt", "ws", O_RDONLY, 0, "c.txt", "second"},
    //  Refused: out of the workspace by "..", by being elsewhere, through
    //  links, through /proc magic.
    {"../outside/secret", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"../../outside/secret", "sub", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"..", "ws", O_RDONLY | O_DIRECTORY, CM_E_FORBIDDEN, NULL, NULL},
    {"a/../../x", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"a/../../nonexistent", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"/etc/passwd", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"/", "ws", O_RDONLY | O_DIRECTORY, CM_E_FORBIDDEN, NULL, NULL},
    {"@/ws2/f.txt", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"@/ws/../ws2/f.txt", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"@/ws/../outside/secret", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"link_out_abs", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"link_out_rel", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"link_dir_out/secret", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"proc_link/etc/passwd", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"loop", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"/proc/self/root@/ws/a.txt", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    {"/proc/self/cwd/a.txt", "ws", O_RDONLY, CM_E_FORBIDDEN, NULL, NULL},
    //  Writes that would land outside are refused before anything exists.
    {"../outside/new", "ws", O_WRONLY | O_CREAT, CM_E_FORBIDDEN, NULL, NULL},
    {"link_dangling", "ws", O_WRONLY | O_CREAT, CM_E_FORBIDDEN, NULL, NULL},
    {"link_dir_out/new", "ws", O_WRONLY | O_CREAT, CM_E_FORBIDDEN, NULL, NULL},
    //  Missing.
    {"missing.txt", "ws", O_RDONLY, CM_E_NOT_FOUND, NULL, NULL},
    {"sub/missing/x", "ws", O_RDONLY, CM_E_NOT_FOUND, NULL, NULL},
    {"missing/new.txt", "ws", O_WRONLY | O_CREAT, CM_E_NOT_FOUND, NULL, NULL},
    //  Invalid.
    {"", "ws", O_RDONLY, CM_E_INVALID, NULL, NULL},
    //  Something else: a file used as a directory.
    {"a.txt/x", "ws", O_RDONLY, CM_E_IO, NULL, NULL},
};

static wrk_scope_t s_scope (const char *cwd)
{
    wrk_scope_t scope = {.roots = {s_ws, s_second},
                         .count = 2,
                         .cwd = strcmp (cwd, "sub") == 0 ? s_sub : s_ws};
    return scope;
}

static void s_expand (const char *path, char *out)
{
    const char *at = strchr (path, '@');
    if (!at) {
        strcpy (out, path);
        return;
    }
    snprintf (out, PATH_MAX, "%.*s%s%s", (int)(at - path), path, s_base, at + 1);
}

static void s_run_table (void)
{
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const s_case_t *c = &s_cases[i];
        char path[PATH_MAX], rel[PATH_MAX], err[256];
        s_expand (c->path, path);
        wrk_scope_t scope = s_scope (c->cwd);
        int fd = 42;
        memset (rel, 0, sizeof rel);
        int rc = wrk_path_open (&scope, path, c->flags, 0644, &fd, rel, sizeof rel, err,
                                sizeof err);
        if (rc != c->rc)
            fail_msg ("case %zu '%s': rc %d, want %d (%s)", i, path, rc, c->rc, err);
        if (rc) {
            assert_int_equal (fd, -1);
            assert_true (strlen (err) > 0);
            continue;
        }
        assert_true (fd >= 0);
        if (strcmp (rel, c->rel) != 0)
            fail_msg ("case %zu '%s': rel '%s', want '%s'", i, path, rel, c->rel);
        //  The fd is the file we expected, not just any file of that name.
        char want[PATH_MAX];
        struct stat got_st, want_st;
        snprintf (want, sizeof want, "%s/%s/%s", s_base, c->root, c->rel);
        assert_int_equal (fstat (fd, &got_st), 0);
        assert_int_equal (stat (want, &want_st), 0);
        assert_true (got_st.st_ino == want_st.st_ino && got_st.st_dev == want_st.st_dev);
        close (fd);
    }
    //  Nothing was created outside the roots.
    assert_false (s_exists ("outside/new"));
    assert_false (s_exists ("outside/created"));
}

static void s_run_long (void)
{
    wrk_scope_t scope = s_scope ("ws");
    char path[PATH_MAX + 8], err[256];
    int fd;
    memset (path, 'a', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    assert_int_equal (
        wrk_path_open (&scope, path, O_RDONLY, 0, &fd, NULL, 0, err, sizeof err),
        CM_E_INVALID);
    //  Short enough alone, too long once joined to the cwd.
    path[PATH_MAX - 2] = '\0';
    assert_int_equal (
        wrk_path_open (&scope, path, O_RDONLY, 0, &fd, NULL, 0, err, sizeof err),
        CM_E_INVALID);
    assert_int_equal (
        wrk_path_open (&scope, NULL, O_RDONLY, 0, &fd, NULL, 0, err, sizeof err),
        CM_E_INVALID);
    //  A scope without roots confines to nothing.
    wrk_scope_t empty = {.count = 0, .cwd = s_ws};
    assert_int_equal (
        wrk_path_open (&empty, "a.txt", O_RDONLY, 0, &fd, NULL, 0, err, sizeof err),
        CM_E_INVALID);
    //  rel_out too small for the answer.
    char small[4];
    assert_int_equal (wrk_path_open (&scope, "sub/b.txt", O_RDONLY, 0, &fd, small,
                                     sizeof small, err, sizeof err),
                      CM_E_INVALID);
    //  No rel_out, no err: still works.
    assert_int_equal (wrk_path_open (&scope, "a.txt", O_RDONLY, 0, &fd, NULL, 0, NULL, 0),
                      0);
    close (fd);
}

static void s_run_create (const char *name)
{
    wrk_scope_t scope = s_scope ("sub");
    char rel[PATH_MAX], err[256], path[PATH_MAX];
    int fd;
    snprintf (path, sizeof path, "../%s", name);
    assert_int_equal (wrk_path_open (&scope, path, O_WRONLY | O_CREAT | O_EXCL, 0600, &fd,
                                     rel, sizeof rel, err, sizeof err),
                      0);
    assert_string_equal (rel, name);
    assert_int_equal (write (fd, "new", 3), 3);
    close (fd);
    snprintf (path, sizeof path, "ws/%s", name);
    assert_true (s_exists (path));
    //  Again with O_EXCL: it exists now.
    snprintf (path, sizeof path, "../%s", name);
    assert_int_equal (wrk_path_open (&scope, path, O_WRONLY | O_CREAT | O_EXCL, 0600, &fd,
                                     rel, sizeof rel, err, sizeof err),
                      CM_E_IO);
    //  Truncating an existing file through an inside link works.
    assert_int_equal (wrk_path_open (&scope, "../link_in", O_WRONLY | O_TRUNC, 0, &fd,
                                     rel, sizeof rel, err, sizeof err),
                      0);
    assert_string_equal (rel, "sub/b.txt");
    assert_int_equal (write (fd, "bee", 3), 3);
    close (fd);
}

static void s_run_mkdirs (const char *top)
{
    wrk_scope_t scope = s_scope ("ws");
    char path[PATH_MAX], err[256];
    snprintf (path, sizeof path, "%s/m2/./m3/", top);
    assert_int_equal (wrk_path_mkdirs (&scope, path, err, sizeof err), 0);
    snprintf (path, sizeof path, "ws/%s/m2/m3", top);
    assert_true (s_exists (path));
    //  Existing directories are fine, ".." inside is fine.
    snprintf (path, sizeof path, "%s/m2/../m2/m3/m4", top);
    assert_int_equal (wrk_path_mkdirs (&scope, path, err, sizeof err), 0);
    snprintf (path, sizeof path, "ws/%s/m2/m3/m4", top);
    assert_true (s_exists (path));
    //  Absolute, in the second root.
    snprintf (path, sizeof path, "%s/second/%s/n", s_base, top);
    assert_int_equal (wrk_path_mkdirs (&scope, path, err, sizeof err), 0);
    snprintf (path, sizeof path, "second/%s/n", top);
    assert_true (s_exists (path));
    //  Out of the workspace, directly or through a link: refused, and
    //  nothing created.
    assert_int_equal (wrk_path_mkdirs (&scope, "../outside/evil", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "link_dir_out/evil", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "new/../../outside/evil", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "/tmp/evil-wrk-path", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "sub/../..", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "proc_link/tmp/evil", err, sizeof err),
                      CM_E_FORBIDDEN);
    assert_int_equal (wrk_path_mkdirs (&scope, "loop/evil", err, sizeof err),
                      CM_E_FORBIDDEN);
    //  A dangling link is never created through (mkdir does not follow).
    assert_true (wrk_path_mkdirs (&scope, "link_dangling/evil", err, sizeof err) != 0);
    assert_false (s_exists ("outside/created"));
    assert_false (s_exists ("outside/evil"));
    //  Through a link that stays inside, and ".." after it: fine.
    snprintf (path, sizeof path, "link_sub/%s/../%s_2", top, top);
    assert_int_equal (wrk_path_mkdirs (&scope, path, err, sizeof err), 0);
    snprintf (path, sizeof path, "ws/sub/%s_2", top);
    assert_true (s_exists (path));
    //  Deep paths are linear, not re-resolved from the root per level.
    char deep[PATH_MAX];
    size_t len = (size_t)snprintf (deep, sizeof deep, "%s", top);
    while (len + 4 < 2000)
        len += (size_t)snprintf (deep + len, sizeof deep - len, "/d/.");
    assert_int_equal (wrk_path_mkdirs (&scope, deep, err, sizeof err), 0);
    int fd;
    char rel[PATH_MAX];
    assert_int_equal (wrk_path_open (&scope, deep, O_PATH | O_DIRECTORY, 0, &fd, rel,
                                     sizeof rel, err, sizeof err),
                      0);
    close (fd);
    //  Through a file: an error, not a crash.
    assert_int_equal (wrk_path_mkdirs (&scope, "a.txt/d", err, sizeof err), CM_E_IO);
    assert_int_equal (wrk_path_mkdirs (&scope, "", err, sizeof err), CM_E_INVALID);
    //  The root itself exists already.
    assert_int_equal (wrk_path_mkdirs (&scope, ".", err, sizeof err), 0);
}

static void test_openat2 (void **state)
{
    wrk_path_force_fallback (false);
    s_run_table ();
    s_run_long ();
    s_run_create ("created_k.txt");
    s_run_mkdirs ("mk_k");
}

static void test_fallback (void **state)
{
    wrk_path_force_fallback (true);
    s_run_table ();
    s_run_long ();
    s_run_create ("created_f.txt");
    s_run_mkdirs ("mk_f");
    wrk_path_force_fallback (false);
}

static void test_nested_roots (void **state)
{
    //  An inner root is tried first; an outer root still allows what
    //  leaves the inner one but stays inside the outer.
    wrk_scope_t scope = {.roots = {s_sub, s_ws}, .count = 2, .cwd = s_sub};
    char rel[PATH_MAX], err[256];
    int fd;
    for (int fallback = 0; fallback < 2; fallback++) {
        wrk_path_force_fallback (fallback);
        assert_int_equal (wrk_path_open (&scope, "b.txt", O_RDONLY, 0, &fd, rel,
                                         sizeof rel, err, sizeof err),
                          0);
        assert_string_equal (rel, "b.txt");
        close (fd);
        assert_int_equal (wrk_path_open (&scope, "../a.txt", O_RDONLY, 0, &fd, rel,
                                         sizeof rel, err, sizeof err),
                          0);
        assert_string_equal (rel, "a.txt");
        close (fd);
        assert_int_equal (wrk_path_open (&scope, "../../outside/secret", O_RDONLY, 0, &fd,
                                         rel, sizeof rel, err, sizeof err),
                          CM_E_FORBIDDEN);
    }
    wrk_path_force_fallback (false);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_openat2),
        cmocka_unit_test (test_fallback),
        cmocka_unit_test (test_nested_roots),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
