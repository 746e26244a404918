/*  wrk_diff.h - unified diffs of a file's old and new text, for edit events
    and for the model.

    The output is what `diff -u` prints (and `patch -p1` / `git apply`
    accept):

        --- a/<path>            (--- /dev/null for a file that did not exist)
        +++ b/<path>
        @@ -l,n +l,n @@         (",n" left out when n is 1, as diff does)
         context line
        -removed line
        +added line
        \ No newline at end of file     (after a last line without '\n')

    Lines are compared with their '\n', so "x" at the end of a file and "x\n"
    differ, as they must for the hunk to apply.  Changes are found with
    Myers' O((N+M)D) algorithm after cutting the common prefix and suffix,
    with 3 lines of context and hunks closer than 6 lines merged.

    Bounds: when either side has more than WRK_DIFF_MAX_LINES lines, or the
    edit distance (lines deleted + inserted) between the differing middles
    exceeds WRK_DIFF_MAX_EDITS, the middle is emitted as one replace hunk
    (every old middle line deleted, every new one added).  That diff is
    still correct - it applies and gives the new text - just not minimal.
*/
#ifndef WRK_DIFF_H
#define WRK_DIFF_H

#include <stdbool.h>
#include <stddef.h>

#define WRK_DIFF_CONTEXT   3
#define WRK_DIFF_MAX_LINES 200000
#define WRK_DIFF_MAX_EDITS 2000

//  Unified diff from old_text to new_text for `path` (shown as a/<path>
//  and b/<path>; it should be the root-relative path).  old_exists false
//  means the file is new: the old side is /dev/null and old_text is
//  ignored.  Texts are byte strings of the given length (no NUL needed).
//  Returns a heap string the caller frees: "" when the texts are equal (and
//  the file existed), otherwise the whole diff ending in '\n'.  NULL only
//  when out of memory.
char *wrk_diff_unified (const char *path, bool old_exists, const char *old_text,
                        size_t old_len, const char *new_text, size_t new_len);

#endif
