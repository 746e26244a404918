/*  cli_render.h - what `corral tail` and `corral chat` both make of the
    gateway's ACP messages for a person: the pieces of an update they read
    the same way, and the exit code a JSON-RPC error stands for.

    tail prints one line per notification, chat streams; the layouts stay
    in cmd_tail.c and cmd_chat.c, the reading of the messages is here.
    Text from the gateway is the model's, a command's or another client's:
    before it reaches a terminal, cli_render_clean makes it unable to move
    the cursor, recolour or retitle the terminal.

    Every function takes borrowed JSON (NULL and wrong types allowed: a
    message from the wire may lack anything) and returns memory it does
    not own: a string inside the JSON value (valid while it lives) or a
    literal.  No output.
*/
#ifndef CLI_RENDER_H
#define CLI_RENDER_H

#include <jansson.h>

//  o[key] when it is a string, else "".
const char *cli_render_str (const json_t *o, const char *key);

//  The mark of a plan entry's status: "x" completed, ">" in_progress,
//  " " anything else (pending, unknown).
const char *cli_render_plan_mark (const char *status);

//  The first text of a tool call's content list ([{type:"content",
//  content:{type:"text", text}} ...]), or NULL when it has none.
const char *cli_render_tool_text (const json_t *content);

//  Make every string inside value (object keys excepted) safe to print on
//  a terminal: control characters other than newline and tab (C0, DEL,
//  and C1 as UTF-8) become '?'.  Changes value in place; a string that
//  needs no change is left as it is (no allocation).
void cli_render_clean (json_t *value);
//  The same for a NUL-terminated string, in place (it may get shorter).
//  Returns s.
char *cli_render_clean_line (char *s);

//  How many of the first n bytes of s to show when at most max fit: n
//  when n <= max, else max moved back to the start of a UTF-8 character
//  so that no character is cut in two.
size_t cli_render_cut (const char *s, size_t n, size_t max);

//  What a JSON-RPC error from the gateway means for the command's exit
//  code (cli.h): invalid params (-32602) -> CLI_USAGE; no valid key
//  (-32000), not found (-32002), forbidden (-32005) -> CLI_REFUSED; a
//  service unavailable (-32011) -> CLI_UNREACHABLE; anything else
//  (capacity, internal, ...) -> CLI_FAIL.
int cli_render_exit_code (const json_t *error);

#endif
