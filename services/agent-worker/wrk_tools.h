/*  wrk_tools.h - the agent's built-in tools (DESIGN §7): one table row per
    tool, and one dispatcher that runs the synchronous ones.

        tool         kind     flags              arguments
        read_file    read     -                  path, offset_line?, limit_lines?
        write_file   edit     WRITES             path, content
        edit_file    edit     WRITES             path, old_text, new_text, replace_all?
        list_dir     read     -                  path?
        glob         search   -                  pattern, path?
        grep         search   -                  pattern, path?, glob?, ignore_case?
        update_plan  think    -                  entries[{content, status, priority?}]
        run_command  execute  EXECUTES, ASYNC    command, timeout_seconds?

    Arguments come from a model, which makes things up: a missing or
    mistyped argument, a path outside the workspace, a file that is not
    there, an edit that does not match - each is a *result* with is_error
    set and a message the model can act on, never a C error and never a
    crash.  wrk_tool_run returns a negative code only for a caller bug or
    when memory runs out.

    Confinement: every path goes through wrk_path_open / wrk_path_mkdirs
    (wrk_path.h).  glob and grep open their start directory that way and
    then descend with openat(dirfd, name, O_NOFOLLOW) over names read from
    that directory - single components, never "." or "..", never a symlink
    - so the walk cannot leave the directory wrk_path confined.  Symbolic
    links met during a walk are listed by glob but not followed; grep skips
    them.  ".git" directories are skipped.  What a walk cannot prevent: a
    directory that another process renames out of the workspace while it
    is being walked is followed, as any held descriptor would be; only a
    command (which needs execute permission) could arrange that.

    Text: file contents go to the model as UTF-8; invalid bytes become
    U+FFFD (wrk_utf8_clean).  A file whose first WRK_TOOL_BINARY_PROBE
    bytes hold a NUL is binary: read_file and edit_file refuse it, grep
    skips it.

    run_command is in the table (for the schema, titles and permissions)
    but runs asynchronously through wrk_exec.h: wrk_tool_command_args
    checks its arguments, wrk_exec_start runs it, wrk_exec_result turns the
    finished run into a wrk_tool_result_t like the others.
*/
#ifndef WRK_TOOLS_H
#define WRK_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wrk_path.h"

//  Limits (each has a test at the limit).
#define WRK_TOOL_READ_MAX     (256u * 1024) //  read_file output bytes
#define WRK_TOOL_FILE_MAX     (1u << 20)    //  write_file content; edit_file file size
#define WRK_TOOL_BINARY_PROBE 8192          //  bytes looked at for a NUL
#define WRK_TOOL_LIST_MAX     1000          //  list_dir entries shown
#define WRK_TOOL_GLOB_MAX     1000          //  glob results shown
#define WRK_TOOL_GREP_MAX     500           //  grep matching lines shown
#define WRK_TOOL_GREP_LINE    300           //  bytes of a matching line shown
#define WRK_TOOL_GREP_FILE    (4u << 20)    //  grep skips larger files
#define WRK_TOOL_WALK_MAX     100000        //  entries a glob/grep walk reads
#define WRK_TOOL_WALK_DEPTH   64            //  directory levels a walk descends
#define WRK_TOOL_PATTERN_MAX  1024          //  glob / grep pattern bytes
#define WRK_TOOL_PLAN_MAX     100           //  update_plan entries
#define WRK_TOOL_PLAN_TEXT    2000          //  bytes of one entry's content
#define WRK_TOOL_COMMAND_MAX  (64u * 1024)  //  run_command command bytes
#define WRK_TOOL_DIFF_SHOWN   (16u * 1024)  //  diff bytes put into content

//  ACP tool kinds (ToolKind in the ACP schema).
typedef enum {
    WRK_KIND_READ,
    WRK_KIND_EDIT,
    WRK_KIND_SEARCH,
    WRK_KIND_EXECUTE,
    WRK_KIND_THINK,
} wrk_tool_kind_t;

//  Flags: what the permission mode looks at.
#define WRK_TOOL_WRITES   0x1u //  changes files (refused in read_only, asks in ask)
#define WRK_TOOL_EXECUTES 0x2u //  runs a command (asks in ask and edit)
#define WRK_TOOL_ASYNC    0x4u //  not run by wrk_tool_run; see wrk_exec.h

