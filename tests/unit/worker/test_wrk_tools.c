/*  test_wrk_tools.c - the built-in tools and the unified diff.

    Each test gets a fresh tree under a temp dir <base>:
        ws/          the only root, and the cwd
          README.md  src/main.c  src/util/u.c  src/util/u.h  .git/config
        outside/secret                   must never be read or changed
    Diffs are checked byte for byte, and (when `patch` is installed)
    applied with `patch -p1` to random edits.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
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
#include "wrk_diff.h"
#include "wrk_path.h"
#include "wrk_tools.h"

static char s_base[256];
static char s_ws[300];
static wrk_scope_t s_scope;

//  --------------------------------------------------------------------------
//  Helpers

static void s_path (char *out, const char *rel)
{
    snprintf (out, PATH_MAX, "%s/%s", s_base, rel);
}

static void s_write_n (const char *rel, const char *data, size_t len)
{
    char path[PATH_MAX];
    s_path (path, rel);
    FILE *f = fopen (path, "wb");
    assert_non_null (f);
    assert_int_equal (fwrite (data, 1, len, f), len);
    fclose (f);
}

static void s_write (const char *rel, const char *text)
{
    s_write_n (rel, text, strlen (text));
}

static void s_mkdir (const char *rel)
{
    char path[PATH_MAX];
    s_path (path, rel);
    assert_int_equal (mkdir (path, 0755), 0);
}

//  Whole content of <base>/rel (caller frees), or NULL if missing.
static char *s_read (const char *rel)
{
    char path[PATH_MAX];
    s_path (path, rel);
    FILE *f = fopen (path, "rb");
    if (!f) return NULL;
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t)n + 1);
    assert_non_null (buf);
    assert_int_equal (fread (buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose (f);
    return buf;
}

static bool s_exists (const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    s_path (path, rel);
    return lstat (path, &st) == 0;
}

static size_t s_count_dir (const char *rel)
{
    char path[PATH_MAX];
    s_path (path, rel);
    DIR *d = opendir (path);
    assert_non_null (d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir (d)))
        if (de->d_name[0] != '.' || (de->d_name[1] && strcmp (de->d_name, ".."))) n++;
    closedir (d);
    return n;
}

//  The outside directory holds exactly its one secret, unchanged.
static void s_outside_untouched (void)
{
    char *secret = s_read ("outside/secret");
    assert_non_null (secret);
    assert_string_equal (secret, "top secret\n");
    free (secret);
    assert_int_equal (s_count_dir ("outside"), 1);
}

static int s_setup (void **state)
{
    char tmpl[] = "/tmp/wrk-tools-XXXXXX";
    assert_non_null (mkdtemp (tmpl));
    char real[PATH_MAX];
    assert_non_null (realpath (tmpl, real));
    assert_true (strlen (real) < sizeof s_base);
    strcpy (s_base, real);
    snprintf (s_ws, sizeof s_ws, "%s/ws", s_base);
    s_mkdir ("ws");
    s_mkdir ("ws/src");
    s_mkdir ("ws/src/util");
    s_mkdir ("ws/.git");
    s_mkdir ("outside");
    s_write ("ws/README.md", "# Demo\n\nHello world.\n");
    s_write ("ws/src/main.c",
             "#include \"util/u.h\"\nint main (void)\n{\n    return u ();\n}\n");
    s_write ("ws/src/util/u.c", "int u (void)\n{\n    return 0; /* TODO */\n}\n");
    s_write ("ws/src/util/u.h", "int u (void);\n");
    s_write ("ws/.git/config", "[core] TODO\n");
    s_write ("outside/secret", "top secret\n");
    memset (&s_scope, 0, sizeof s_scope);
    s_scope.roots[0] = s_ws;
    s_scope.count = 1;
    s_scope.cwd = s_ws;
    wrk_path_force_fallback (false);
    return 0;
}

static int s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove (path);
}

static int s_teardown (void **state)
{
    nftw (s_base, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    wrk_path_force_fallback (false);
    return 0;
}

//  Run a tool with JSON-text arguments; the call itself must succeed.
static void s_run (const char *tool, const char *args_json, wrk_tool_result_t *r)
{
    json_error_t jerr;
    json_t *args = json_loads (args_json, JSON_ALLOW_NUL, &jerr);
    if (!args) fail_msg ("bad test JSON %s: %s", args_json, jerr.text);
    assert_int_equal (wrk_tool_run (&s_scope, tool, args, r), 0);
    assert_non_null (r->content);
    json_decref (args);
}

//  Run and expect an error result whose content contains `needle`.
static void s_run_error (const char *tool, const char *args_json, const char *needle)
{
    wrk_tool_result_t r;
    s_run (tool, args_json, &r);
    if (!r.is_error)
        fail_msg ("%s %s: expected an error, got: %s", tool, args_json, r.content);
    if (!strstr (r.content, needle))
        fail_msg ("%s %s: error \"%s\" lacks \"%s\"", tool, args_json, r.content, needle);
    wrk_tool_result_free (&r);
}

//  Run and expect success with exactly `expect` as content.
static void s_run_ok (const char *tool, const char *args_json, const char *expect)
{
    wrk_tool_result_t r;
    s_run (tool, args_json, &r);
    if (r.is_error) fail_msg ("%s %s: unexpected error: %s", tool, args_json, r.content);
    assert_string_equal (r.content, expect);
    wrk_tool_result_free (&r);
}

//  --------------------------------------------------------------------------
//  Table and schema

static void test_table_and_schema (void **state)
{
    size_t n;
    const wrk_tool_def_t *t = wrk_tools_table (&n);
    assert_int_equal (n, 8);
    json_t *schema = wrk_tools_schema ();
    assert_non_null (schema);
    assert_int_equal (json_array_size (schema), n);
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get (schema, i);
        assert_string_equal (json_string_value (json_object_get (row, "name")),
                             t[i].name);
        json_t *in = json_object_get (row, "input_schema");
        assert_true (json_is_object (in));
        assert_string_equal (json_string_value (json_object_get (in, "type")), "object");
        assert_true (strlen (t[i].description) > 20);
        assert_ptr_equal (wrk_tool_find (t[i].name), &t[i]);
    }
    json_decref (schema);
    assert_null (wrk_tool_find ("rm_rf"));
    assert_null (wrk_tool_find (NULL));

    const wrk_tool_def_t *run = wrk_tool_find ("run_command");
    assert_int_equal (run->kind, WRK_KIND_EXECUTE);
    assert_int_equal (run->flags, WRK_TOOL_EXECUTES | WRK_TOOL_ASYNC);
    assert_int_equal (wrk_tool_find ("edit_file")->flags, WRK_TOOL_WRITES);
    assert_int_equal (wrk_tool_find ("write_file")->flags, WRK_TOOL_WRITES);
    assert_int_equal (wrk_tool_find ("grep")->flags, 0);
    assert_string_equal (wrk_tool_kind_name (wrk_tool_find ("update_plan")->kind),
                         "think");
    assert_string_equal (wrk_tool_kind_name (wrk_tool_find ("glob")->kind), "search");
    assert_string_equal (wrk_tool_kind_name (wrk_tool_find ("read_file")->kind), "read");
    assert_string_equal (wrk_tool_kind_name (wrk_tool_find ("edit_file")->kind), "edit");
}

