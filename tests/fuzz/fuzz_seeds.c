/*  fuzz_seeds.c - corral-fuzz-seeds DIR: write one encoded message per
    catalogue type into DIR, and a streamed body per model API, as the
    starting corpus the fuzz targets share.
    Bodies carry every field (required and optional) with small values.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static void fill (const proto_rec_desc_t *rec, void *obj, int depth);

//  Every allocation of one message body, freed after it is written.
static void *s_allocs[1024];
static size_t s_nallocs;

static void *alloc (size_t size)
{
    if (s_nallocs == sizeof s_allocs / sizeof s_allocs[0]) abort ();
    void *p = calloc (1, size);
    if (!p) abort ();
    return s_allocs[s_nallocs++] = p;
}

static void free_all (void)
{
    while (s_nallocs) free (s_allocs[--s_nallocs]);
}

static void fill_field (const proto_field_desc_t *f, void *slot, int depth)
{
    static const char *strs[] = {"a", "bc"};
    static uint8_t bytes[3] = {1, 2, 3};
    static proto_bin_t bins[2] = {{bytes, 3}, {bytes, 1}};
    switch (f->type) {
    case PROTO_T_U64:
        *(uint64_t *)slot = 7;
        break;
    case PROTO_T_I64:
        *(int64_t *)slot = -7;
        break;
    case PROTO_T_F64:
        *(double *)slot = 1.5;
        break;
    case PROTO_T_BOOL:
        *(bool *)slot = true;
        break;
    case PROTO_T_STR:
        *(const char **)slot = "x";
        break;
    case PROTO_T_BIN:
        *(proto_bin_t *)slot = bins[0];
        break;
    case PROTO_T_UUID:
        memset (slot, 0x42, 16);
        break;
    case PROTO_T_STR_LIST:
        *(proto_str_list_t *)slot = (proto_str_list_t){strs, 2};
        break;
    case PROTO_T_BIN_LIST:
        *(proto_bin_list_t *)slot = (proto_bin_list_t){bins, 2};
        break;
    case PROTO_T_REC:
        if (depth < 4) {
            void *sub = alloc (f->rec->size);
            fill (f->rec, sub, depth + 1);
            *(void **)slot = sub;
        }
        break;
    case PROTO_T_REC_LIST:
        if (depth < 4) {
            void *sub = alloc (f->rec->size);
            fill (f->rec, sub, depth + 1);
            ((proto_str_list_t *)slot)->items = sub;
            ((proto_str_list_t *)slot)->count = 1;
        }
        break;
    }
}

static void fill (const proto_rec_desc_t *rec, void *obj, int depth)
{
    for (size_t i = 0; i < rec->field_count; i++)
        fill_field (&rec->fields[i], (char *)obj + rec->fields[i].offset, depth);
}

int main (int argc, char **argv)
{
    if (argc != 2) {
        fprintf (stderr, "usage: corral-fuzz-seeds DIR\n");
        return 2;
    }
    size_t n;
    const proto_msg_desc_t *const *msgs = proto_msg_descs (&n);
    proto_buf_t buf = {0};
    for (size_t i = 0; i < n; i++) {
        void *body = alloc (msgs[i]->body->size);
        fill (msgs[i]->body, body, 0);
        proto_buf_reset (&buf);
        if (proto_encode (&buf, msgs[i]->type, i, body) != 0) {
            fprintf (stderr, "corral-fuzz-seeds: cannot encode %s\n", msgs[i]->name);
            return 1;
        }
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", argv[1], msgs[i]->name);
        FILE *f = fopen (path, "wb");
        if (!f || fwrite (buf.data, 1, buf.size, f) != buf.size || fclose (f) != 0) {
            perror (path);
            return 1;
        }
        free_all ();
    }
    proto_buf_fini (&buf);

    //  Model streams for fuzz_sse_stream (its first byte picks the API).
    static const struct {
        const char *name, *body;
    } streams[] = {
        {"sse-openai",
         "\x00data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"
         "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
         "\"id\":\"c1\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"pa\"}}]"
         "}}]}\n\n"
         "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
         "\"function\":{\"arguments\":\"th\\\":\\\"a\\\"}\"}}]},\"finish_reason\":\"tool_"
         "calls\"}]}\n\n"
         "data: "
         "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
         "data: [DONE]\n\n"},
        //  JSON-RPC frames for fuzz_jsonrpc (its first byte is only a depth
        //  hint there, so a leading space keeps them valid JSON too).
        {"rpc-request", " {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session/prompt\","
                        "\"params\":{\"sessionId\":\"s\",\"prompt\":[{\"type\":\"text\","
                        "\"text\":\"hi\"}]}}"},
        {"rpc-notification", " {\"jsonrpc\":\"2.0\",\"method\":\"session/cancel\","
                             "\"params\":{\"sessionId\":\"s\"}}"},
        {"rpc-response", " {\"jsonrpc\":\"2.0\",\"id\":\"r1\",\"result\":{\"outcome\":"
                         "{\"outcome\":\"selected\",\"optionId\":\"allow\"}}}"},
        {"rpc-error", " {\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32601,"
                      "\"message\":\"x\"}}"},
        {"sse-anthropic",
         "\x01event: message_start\ndata: "
         "{\"type\":\"message_start\",\"message\":{\"usage\":"
         "{\"input_tokens\":5}}}\n\n"
         "event: content_block_start\ndata: "
         "{\"type\":\"content_block_start\",\"index\":0,"
         "\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n"
         "event: content_block_delta\ndata: "
         "{\"type\":\"content_block_delta\",\"index\":0,"
         "\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n"
         "event: content_block_stop\ndata: "
         "{\"type\":\"content_block_stop\",\"index\":0}\n\n"
         "event: content_block_start\ndata: "
         "{\"type\":\"content_block_start\",\"index\":1,"
         "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"grep\","
         "\"input\":{}}}\n\n"
         "event: content_block_delta\ndata: "
         "{\"type\":\"content_block_delta\",\"index\":1,"
         "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pattern\\\":"
         "\\\"x\\\"}\"}}\n\n"
         "event: content_block_stop\ndata: "
         "{\"type\":\"content_block_stop\",\"index\":1}\n\n"
         "event: ping\ndata: {\"type\":\"ping\"}\n\n"
         "event: message_delta\ndata: "
         "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
         "\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n"
         "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
    };
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", argv[1], streams[i].name);
        FILE *f = fopen (path, "wb");
        //  The leading selector byte may be NUL: write it explicitly.
        const char *b = streams[i].body;
        size_t len = 1 + strlen (b + 1);
        if (!f || fwrite (b, 1, len, f) != len || fclose (f) != 0) {
            perror (path);
            return 1;
        }
    }
    return 0;
}