//  What a tool produced.  Every pointer is NULL unless the tool sets it and
//  is owned by the result: free with wrk_tool_result_free.
typedef struct {
    char *content;  //  text for the model; always set after wrk_tool_run returns 0
    bool is_error;  //  the call failed; content says why
    char *path;     //  read_file, write_file, edit_file, list_dir: the
                    //  root-relative path, symlinks resolved (for the event)
    char *diff;     //  write/edit: the whole unified diff (wrk_diff.h), "" if
                    //  nothing changed; NULL when old_text is NULL for a file
                    //  that existed (no diff against unknown content)
    char *old_text; //  write/edit: previous content; NULL for a new file, or
                    //  when it was binary or over WRK_TOOL_FILE_MAX
    char *new_text; //  write/edit: the content now on disk
                    //  (content holds a summary; for an existing file also
                    //  the diff when it is at most WRK_TOOL_DIFF_SHOWN)
    json_t *plan;   //  update_plan: the validated entries, priority filled in
} wrk_tool_result_t;

typedef struct {
    const char *name;
    wrk_tool_kind_t kind;
    unsigned flags;
    const char *description;  //  for the model
    const char *input_schema; //  JSON Schema text (valid JSON, checked by a test)
} wrk_tool_def_t;

//  The row for a tool name, or NULL.  Static storage.
const wrk_tool_def_t *wrk_tool_find (const char *name);

//  All rows in table order; *count gets their number.  Static storage.
const wrk_tool_def_t *wrk_tools_table (size_t *count);

//  "read", "edit", "search", "execute" or "think".  Static storage.
const char *wrk_tool_kind_name (wrk_tool_kind_t kind);

//  The tools for a model request: a new JSON array of
//  {name, description, input_schema} (input_schema parsed), one per row.
//  The caller owns the reference (json_decref).  NULL when out of memory.
json_t *wrk_tools_schema (void);

//  A title for people and a permission target for a call, before it runs.
//  Titles: "Read README.md", "Write src/a.c", "Edit src/a.c", "List src",
//  "Find **/*.c", "Search for `TODO` in src", "Update plan",
//  "Run `ls -la`" (the command shortened with "…" past 60 bytes).
//  target is what an allow-always answer remembers together with the tool
//  name: for file tools the path made lexically relative to the scope's
//  root that contains it ("." for the root; the normalised absolute path
//  when no root contains it - the tool will refuse it anyway), for search
//  tools their directory the same way, for run_command the whole command,
//  "" for update_plan.  scope may be NULL: paths are then shown as given.
//  Both outputs always NUL-terminated (title cut to fit).
//  Returns 0, or:
//    CM_E_NOT_FOUND  no such tool (title "Unknown tool <name>", target "")
//    CM_E_INVALID    args not an object or a required argument missing or
//                    mistyped: title is generic ("Read file"), target "";
//                    run the call anyway to give the model its error
//    CM_E_TOO_LARGE  the target does not fit in glen: never offer
//                    allow-always with a cut target (title is set)
int wrk_tool_describe (const wrk_scope_t *scope, const char *name, const json_t *args,
                       char *title, size_t tlen, char *target, size_t glen);

//  Run a synchronous tool.  *out is overwritten (not freed first); after
//  return 0 it holds a result - possibly is_error - that the caller frees
//  with wrk_tool_result_free.  An unknown tool name is an is_error result.
//  Errors (out left empty, nothing to free):
//    CM_E_INVALID  scope or out NULL, or the tool is WRK_TOOL_ASYNC
//                  (run_command: use wrk_exec)
//    CM_E_NOMEM    out of memory
int wrk_tool_run (const wrk_scope_t *scope, const char *name, const json_t *args,
                  wrk_tool_result_t *out);

//  Check run_command's arguments.  On success returns 0, *command points
//  into args (valid while args lives) and *timeout_ms is the timeout asked
//  for (timeout_seconds, 1..600) or 0 for the default.  On bad arguments
//  returns CM_E_INVALID and fills *out with an is_error result for the
//  model (free it with wrk_tool_result_free); CM_E_NOMEM if that failed.
int wrk_tool_command_args (const json_t *args, const char **command, int64_t *timeout_ms,
                           wrk_tool_result_t *out);

//  Free what a result holds and zero it.  NULL and an empty result are fine.
void wrk_tool_result_free (wrk_tool_result_t *result);

//  Fill *out with an is_error result holding a copy of message.  Returns 0
//  or CM_E_NOMEM.
int wrk_tool_result_error (wrk_tool_result_t *out, const char *message);

//  A copy of text[0..len) that is valid UTF-8 and NUL-free: each byte that
//  does not start a valid sequence (overlongs, surrogates and values past
//  U+10FFFF are invalid) and each NUL becomes U+FFFD.  *out_len (may be
//  NULL) gets the copy's length.  The caller frees it; NULL when out of
//  memory.
char *wrk_utf8_clean (const char *text, size_t len, size_t *out_len);

#endif