static void test_dispatch_errors (void **state)
{
    wrk_tool_result_t r;
    json_t *args = json_object ();
    //  A made-up tool is the model's mistake: a result naming the real ones.
    assert_int_equal (wrk_tool_run (&s_scope, "delete_everything", args, &r), 0);
    assert_true (r.is_error);
    assert_non_null (strstr (r.content, "unknown tool \"delete_everything\""));
    assert_non_null (strstr (r.content, "read_file"));
    wrk_tool_result_free (&r);
    //  run_command is asynchronous: a caller bug.
    assert_int_equal (wrk_tool_run (&s_scope, "run_command", args, &r), CM_E_INVALID);
    assert_int_equal (wrk_tool_run (NULL, "read_file", args, &r), CM_E_INVALID);
    json_decref (args);
    //  Arguments that are not an object.
    json_t *arr = json_array ();
    assert_int_equal (wrk_tool_run (&s_scope, "read_file", arr, &r), 0);
    assert_true (r.is_error);
    assert_string_equal (r.content,
                         "read_file: arguments must be a JSON object, not an array");
    wrk_tool_result_free (&r);
    assert_int_equal (wrk_tool_run (&s_scope, "read_file", NULL, &r), 0);
    assert_true (r.is_error);
    wrk_tool_result_free (&r);
    json_decref (arr);
    wrk_tool_result_free (NULL);
}

//  --------------------------------------------------------------------------
//  read_file

static void test_read_file (void **state)
{
    wrk_tool_result_t r;
    s_run ("read_file", "{\"path\":\"README.md\"}", &r);
    assert_false (r.is_error);
    assert_string_equal (r.content, "# Demo\n\nHello world.\n");
    assert_string_equal (r.path, "README.md");
    wrk_tool_result_free (&r);

    s_run_ok ("read_file",
              "{\"path\":\"src/util/../main.c\",\"offset_line\":2,\"limit_lines\":2}",
              "int main (void)\n{\n[showed lines 2-3; more follow, continue with "
              "offset_line=4]");
    s_run_ok ("read_file", "{\"path\":\"src/main.c\",\"offset_line\":5}", "}\n");
    //  A whole number sent as a real is fine (models do that).
    s_run_ok ("read_file", "{\"path\":\"src/main.c\",\"offset_line\":5.0}", "}\n");
    s_write ("ws/nonl.txt", "a\nb");
    s_run_ok ("read_file", "{\"path\":\"nonl.txt\"}", "a\nb");
    s_run_ok ("read_file", "{\"path\":\"nonl.txt\",\"limit_lines\":1}",
              "a\n[showed lines 1-1; more follow, continue with offset_line=2]");
    s_run_error ("read_file", "{\"path\":\"nonl.txt\",\"offset_line\":3}",
                 "offset_line 3 is past the end of nonl.txt (2 lines)");
    s_write ("ws/empty", "");
    s_run_ok ("read_file", "{\"path\":\"empty\"}", "[empty file]");
    //  Absolute inside the root.
    char args[PATH_MAX + 64];
    snprintf (args, sizeof args, "{\"path\":\"%s/src/util/u.h\"}", s_ws);
    s_run_ok ("read_file", args, "int u (void);\n");
}

static void test_read_file_errors (void **state)
{
    s_run_error ("read_file", "{}",
                 "read_file: missing required argument \"path\" (a string)");
    s_run_error ("read_file", "{\"file\":\"README.md\"}",
                 "missing required argument \"path\"");
    s_run_error ("read_file", "{\"path\":42}",
                 "argument \"path\" must be a string, not an integer");
    s_run_error ("read_file", "{\"path\":\"\"}", "argument \"path\" is empty");
    s_run_error ("read_file", "{\"path\":\"a\\u0000b\"}", "contains a NUL byte");
    s_run_error ("read_file", "{\"path\":\"README.md\",\"offset_line\":0}",
                 "argument \"offset_line\" must be from 1");
    s_run_error ("read_file", "{\"path\":\"README.md\",\"offset_line\":\"2\"}",
                 "argument \"offset_line\" must be an integer, not a string");
    s_run_error ("read_file", "{\"path\":\"README.md\",\"limit_lines\":1.5}",
                 "must be an integer, not a number");
    s_run_error ("read_file", "{\"path\":\"missing.txt\"}",
                 "missing.txt: no such file or directory");
    s_run_error ("read_file", "{\"path\":\"../outside/secret\"}", "leaves the workspace");
    char args[PATH_MAX + 64];
    snprintf (args, sizeof args, "{\"path\":\"%s/outside/secret\"}", s_base);
    s_run_error ("read_file", args, "is outside the workspace");
    s_run_error ("read_file", "{\"path\":\"/etc/passwd\"}", "is outside the workspace");
    char target[PATH_MAX], link[PATH_MAX];
    s_path (target, "outside/secret");
    s_path (link, "ws/sneaky");
    assert_int_equal (symlink (target, link), 0);
    s_run_error ("read_file", "{\"path\":\"sneaky\"}", "sneaky");
    s_run_error ("read_file", "{\"path\":\"src\"}", "src is a directory; use list_dir");
    s_write_n ("ws/blob.bin", "ELF\0\1\2\3", 7);
    s_run_error ("read_file", "{\"path\":\"blob.bin\"}",
                 "blob.bin is a binary file (7 bytes); read_file shows text files only");
    char fifo[PATH_MAX];
    s_path (fifo, "ws/fifo");
    assert_int_equal (mkfifo (fifo, 0600), 0);
    s_run_error ("read_file", "{\"path\":\"fifo\"}", "fifo is not a regular file");
    s_outside_untouched ();
}

