/*  fuzz_monitor.c - libFuzzer target on corral-monitor's input side.

    The same bytes go to both of its sockets' handlers: as a heartbeat into
    the liveness table (decode, identity and sample checks), and as a
    request to the dispatcher (which must always produce a reply).  Then
    the table is rendered as Prometheus text and as JSON: whatever got in
    must render, and every line of the text must be a comment or a sample
    whose label values stay inside their quotes.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mon.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

//  Each sample line: name, optional {…} with quoted values, a space, a value.
static void check_text (const char *text)
{
    for (const char *line = text; *line;) {
        const char *end = strchr (line, '\n');
        if (!end) abort (); //  every line ends with a newline
        if (*line != '#') {
            const char *p = line;
            while (p < end && *p != '{' && *p != ' ') p++;
            if (p < end && *p == '{') {
                bool quoted = false;
                for (p++; p < end && (quoted || *p != '}'); p++) {
                    if (quoted && *p == '\\')
                        p++;
                    else if (*p == '"')
                        quoted = !quoted;
                }
                if (p >= end || quoted) abort ();
                p++;
            }
            if (p >= end || *p != ' ') abort ();
        }
        line = end + 1;
    }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static mon_server_t *s;
    static unsigned runs;
    if (!s) {
        s = calloc (1, sizeof *s);
        if (!s) abort ();
        mon_table_init (&s->table);
        proto_msg_init (&s->msg);
    }
    if (++runs % 512 == 0) { //  keep the table small
        mon_table_fini (&s->table);
        mon_table_init (&s->table);
    }
    int64_t now = (int64_t)runs * 100;
    mon_table_ingest_bytes (&s->table, &s->msg, data, size, now);
    mon_server_answer (s, data, size, now);
    if (s->buf.size == 0) abort (); //  every request gets a reply
    char *text = mon_render_metrics (&s->table, now);
    if (!text) abort ();
    check_text (text);
    free (text);
    text = mon_render_status (&s->table, now);
    if (!text) abort ();
    free (text);
    return 0;
}