static void test_read_file_bounds (void **state)
{
    //  300 KiB of 100-byte lines: cut at a line boundary at 256 KiB.
    size_t lines = 3072, len = lines * 100;
    char *big = malloc (len);
    assert_non_null (big);
    for (size_t i = 0; i < lines; i++) {
        memset (big + i * 100, 'a' + (int)(i % 26), 99);
        big[i * 100 + 99] = '\n';
    }
    s_write_n ("ws/big.txt", big, len);
    wrk_tool_result_t r;
    s_run ("read_file", "{\"path\":\"big.txt\"}", &r);
    assert_false (r.is_error);
    size_t whole = WRK_TOOL_READ_MAX / 100; //  2621 lines fit
    assert_memory_equal (r.content, big, whole * 100);
    char note[160];
    snprintf (note, sizeof note,
              "[truncated at 256 KiB: showed lines 1-%zu; continue with offset_line=%zu]",
              whole, whole + 1);
    assert_string_equal (r.content + whole * 100, note);
    wrk_tool_result_free (&r);
    //  Continuing from there gives the rest, untruncated.
    char args[128];
    snprintf (args, sizeof args, "{\"path\":\"big.txt\",\"offset_line\":%zu}", whole + 1);
    s_run ("read_file", args, &r);
    assert_int_equal (strlen (r.content), len - whole * 100);
    assert_memory_equal (r.content, big + whole * 100, len - whole * 100);
    wrk_tool_result_free (&r);

    //  Exactly the limit is not truncated.
    s_write_n ("ws/exact.txt", big, WRK_TOOL_READ_MAX);
    s_run ("read_file", "{\"path\":\"exact.txt\"}", &r);
    assert_int_equal (strlen (r.content), WRK_TOOL_READ_MAX);
    wrk_tool_result_free (&r);

    //  One line longer than the limit: its start.
    memset (big, 'x', len);
    s_write_n ("ws/oneline.txt", big, len);
    s_run ("read_file", "{\"path\":\"oneline.txt\"}", &r);
    assert_false (r.is_error);
    assert_memory_equal (r.content, big, WRK_TOOL_READ_MAX);
    assert_non_null (strstr (r.content + WRK_TOOL_READ_MAX,
                             "line 1 is longer than 256 KiB; only its start is shown"));
    wrk_tool_result_free (&r);
    free (big);

    //  Invalid UTF-8 reaches the model as U+FFFD, not as broken JSON.
    s_write ("ws/latin1.txt", "caf\xe9\n");
    s_run_ok ("read_file", "{\"path\":\"latin1.txt\"}", "caf\xEF\xBF\xBD\n");
    //  A NUL after the probe window is not "binary"; it becomes U+FFFD.
    char *late = calloc (1, WRK_TOOL_BINARY_PROBE + 3);
    memset (late, 'y', WRK_TOOL_BINARY_PROBE + 2);
    late[WRK_TOOL_BINARY_PROBE] = '\0';
    s_write_n ("ws/late.txt", late, WRK_TOOL_BINARY_PROBE + 2);
    s_run ("read_file", "{\"path\":\"late.txt\"}", &r);
    assert_false (r.is_error);
    assert_non_null (strstr (r.content, "y\xEF\xBF\xBDy"));
    wrk_tool_result_free (&r);
    free (late);
}

//  --------------------------------------------------------------------------
//  write_file

static void test_write_file_new_and_replace (void **state)
{
    wrk_tool_result_t r;
    s_run ("write_file", "{\"path\":\"new/deep/dir/f.txt\",\"content\":\"one\\ntwo\\n\"}",
           &r);
    assert_false (r.is_error);
    assert_string_equal (r.content, "Created new/deep/dir/f.txt (2 lines, 8 bytes)");
    assert_string_equal (r.path, "new/deep/dir/f.txt");
    assert_null (r.old_text);
    assert_string_equal (r.new_text, "one\ntwo\n");
    assert_string_equal (r.diff, "--- /dev/null\n+++ b/new/deep/dir/f.txt\n"
                                 "@@ -0,0 +1,2 @@\n+one\n+two\n");
    wrk_tool_result_free (&r);
    char *disk = s_read ("ws/new/deep/dir/f.txt");
    assert_string_equal (disk, "one\ntwo\n");
    free (disk);

    s_run ("write_file", "{\"path\":\"new/deep/dir/f.txt\",\"content\":\"one\\n2\\n\"}",
           &r);
    assert_false (r.is_error);
    assert_string_equal (r.old_text, "one\ntwo\n");
    assert_string_equal (r.new_text, "one\n2\n");
    const char *diff = "--- a/new/deep/dir/f.txt\n+++ b/new/deep/dir/f.txt\n"
                       "@@ -1,2 +1,2 @@\n one\n-two\n+2\n";
    assert_string_equal (r.diff, diff);
    char expect[512];
    snprintf (expect, sizeof expect, "Wrote new/deep/dir/f.txt (2 lines, 6 bytes)\n\n%s",
              diff);
    assert_string_equal (r.content, expect);
    wrk_tool_result_free (&r);

    s_run ("write_file", "{\"path\":\"new/deep/dir/f.txt\",\"content\":\"one\\n2\\n\"}",
           &r);
    assert_string_equal (r.content,
                         "No change: new/deep/dir/f.txt already had this content");
    assert_string_equal (r.diff, "");
    wrk_tool_result_free (&r);

    //  Replacing a binary file: no old text, so no diff.
    s_write_n ("ws/blob.bin",
               "\x7f"
               "ELF\0\0",
               6);
    s_run ("write_file", "{\"path\":\"blob.bin\",\"content\":\"text now\\n\"}", &r);
    assert_false (r.is_error);
    assert_null (r.old_text);
    assert_null (r.diff);
    assert_string_equal (r.content,
                         "Wrote blob.bin (1 line, 9 bytes)\n(no diff: the old content "
                         "was binary or too large)");
    wrk_tool_result_free (&r);

    //  An empty file, and a file in the cwd.
    s_run ("write_file", "{\"path\":\"empty.txt\",\"content\":\"\"}", &r);
    assert_string_equal (r.content, "Created empty.txt (0 lines, 0 bytes)");
    assert_string_equal (r.diff, "");
    wrk_tool_result_free (&r);
    assert_true (s_exists ("ws/empty.txt"));

    //  The limit, and one past it.
    size_t len = WRK_TOOL_FILE_MAX;
    char *json = malloc (len + 64);
    int n = snprintf (json, len + 64, "{\"path\":\"max.txt\",\"content\":\"");
    memset (json + n, 'z', len);
    strcpy (json + n + len, "\"}");
    s_run ("write_file", json, &r);
    assert_false (r.is_error);
    wrk_tool_result_free (&r);
    memset (json + n, 'z', len + 1);
    strcpy (json + n + len + 1, "\"}");
    s_run_error ("write_file", json,
                 "argument \"content\" is 1048577 bytes; the limit is 1048576");
    free (json);
}

static void test_write_file_errors (void **state)
{
    s_run_error ("write_file", "{\"path\":\"a.txt\"}",
                 "missing required argument \"content\"");
    s_run_error ("write_file", "{\"path\":\"a.txt\",\"content\":[\"x\"]}",
                 "argument \"content\" must be a string, not an array");
    s_run_error ("write_file", "{\"path\":\"a.txt\",\"content\":\"x\\u0000y\"}",
                 "argument \"content\" contains a NUL byte");
    s_run_error ("write_file", "{\"path\":\"dir/\",\"content\":\"x\"}",
                 "names a directory");
    s_run_error ("write_file", "{\"path\":\"src\",\"content\":\"x\"}", "src");
    //  Escapes: nothing created or changed outside, not even directories.
    s_run_error ("write_file", "{\"path\":\"../outside/secret\",\"content\":\"pwned\"}",
                 "leaves the workspace");
    s_run_error ("write_file", "{\"path\":\"../outside/made/x\",\"content\":\"pwned\"}",
                 "leaves the workspace");
    char args[PATH_MAX + 64];
    snprintf (args, sizeof args, "{\"path\":\"%s/outside/new\",\"content\":\"pwned\"}",
              s_base);
    s_run_error ("write_file", args, "is outside the workspace");
    char target[PATH_MAX], link[PATH_MAX];
    s_path (target, "outside/secret");
    s_path (link, "ws/link_out");
    assert_int_equal (symlink (target, link), 0);
    s_run_error ("write_file", "{\"path\":\"link_out\",\"content\":\"pwned\"}",
                 "link_out");
    s_path (target, "outside");
    s_path (link, "ws/dir_out");
    assert_int_equal (symlink (target, link), 0);
    s_run_error ("write_file", "{\"path\":\"dir_out/planted\",\"content\":\"pwned\"}",
                 "dir_out");
    s_outside_untouched ();
    //  The same with the realpath fallback.
    wrk_path_force_fallback (true);
    s_run_error ("write_file", "{\"path\":\"../outside/secret\",\"content\":\"pwned\"}",
                 "leaves the workspace");
    s_run_error ("write_file", "{\"path\":\"dir_out/planted\",\"content\":\"pwned\"}",
                 "dir_out");
    s_outside_untouched ();
}

//  --------------------------------------------------------------------------
//  edit_file

static void test_edit_file (void **state)
{
    wrk_tool_result_t r;
    s_run ("edit_file",
           "{\"path\":\"src/util/u.c\",\"old_text\":\"return 0; /* TODO */\","
           "\"new_text\":\"return 42;\"}",
           &r);
    assert_false (r.is_error);
    const char *diff = "--- a/src/util/u.c\n+++ b/src/util/u.c\n"
                       "@@ -1,4 +1,4 @@\n int u (void)\n {\n-    return 0; /* TODO */\n"
                       "+    return 42;\n }\n";
    assert_string_equal (r.diff, diff);
    char expect[512];
    snprintf (expect, sizeof expect, "Edited src/util/u.c: replaced 1 occurrence\n\n%s",
              diff);
    assert_string_equal (r.content, expect);
    assert_string_equal (r.old_text, "int u (void)\n{\n    return 0; /* TODO */\n}\n");
    assert_string_equal (r.new_text, "int u (void)\n{\n    return 42;\n}\n");
    assert_string_equal (r.path, "src/util/u.c");
    wrk_tool_result_free (&r);
    char *disk = s_read ("ws/src/util/u.c");
    assert_string_equal (disk, "int u (void)\n{\n    return 42;\n}\n");
    free (disk);

    //  Not unique, then replace_all.
    s_write ("ws/rep.txt", "x = 1;\ny = 1;\nz = 2;\n");
    s_run_error ("edit_file",
                 "{\"path\":\"rep.txt\",\"old_text\":\"= 1;\",\"new_text\":\"= 3;\"}",
                 "old_text occurs 2 times in rep.txt; include more surrounding lines");
    disk = s_read ("ws/rep.txt");
    assert_string_equal (disk, "x = 1;\ny = 1;\nz = 2;\n");
    free (disk);
    s_run ("edit_file",
           "{\"path\":\"rep.txt\",\"old_text\":\"= 1;\",\"new_text\":\"= "
           "3;\",\"replace_all\":true}",
           &r);
    assert_string_equal (r.diff, "--- a/rep.txt\n+++ b/rep.txt\n@@ -1,3 +1,3 @@\n"
                                 "-x = 1;\n-y = 1;\n+x = 3;\n+y = 3;\n z = 2;\n");
    assert_non_null (strstr (r.content, "replaced 2 occurrences"));
    wrk_tool_result_free (&r);
    disk = s_read ("ws/rep.txt");
    assert_string_equal (disk, "x = 3;\ny = 3;\nz = 2;\n");
    free (disk);

    //  Deleting text (new_text empty) is an edit too.
    s_run ("edit_file",
           "{\"path\":\"rep.txt\",\"old_text\":\"y = 3;\\n\",\"new_text\":\"\"}", &r);
    assert_false (r.is_error);
    wrk_tool_result_free (&r);
    disk = s_read ("ws/rep.txt");
    assert_string_equal (disk, "x = 3;\nz = 2;\n");
    free (disk);
}

static void test_edit_file_errors (void **state)
{
    s_run_error ("edit_file",
                 "{\"path\":\"README.md\",\"old_text\":\"Goodbye\",\"new_text\":\"x\"}",
                 "old_text not found in README.md; read the file again");
    s_run_error ("edit_file",
                 "{\"path\":\"README.md\",\"old_text\":\"\",\"new_text\":\"x\"}",
                 "old_text is empty");
    s_run_error ("edit_file",
                 "{\"path\":\"README.md\",\"old_text\":\"Demo\",\"new_text\":\"Demo\"}",
                 "old_text and new_text are the same");
    s_run_error ("edit_file", "{\"path\":\"README.md\",\"old_text\":\"Demo\"}",
                 "missing required argument \"new_text\"");
    s_run_error ("edit_file",
                 "{\"path\":\"README.md\",\"old_text\":\"Demo\",\"new_text\":\"D\","
                 "\"replace_all\":\"yes\"}",
                 "argument \"replace_all\" must be true or false, not a string");
    s_run_error (
        "edit_file", "{\"path\":\"nope.c\",\"old_text\":\"a\",\"new_text\":\"b\"}",
        "nope.c: no such file or directory; edit_file changes existing files (use "
        "write_file");
    s_run_error (
        "edit_file",
        "{\"path\":\"../outside/secret\",\"old_text\":\"top\",\"new_text\":\"x\"}",
        "leaves the workspace");
    s_write_n ("ws/blob.bin", "a\0b", 3);
    s_run_error ("edit_file",
                 "{\"path\":\"blob.bin\",\"old_text\":\"a\",\"new_text\":\"b\"}",
                 "blob.bin is a binary file");
    s_run_error ("edit_file", "{\"path\":\"src\",\"old_text\":\"a\",\"new_text\":\"b\"}",
                 "src");
    char *disk = s_read ("ws/README.md");
    assert_string_equal (disk, "# Demo\n\nHello world.\n");
    free (disk);
    s_outside_untouched ();
}

//  --------------------------------------------------------------------------
//  list_dir, glob, grep

static void test_list_dir (void **state)
{
    char link[PATH_MAX];
    s_path (link, "ws/link");
    assert_int_equal (symlink ("README.md", link), 0);
    s_run_ok ("list_dir", "{}", ".git/\nREADME.md\nlink@\nsrc/");
    s_run_ok ("list_dir", "{\"path\":\"src\"}", "main.c\nutil/");
    s_mkdir ("ws/void");
    s_run_ok ("list_dir", "{\"path\":\"void\"}", "[empty directory]");
    s_run_error ("list_dir", "{\"path\":\"README.md\"}", "README.md");
    s_run_error ("list_dir", "{\"path\":\"..\"}", "leaves the workspace");
    s_run_error ("list_dir", "{\"path\":\"nowhere\"}", "no such file or directory");
    s_run_error ("list_dir", "{\"path\":7}", "must be a string");

    //  Bounded: WRK_TOOL_LIST_MAX shown, the rest counted.
    s_mkdir ("ws/many");
    for (int i = 0; i < WRK_TOOL_LIST_MAX + 5; i++) {
        char rel[64];
        snprintf (rel, sizeof rel, "ws/many/f%04d", i);
        s_write (rel, "");
    }
    wrk_tool_result_t r;
    s_run ("list_dir", "{\"path\":\"many\"}", &r);
    assert_true (strncmp (r.content, "f0000\nf0001\n", 12) == 0);
    assert_non_null (
        strstr (r.content, "f0999\n[5 more entries not shown; 1005 in all]"));
    assert_null (strstr (r.content, "f1000"));
    wrk_tool_result_free (&r);
}

static void test_glob (void **state)
{
    s_run_ok ("glob", "{\"pattern\":\"**/*.c\"}", "src/main.c\nsrc/util/u.c");
    s_run_ok ("glob", "{\"pattern\":\"*.md\"}", "README.md");
    s_run_ok ("glob", "{\"pattern\":\"*.c\"}", "No files match *.c in .");
    s_run_ok ("glob", "{\"pattern\":\"src/*\"}", "src/main.c\nsrc/util/");
    s_run_ok ("glob", "{\"pattern\":\"**/u.?\",\"path\":\"src\"}",
              "src/util/u.c\nsrc/util/u.h");
    //  As in bash with globstar, "src/**" includes src/ itself.
    s_run_ok ("glob", "{\"pattern\":\"src/**\"}",
              "src/\nsrc/main.c\nsrc/util/\nsrc/util/u.c\nsrc/util/u.h");
    s_run_ok ("glob", "{\"pattern\":\"**/util/*.h\"}", "src/util/u.h");
    //  .git is never searched.
    s_run_ok ("glob", "{\"pattern\":\"**/config\"}", "No files match **/config in .");
    s_run_error ("glob", "{\"pattern\":\"/etc/*\"}", "pattern must be relative");
    s_run_error ("glob", "{\"pattern\":\"../outside/*\"}", "may not contain \"..\"");
    s_run_error ("glob", "{\"pattern\":\"*\",\"path\":\"../outside\"}",
                 "leaves the workspace");
    s_run_error ("glob", "{}", "missing required argument \"pattern\"");

    //  A link to a directory outside is listed, never entered.
    char target[PATH_MAX], link[PATH_MAX];
    s_path (target, "outside");
    s_path (link, "ws/dir_out");
    assert_int_equal (symlink (target, link), 0);
    s_run_ok ("glob", "{\"pattern\":\"**/secret\"}", "No files match **/secret in .");
    s_run_ok ("glob", "{\"pattern\":\"dir_*\"}", "dir_out");

    //  Bounded.
    s_mkdir ("ws/many");
    for (int i = 0; i < WRK_TOOL_GLOB_MAX + 5; i++) {
        char rel[64];
        snprintf (rel, sizeof rel, "ws/many/f%04d.txt", i);
        s_write (rel, "");
    }
    wrk_tool_result_t r;
    s_run ("glob", "{\"pattern\":\"many/*.txt\"}", &r);
    assert_non_null (strstr (r.content, "many/f0999.txt\n[stopped after 1000 results"));
    assert_null (strstr (r.content, "f1000"));
    wrk_tool_result_free (&r);
    s_run ("glob", "{\"pattern\":\"many/f09*.txt\"}", &r);
    assert_null (strstr (r.content, "stopped"));
    wrk_tool_result_free (&r);
}

static void test_grep (void **state)
{
    s_run_ok ("grep", "{\"pattern\":\"TODO\"}",
              "src/util/u.c:3:    return 0; /* TODO */\n[1 matching line in 1 file]");
    s_run_ok ("grep", "{\"pattern\":\"u \\\\(void\\\\)\",\"glob\":\"*.h\"}",
              "src/util/u.h:1:int u (void);\n[1 matching line in 1 file]");
    s_run_ok ("grep", "{\"pattern\":\"^(int|#include)\",\"path\":\"src/util\"}",
              "src/util/u.c:1:int u (void)\nsrc/util/u.h:1:int u (void);\n"
              "[2 matching lines in 2 files]");
    s_run_ok ("grep",
              "{\"pattern\":\"hello\",\"ignore_case\":true,\"path\":\"README.md\"}",
              "README.md:3:Hello world.\n[1 matching line in 1 file]");
    s_run_ok ("grep", "{\"pattern\":\"hello\"}", "No matches for hello in .");
    s_run_ok ("grep", "{\"pattern\":\"return\",\"glob\":\"src/util/*.c\"}",
              "src/util/u.c:3:    return 0; /* TODO */\n[1 matching line in 1 file]");
    s_write_n ("ws/blob.bin", "TODO\0\1", 6);
    s_run_ok ("grep", "{\"pattern\":\"TODO\",\"glob\":\"*.bin\"}",
              "No matches for TODO in .");
    s_run_error ("grep", "{\"pattern\":\"(unclosed\"}",
                 "grep: invalid regular expression");
    s_run_error ("grep", "{\"pattern\":\"x\",\"path\":\"../outside\"}",
                 "leaves the workspace");
    s_run_error ("grep", "{\"pattern\":\"x\",\"glob\":\"../*\"}",
                 "may not contain \"..\"");
    s_run_error ("grep", "{\"pattern\":true}", "argument \"pattern\" must be a string");

    //  Bounded matches, and long lines cut.
    size_t n = WRK_TOOL_GREP_MAX + 100;
    char *many = malloc (n * 8 + 1);
    for (size_t i = 0; i < n; i++) memcpy (many + i * 8, "match!\r\n", 8);
    s_write_n ("ws/many.txt", many, n * 8);
    free (many);
    wrk_tool_result_t r;
    s_run ("grep", "{\"pattern\":\"match\",\"path\":\"many.txt\"}", &r);
    assert_true (strncmp (r.content, "many.txt:1:match!\n", 18) == 0); //  \r dropped
    assert_non_null (
        strstr (r.content, "many.txt:500:match!\n[stopped after 500 matching"));
    assert_null (strstr (r.content, "many.txt:501:"));
    wrk_tool_result_free (&r);
    char *longl = malloc (WRK_TOOL_GREP_LINE + 101);
    memset (longl, 'q', WRK_TOOL_GREP_LINE + 100);
    longl[WRK_TOOL_GREP_LINE + 100] = '\n';
    s_write_n ("ws/long.txt", longl, WRK_TOOL_GREP_LINE + 101);
    free (longl);
    s_run ("grep", "{\"pattern\":\"q$\",\"path\":\"long.txt\"}", &r);
    assert_int_equal (strcspn (r.content, "\n"),
                      strlen ("long.txt:1:") + WRK_TOOL_GREP_LINE + 3);
    wrk_tool_result_free (&r);
}

//  --------------------------------------------------------------------------
//  update_plan

static void test_update_plan (void **state)
{
    wrk_tool_result_t r;
    s_run ("update_plan",
           "{\"entries\":[{\"content\":\"Read code\",\"status\":\"completed\"},"
           "{\"content\":\"Fix bug\",\"status\":\"in_progress\",\"priority\":\"high\"},"
           "{\"content\":\"Run tests\",\"status\":\"pending\"}]}",
           &r);
    assert_false (r.is_error);
    assert_string_equal (r.content, "Plan updated (1 of 3 completed):\n[x] Read code\n"
                                    "[>] Fix bug\n[ ] Run tests");
    char *plan = json_dumps (r.plan, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal (plan,
                         "[{\"content\":\"Read code\",\"priority\":\"medium\",\"status\":"
                         "\"completed\"},{\"content\":\"Fix bug\",\"priority\":\"high\","
                         "\"status\":\"in_progress\"},{\"content\":\"Run tests\","
                         "\"priority\":\"medium\",\"status\":\"pending\"}]");
    free (plan);
    wrk_tool_result_free (&r);

    s_run ("update_plan", "{\"entries\":[]}", &r);
    assert_int_equal (json_array_size (r.plan), 0);
    wrk_tool_result_free (&r);

    s_run_error ("update_plan", "{}", "missing required argument \"entries\"");
    s_run_error ("update_plan", "{\"entries\":\"do it\"}",
                 "must be an array, not a string");
    s_run_error ("update_plan", "{\"entries\":[1]}",
                 "entries[0] must be an object, not an integer");
    s_run_error ("update_plan", "{\"entries\":[{\"status\":\"pending\"}]}",
                 "update_plan: entries[0]: missing required argument \"content\"");
    s_run_error (
        "update_plan",
        "{\"entries\":[{\"content\":\"a\",\"status\":\"pending\"},"
        "{\"content\":\"b\",\"status\":\"done\"}]}",
        "entries[1]: status \"done\" is not one of pending, in_progress, completed");
    s_run_error ("update_plan",
                 "{\"entries\":[{\"content\":\"a\",\"status\":\"pending\","
                 "\"priority\":\"urgent\"}]}",
                 "priority \"urgent\" is not one of high, medium, low");
    //  The limit and one past it.
    json_t *args = json_object (), *list = json_array ();
    for (int i = 0; i < WRK_TOOL_PLAN_MAX; i++)
        json_array_append_new (
            list, json_pack ("{s:s, s:s}", "content", "step", "status", "pending"));
    json_object_set_new (args, "entries", list);
    assert_int_equal (wrk_tool_run (&s_scope, "update_plan", args, &r), 0);
    assert_false (r.is_error);
    wrk_tool_result_free (&r);
    json_array_append_new (list,
                           json_pack ("{s:s, s:s}", "content", "x", "status", "pending"));
    assert_int_equal (wrk_tool_run (&s_scope, "update_plan", args, &r), 0);
    assert_true (r.is_error);
    assert_string_equal (r.content, "update_plan: 101 entries; the limit is 100");
    wrk_tool_result_free (&r);
    json_decref (args);
}

//  --------------------------------------------------------------------------
//  describe and run_command arguments

static void s_describe (const char *tool, const char *args_json, int rc,
                        const char *title, const char *target)
{
    json_t *args = json_loads (args_json, 0, NULL);
    assert_non_null (args);
    char t[128], g[256];
    int got = wrk_tool_describe (&s_scope, tool, args, t, sizeof t, g, sizeof g);
    if (got != rc) fail_msg ("%s %s: rc %d, expected %d", tool, args_json, got, rc);
    assert_string_equal (t, title);
    assert_string_equal (g, target);
    json_decref (args);
}

static void test_describe_paths (void **state)
{
    char args[PATH_MAX + 64], outside[PATH_MAX];
    snprintf (args, sizeof args, "{\"path\":\"%s/src/main.c\"}", s_ws);
    s_describe ("read_file", args, 0, "Read src/main.c", "src/main.c");
    s_describe ("edit_file", "{\"path\":\"./src/util/../a.c\"}", 0, "Edit src/a.c",
                "src/a.c");
    snprintf (outside, sizeof outside, "%s/outside/x", s_base);
    char title[PATH_MAX + 16];
    snprintf (title, sizeof title, "Write %s", outside);
    s_describe ("write_file", "{\"path\":\"../outside/x\"}", 0, title, outside);
    s_describe ("list_dir", "{}", 0, "List .", ".");
    s_describe ("glob", "{\"pattern\":\"**/*.c\"}", 0, "Find **/*.c", ".");
    s_describe ("glob", "{\"pattern\":\"*.h\",\"path\":\"src/\"}", 0, "Find *.h in src",
                "src");
    s_describe ("grep", "{\"pattern\":\"TODO\",\"path\":\"src\"}", 0,
                "Search for `TODO` in src", "src");
    s_describe ("update_plan", "{\"entries\":[]}", 0, "Update plan", "");
    s_describe ("run_command", "{\"command\":\"ls -la\"}", 0, "Run `ls -la`", "ls -la");
    s_describe (
        "run_command",
        "{\"command\":\"make -j8 && ./run-the-whole-test-suite --verbose --shuffle "
        "--seed=12345\"}",
        0, "Run `make -j8 && ./run-the-whole-test-suite --verbose --shuffle -…`",
        "make -j8 && ./run-the-whole-test-suite --verbose --shuffle --seed=12345");
    s_describe ("run_command", "{\"command\":\"echo a\\necho b\"}", 0,
                "Run `echo a echo b`", "echo a\necho b");
    //  Bad arguments: a generic title, no target.
    s_describe ("read_file", "{}", CM_E_INVALID, "Read file", "");
    s_describe ("run_command", "{\"command\":5}", CM_E_INVALID, "Run command", "");
    s_describe ("nuke", "{}", CM_E_NOT_FOUND, "Unknown tool nuke", "");

    //  A target that does not fit is refused, never cut.
    json_t *a = json_pack ("{s:s}", "command", "echo 0123456789");
    char t[64], g[8];
    assert_int_equal (
        wrk_tool_describe (&s_scope, "run_command", a, t, sizeof t, g, sizeof g),
        CM_E_TOO_LARGE);
    assert_string_equal (t, "Run `echo 0123456789`");
    json_decref (a);
    //  Without a scope, paths are shown as given.
    a = json_pack ("{s:s}", "path", "x/../y");
    char big[64];
    assert_int_equal (
        wrk_tool_describe (NULL, "read_file", a, t, sizeof t, big, sizeof big), 0);
    assert_string_equal (big, "x/../y");
    json_decref (a);
}

static void test_command_args (void **state)
{
    wrk_tool_result_t r;
    const char *cmd;
    int64_t ms;
    json_t *a = json_pack ("{s:s, s:i}", "command", "make test", "timeout_seconds", 30);
    assert_int_equal (wrk_tool_command_args (a, &cmd, &ms, &r), 0);
    assert_string_equal (cmd, "make test");
    assert_int_equal (ms, 30000);
    json_decref (a);
    a = json_pack ("{s:s}", "command", "ls");
    assert_int_equal (wrk_tool_command_args (a, &cmd, &ms, &r), 0);
    assert_int_equal (ms, 0);
    json_decref (a);

    const char *bad[][2] = {
        {"{}", "run_command: missing required argument \"command\" (a string)"},
        {"{\"command\":\"  \\n\"}", "run_command: argument \"command\" is blank"},
        {"{\"command\":[\"ls\"]}",
         "run_command: argument \"command\" must be a string, not an array"},
        {"{\"command\":\"ls\",\"timeout_seconds\":601}",
         "run_command: argument \"timeout_seconds\" must be from 1 to 600, not 601"},
        {"[]", "run_command: arguments must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = json_loads (bad[i][0], 0, NULL);
        assert_int_equal (wrk_tool_command_args (a, &cmd, &ms, &r), CM_E_INVALID);
        assert_true (r.is_error);
        assert_string_equal (r.content, bad[i][1]);
        assert_null (cmd);
        wrk_tool_result_free (&r);
        json_decref (a);
    }
}

//  --------------------------------------------------------------------------
//  UTF-8

static void test_utf8_clean (void **state)
{
    const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 15,
         "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"},
        {"a\0b", 3,
         "a\xEF\xBF\xBD"
         "b"},
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                 //  overlong
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, //  surrogate
        {"\xF4\x90\x80\x80", 4,
         "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, //  past U+10FFFF
        {"ab\xE2\x82", 4, "ab\xEF\xBF\xBD\xEF\xBF\xBD"},      //  cut sequence
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *got = wrk_utf8_clean (cases[i].in, cases[i].len, &len);
        assert_string_equal (got, cases[i].out);
        assert_int_equal (len, strlen (cases[i].out));
        free (got);
    }
}

//  --------------------------------------------------------------------------
//  Unified diff

static void s_diff_is (const char *old, const char *new_text, const char *expect)
{
    char *d = wrk_diff_unified ("f.txt", old != NULL, old ? old : "",
                                old ? strlen (old) : 0, new_text, strlen (new_text));
    assert_non_null (d);
    if (strcmp (d, expect)) fail_msg ("diff:\n%s\nexpected:\n%s", d, expect);
    free (d);
}

static void test_diff_exact (void **state)
{
    s_diff_is ("a\n", "a\n", "");
    s_diff_is (NULL, "", "");
    s_diff_is (NULL, "x\n", "--- /dev/null\n+++ b/f.txt\n@@ -0,0 +1 @@\n+x\n");
    s_diff_is ("x\ny\n", "", "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +0,0 @@\n-x\n-y\n");
    s_diff_is ("", "x\n", "--- a/f.txt\n+++ b/f.txt\n@@ -0,0 +1 @@\n+x\n");
    //  Context of 3 around a change in the middle of 10 lines.
    s_diff_is (
        "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n", "1\n2\n3\n4\n5\nsix\n7\n8\n9\n10\n",
        "--- a/f.txt\n+++ b/f.txt\n@@ -3,7 +3,7 @@\n 3\n 4\n 5\n-6\n+six\n 7\n 8\n 9\n");
    //  An insertion at the top; a deletion at the end.
    s_diff_is ("a\nb\nc\nd\ne\n", "new\na\nb\nc\nd\ne\n",
               "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,4 @@\n+new\n a\n b\n c\n");
    s_diff_is ("a\nb\nc\nd\ne\n", "a\nb\nc\nd\n",
               "--- a/f.txt\n+++ b/f.txt\n@@ -2,4 +2,3 @@\n b\n c\n d\n-e\n");
    //  Two changes 7 lines apart: two hunks; 6 apart: one.
    s_diff_is ("A\n1\n2\n3\n4\n5\n6\n7\nB\n", "a\n1\n2\n3\n4\n5\n6\n7\nb\n",
               "--- a/f.txt\n+++ b/f.txt\n@@ -1,4 +1,4 @@\n-A\n+a\n 1\n 2\n 3\n"
               "@@ -6,4 +6,4 @@\n 5\n 6\n 7\n-B\n+b\n");
    s_diff_is (
        "A\n1\n2\n3\n4\n5\n6\nB\n", "a\n1\n2\n3\n4\n5\n6\nb\n",
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,8 +1,8 @@\n-A\n+a\n 1\n 2\n 3\n 4\n 5\n 6\n"
        "-B\n+b\n");
    //  No newline at the end, on either side.
    s_diff_is (
        "a\nb", "a\nb\n",
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of "
        "file\n+b\n");
    s_diff_is (
        "a\nb\n", "a\nc",
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of "
        "file\n");
    s_diff_is (
        "x\nend", "y\nend",
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n-x\n+y\n end\n\\ No newline at end "
        "of file\n");
}

//  Deterministic pseudo-random numbers (xorshift), so failures repeat.
static unsigned long s_rand_state = 88172645463325252ul;
static unsigned s_rand (unsigned n)
{
    s_rand_state ^= s_rand_state << 13;
    s_rand_state ^= s_rand_state >> 7;
    s_rand_state ^= s_rand_state << 17;
    return (unsigned)(s_rand_state % n);
}

static size_t s_random_text (char *buf, unsigned lines)
{
    static const char *const words[] = {"alpha", "beta", "gamma", "", "delta", "}"};
    size_t len = 0;
    for (unsigned i = 0; i < lines; i++)
        len += (size_t)sprintf (buf + len, "%s\n", words[s_rand (6)]);
    if (len && s_rand (4) == 0) len--; //  sometimes no final newline
    return len;
}

//  Apply `diff` to a file holding old (absent when !existed) with patch -p1
//  and compare with new.
static void s_patch_check (const char *dir, bool existed, const char *old, size_t old_len,
                           const char *new_text, size_t new_len, const char *diff)
{
    char path[PATH_MAX], cmd[PATH_MAX * 2];
    snprintf (path, sizeof path, "%s/f.txt", dir);
    unlink (path);
    if (existed) {
        FILE *f = fopen (path, "wb");
        fwrite (old, 1, old_len, f);
        fclose (f);
    }
    if (!diff[0]) return;
    char dpath[PATH_MAX];
    snprintf (dpath, sizeof dpath, "%s/change.diff", dir);
    FILE *f = fopen (dpath, "wb");
    fputs (diff, f);
    fclose (f);
    snprintf (cmd, sizeof cmd,
              "cd '%s' && patch -p1 -s -f --no-backup-if-mismatch < change.diff "
              ">/dev/null 2>&1",
              dir);
    if (system (cmd) != 0) fail_msg ("patch refused:\n%s", diff);
    f = fopen (path, "rb");
    char *got = calloc (1, new_len + 2);
    size_t n = f ? fread (got, 1, new_len + 1, f) : 0;
    if (f) fclose (f);
    if (n != new_len || memcmp (got, new_text, new_len))
        fail_msg ("patch result differs:\n%s", diff);
    free (got);
}

static void test_diff_applies (void **state)
{
    bool have_patch = system ("patch --version >/dev/null 2>&1") == 0;
    if (!have_patch) print_message ("patch not installed: checking hunk counts only\n");
    char dir[PATH_MAX];
    s_path (dir, "patch");
    mkdir (dir, 0755);
    char *old = malloc (64 * 10), *new_text = malloc (64 * 10);
    for (int round = 0; round < 300; round++) {
        unsigned n = s_rand (40);
        size_t old_len = s_random_text (old, n);
        //  The new text: the old one with some lines changed, dropped, added.
        size_t new_len;
        if (round % 10 == 9)
            new_len = s_random_text (new_text, s_rand (40)); //  unrelated
        else {
            new_len = 0;
            const char *p = old, *end = old + old_len;
            while (p < end) {
                const char *nl = memchr (p, '\n', (size_t)(end - p));
                size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
                unsigned r = s_rand (10);
                if (r == 0) {
                } else if (r == 1)
                    new_len += (size_t)sprintf (new_text + new_len, "changed\n");
                else if (r == 2) {
                    new_len += (size_t)sprintf (new_text + new_len, "added\n");
                    memcpy (new_text + new_len, p, l), new_len += l;
                } else
                    memcpy (new_text + new_len, p, l), new_len += l;
                p += l;
            }
            if (new_len && new_text[new_len - 1] == '\n' && s_rand (5) == 0) new_len--;
        }
        bool existed = round % 25 != 0;
        char *d = wrk_diff_unified ("f.txt", existed, old, existed ? old_len : 0,
                                    new_text, new_len);
        assert_non_null (d);
        //  Hunk line counts add up whatever the tool.
        for (char *h = strstr (d, "\n@@ -"); h; h = strstr (h + 1, "\n@@ -")) {
            unsigned long os, oc = 1, ns, nc = 1;
            char *q = h + 5;
            os = strtoul (q, &q, 10);
            if (*q == ',') oc = strtoul (q + 1, &q, 10);
            ns = strtoul (q + 2, &q, 10);
            if (*q == ',') nc = strtoul (q + 1, &q, 10);
            (void)os, (void)ns;
            char *line = strchr (h + 1, '\n') + 1;
            unsigned long seen_o = 0, seen_n = 0;
            while (*line && *line != '@') {
                if (*line == ' ' || *line == '-') seen_o++;
                if (*line == ' ' || *line == '+') seen_n++;
                line = strchr (line, '\n') + 1;
            }
            assert_int_equal (seen_o, oc);
            assert_int_equal (seen_n, nc);
        }
        if (have_patch) s_patch_check (dir, existed, old, old_len, new_text, new_len, d);
        free (d);
    }
    free (old);
    free (new_text);
}

static void test_diff_bounds (void **state)
{
    //  Past WRK_DIFF_MAX_EDITS the middle becomes one replace hunk, still
    //  correct: check it with patch when available.
    unsigned n = WRK_DIFF_MAX_EDITS + 10;
    char *old = malloc ((size_t)n * 16), *new_text = malloc ((size_t)n * 16);
    size_t ol = 0, nl = 0;
    ol += (size_t)sprintf (old + ol, "head\n");
    nl += (size_t)sprintf (new_text + nl, "head\n");
    for (unsigned i = 0; i < n; i++) {
        ol += (size_t)sprintf (old + ol, "o%u\n", i);
        nl += (size_t)sprintf (new_text + nl, "n%u\n", i);
    }
    ol += (size_t)sprintf (old + ol, "tail\n");
    nl += (size_t)sprintf (new_text + nl, "tail\n");
    char *d = wrk_diff_unified ("f.txt", true, old, ol, new_text, nl);
    assert_non_null (d);
    char header[128];
    snprintf (header, sizeof header,
              "--- a/f.txt\n+++ b/f.txt\n@@ -1,%u +1,%u @@\n head\n-o0\n", n + 2, n + 2);
    assert_true (strncmp (d, header, strlen (header)) == 0);
    if (system ("patch --version >/dev/null 2>&1") == 0) {
        char dir[PATH_MAX];
        s_path (dir, "patch");
        mkdir (dir, 0755);
        s_patch_check (dir, true, old, ol, new_text, nl, d);
    }
    free (d);
    free (old);
    free (new_text);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_table_and_schema, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_dispatch_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_read_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_read_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_read_file_bounds, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_write_file_new_and_replace, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_write_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_edit_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_edit_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_list_dir, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_glob, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_grep, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_update_plan, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_describe_paths, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_command_args, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_utf8_clean, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_diff_exact, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_diff_applies, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_diff_bounds, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
