/*  wrk_conv.c - the provider-neutral conversation: checks, the user
    message from an ACP prompt, repair and request bodies (contract in
    wrk_conv.h; the assistant-reply builder is in wrk_reply.c). */
#include "wrk_conv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"

//  Put "<prefix>: " in front of the message already in err.
static int s_prefix (char *err, size_t errlen, int code, const char *prefix)
{
    if (err && errlen) {
        char inner[256];
        snprintf (inner, sizeof inner, "%s", err);
        snprintf (err, errlen, "%s: %s", prefix, inner);
    }
    return code;
}

static const char *s_role (const json_t *msg)
{
    return json_string_value (json_object_get (msg, "role"));
}

static const char *s_type (const json_t *block)
{
    return json_string_value (json_object_get (block, "type"));
}

static const char *s_str (const json_t *obj, const char *key)
{
    return json_string_value (json_object_get (obj, key));
}

//  A growing NUL-terminated text.
typedef struct {
    char *data;
    size_t len, cap;
} s_text_t;

static int s_text_add (s_text_t *t, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (t->len + n > WRK_CONV_MAX_TEXT) return CM_E_TOO_LARGE;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *data = realloc (t->data, cap);
        if (!data) return CM_E_NOMEM;
        t->data = data;
        t->cap = cap;
    }
    memcpy (t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
    return 0;
}

// ---------------------------------------------------------------------------
//  Checks

//  A string field of `where`: present (if required), a string, at most max
//  bytes, and non-empty if nonempty.
static int s_check_str (const json_t *obj, const char *key, bool required, bool nonempty,
                        size_t max, const char *where, char *err, size_t errlen)
{
    const json_t *v = json_object_get (obj, key);
    if (!v)
        return required ? cm_err_set (err, errlen, CM_E_MISSING, "%s: missing \"%s\"",
                                      where, key)
                        : 0;
    if (!json_is_string (v))
        return cm_err_set (err, errlen, CM_E_TYPE, "%s: \"%s\" must be a string", where,
                           key);
    if (json_string_length (v) > max)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE,
                           "%s: \"%s\" is longer than %zu bytes", where, key, max);
    if (nonempty && json_string_length (v) == 0)
        return cm_err_set (err, errlen, CM_E_INVALID, "%s: \"%s\" is empty", where, key);
    return 0;
}

//  True if blocks [0, i) hold another block of the same type whose `key`
//  equals block i's.
static bool s_dup_id (const json_t *content, size_t i, const char *key)
{
    const char *type = s_type (json_array_get (content, i));
    const char *id = s_str (json_array_get (content, i), key);
    for (size_t j = 0; j < i; j++) {
        const json_t *other = json_array_get (content, j);
        const char *oid = s_str (other, key);
        if (oid && !strcmp (s_type (other), type) && !strcmp (oid, id)) return true;
    }
    return false;
}

static int s_check_block (const json_t *block, const char *role, size_t i,
                          const json_t *content, char *err, size_t errlen)
{
    char where[64];
    snprintf (where, sizeof where, "content[%zu]", i);
    if (!json_is_object (block))
        return cm_err_set (err, errlen, CM_E_TYPE, "%s: a block must be an object",
                           where);
    int rc = s_check_str (block, "type", true, true, 32, where, err, errlen);
    if (rc) return rc;
    const char *type = s_type (block);
    bool user = !strcmp (role, "user"), assistant = !strcmp (role, "assistant");
    snprintf (where, sizeof where, "content[%zu]: %s", i, type);

    if (!strcmp (type, "text")) {
        if (!user && !assistant)
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: not allowed in a %s message", where, role);
        return s_check_str (block, "text", true, false, WRK_CONV_MAX_TEXT, where, err,
                            errlen);
    }
    if (!strcmp (type, "thinking")) {
        if (!assistant)
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: not allowed in a %s message", where, role);
        rc = s_check_str (block, "thinking", true, false, WRK_CONV_MAX_TEXT, where, err,
                          errlen);
        if (!rc)
            rc = s_check_str (block, "signature", false, false, WRK_CONV_MAX_TEXT, where,
                              err, errlen);
        return rc;
    }
    if (!strcmp (type, "tool_use")) {
        if (!assistant)
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: not allowed in a %s message", where, role);
        rc = s_check_str (block, "id", true, true, WRK_CONV_MAX_ID, where, err, errlen);
        if (!rc)
            rc = s_check_str (block, "name", true, true, WRK_CONV_MAX_ID, where, err,
                              errlen);
        if (rc) return rc;
        const json_t *input = json_object_get (block, "input");
        if (!input)
            return cm_err_set (err, errlen, CM_E_MISSING, "%s: missing \"input\"", where);
        if (!json_is_object (input))
            return cm_err_set (err, errlen, CM_E_TYPE, "%s: \"input\" must be an object",
                               where);
        if (s_dup_id (content, i, "id"))
            return cm_err_set (err, errlen, CM_E_INVALID, "%s: id \"%s\" used twice",
                               where, s_str (block, "id"));
        return 0;
    }
    if (!strcmp (type, "tool_result")) {
        if (strcmp (role, "tool"))
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: not allowed in a %s message (only in role tool)",
                               where, role);
        rc = s_check_str (block, "tool_use_id", true, true, WRK_CONV_MAX_ID, where, err,
                          errlen);
        if (!rc)
            rc = s_check_str (block, "content", true, false, WRK_CONV_MAX_TEXT, where,
                              err, errlen);
        if (rc) return rc;
        const json_t *is_error = json_object_get (block, "is_error");
        if (is_error && !json_is_boolean (is_error))
            return cm_err_set (err, errlen, CM_E_TYPE,
                               "%s: \"is_error\" must be a boolean", where);
        if (s_dup_id (content, i, "tool_use_id"))
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: tool_use_id \"%s\" answered twice", where,
                               s_str (block, "tool_use_id"));
        return 0;
    }
    return cm_err_set (err, errlen, CM_E_INVALID,
                       "%s: unknown block type (expected text, thinking, tool_use, "
                       "tool_result)",
                       where);
}

int wrk_conv_check_message (const json_t *msg, char *err, size_t errlen)
{
    if (!json_is_object (msg))
        return cm_err_set (err, errlen, CM_E_TYPE, "a message must be an object");
    int rc = s_check_str (msg, "role", true, true, 32, "message", err, errlen);
    if (rc) return rc;
    const char *role = s_role (msg);
    if (strcmp (role, "user") && strcmp (role, "assistant") && strcmp (role, "tool"))
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "unknown role \"%s\" (expected user, assistant, tool)", role);
    const json_t *content = json_object_get (msg, "content");
    if (!content) return cm_err_set (err, errlen, CM_E_MISSING, "missing \"content\"");
    if (!json_is_array (content))
        return cm_err_set (err, errlen, CM_E_TYPE,
                           "\"content\" must be an array of blocks");
    if (json_array_size (content) > WRK_CONV_MAX_BLOCKS)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE, "more than %d blocks",
                           WRK_CONV_MAX_BLOCKS);
    if (json_array_size (content) == 0 && strcmp (role, "assistant"))
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "a %s message needs at least one block", role);
    for (size_t i = 0; i < json_array_size (content); i++) {
        rc = s_check_block (json_array_get (content, i), role, i, content, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int wrk_conv_check (const json_t *conv, char *err, size_t errlen)
{
    if (!json_is_array (conv))
        return cm_err_set (err, errlen, CM_E_TYPE,
                           "a conversation must be an array of messages");
    if (json_array_size (conv) > WRK_CONV_MAX_MESSAGES)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE, "more than %d messages",
                           WRK_CONV_MAX_MESSAGES);
    for (size_t i = 0; i < json_array_size (conv); i++) {
        int rc = wrk_conv_check_message (json_array_get (conv, i), err, errlen);
        if (rc) {
            char prefix[32];
            snprintf (prefix, sizeof prefix, "message %zu", i);
            return s_prefix (err, errlen, rc, prefix);
        }
    }
    return 0;
}

int wrk_conv_parse_message (const char *text, size_t len, json_t **msg_out, char *err,
                            size_t errlen)
{
    *msg_out = NULL;
    if (len > WRK_CONV_MAX_MESSAGE)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE, "message longer than %u bytes",
                           WRK_CONV_MAX_MESSAGE);
    json_error_t jerr;
    json_t *msg = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!msg)
        return cm_err_set (err, errlen, CM_E_INVALID, "message is not JSON: %s",
                           jerr.text);
    int rc = wrk_conv_check_message (msg, err, errlen);
    if (rc)
        json_decref (msg);
    else
        *msg_out = msg;
    return rc;
}

// ---------------------------------------------------------------------------
//  The user message from an ACP prompt

//  The text one ACP content block stands for, into *t.
static int s_acp_block (const json_t *block, const char *where, s_text_t *t, char *err,
                        size_t errlen)
{
    if (!json_is_object (block))
        return cm_err_set (err, errlen, CM_E_TYPE,
                           "%s: a content block must be an object", where);
    int rc = s_check_str (block, "type", true, true, 64, where, err, errlen);
    if (rc) return rc;
    const char *type = s_type (block);
    char here[96];
    snprintf (here, sizeof here, "%s: %s", where, type);

    if (!strcmp (type, "text")) {
        rc = s_check_str (block, "text", true, false, WRK_CONV_MAX_TEXT, here, err,
                          errlen);
        if (rc) return rc;
        const json_t *text = json_object_get (block, "text");
        rc = s_text_add (t, json_string_value (text), json_string_length (text));
    } else if (!strcmp (type, "resource_link")) {
        rc = s_check_str (block, "uri", true, true, WRK_CONV_MAX_TEXT, here, err, errlen);
        if (!rc)
            rc = s_check_str (block, "name", true, false, WRK_CONV_MAX_TEXT, here, err,
                              errlen);
        if (rc) return rc;
        const char *parts[] = {"Referenced resource: ", s_str (block, "name"), " ",
                               s_str (block, "uri")};
        for (size_t i = 0; i < 4 && !rc; i++)
            rc = s_text_add (t, parts[i], strlen (parts[i]));
    } else if (!strcmp (type, "resource")) {
        const json_t *res = json_object_get (block, "resource");
        if (!res)
            return cm_err_set (err, errlen, CM_E_MISSING, "%s: missing \"resource\"",
                               here);
        if (!json_is_object (res))
            return cm_err_set (err, errlen, CM_E_TYPE,
                               "%s: \"resource\" must be an object", here);
        snprintf (here, sizeof here, "%s: resource: resource", where);
        rc = s_check_str (res, "uri", true, true, WRK_CONV_MAX_TEXT, here, err, errlen);
        if (!rc)
            rc = s_check_str (res, "text", false, false, WRK_CONV_MAX_TEXT, here, err,
                              errlen);
        if (!rc)
            rc = s_check_str (res, "blob", false, false, SIZE_MAX, here, err, errlen);
        if (rc) return rc;
        const char *uri = s_str (res, "uri");
        const json_t *text = json_object_get (res, "text");
        if (text) {
            const char *parts[] = {"<resource uri=\"", uri, "\">\n"};
            for (size_t i = 0; i < 3 && !rc; i++)
                rc = s_text_add (t, parts[i], strlen (parts[i]));
            if (!rc)
                rc = s_text_add (t, json_string_value (text), json_string_length (text));
            if (!rc) rc = s_text_add (t, "\n</resource>", 12);
        } else if (json_object_get (res, "blob")) {
            const char *parts[] = {"[resource ", uri, " omitted: binary content]"};
            for (size_t i = 0; i < 3 && !rc; i++)
                rc = s_text_add (t, parts[i], strlen (parts[i]));
        } else
            return cm_err_set (err, errlen, CM_E_INVALID,
                               "%s: needs \"text\" or \"blob\"", here);
    } else if (!strcmp (type, "image")) {
        rc = s_text_add (t, "[image omitted]", 15);
    } else if (!strcmp (type, "audio")) {
        rc = s_text_add (t, "[audio omitted]", 15);
    } else
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "%s: unknown content block type \"%s\" (expected text, image, "
                           "audio, resource_link, resource)",
                           where, type);
    if (rc == CM_E_TOO_LARGE)
        return cm_err_set (err, errlen, rc, "%s: text longer than %u bytes", here,
                           WRK_CONV_MAX_TEXT);
    if (rc) return cm_err_set (err, errlen, rc, "out of memory");
    return 0;
}

int wrk_conv_user_from_acp (const char *prompt, size_t len, json_t **msg_out, char *err,
                            size_t errlen)
{
    *msg_out = NULL;
    if (len > WRK_CONV_MAX_MESSAGE)
        return cm_err_set (err, errlen, CM_E_TOO_LARGE, "prompt: longer than %u bytes",
                           WRK_CONV_MAX_MESSAGE);
    json_error_t jerr;
    json_t *blocks = json_loadb (prompt, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!blocks)
        return cm_err_set (err, errlen, CM_E_INVALID, "prompt: not JSON: %s", jerr.text);
    int rc = 0;
    json_t *content = NULL;
    s_text_t t = {0};
    bool any = false;
    if (!json_is_array (blocks)) {
        rc = cm_err_set (err, errlen, CM_E_INVALID,
                         "prompt: must be an array of content blocks");
        goto done;
    }
    if (json_array_size (blocks) == 0) {
        rc = cm_err_set (err, errlen, CM_E_INVALID, "prompt: is empty");
        goto done;
    }
    if (json_array_size (blocks) > WRK_CONV_MAX_BLOCKS) {
        rc = cm_err_set (err, errlen, CM_E_TOO_LARGE,
                         "prompt: more than %d content blocks", WRK_CONV_MAX_BLOCKS);
        goto done;
    }
    content = json_array ();
    if (!content) {
        rc = cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < json_array_size (blocks); i++) {
        char where[48];
        snprintf (where, sizeof where, "prompt[%zu]", i);
        t.len = 0;
        rc = s_acp_block (json_array_get (blocks, i), where, &t, err, errlen);
        if (rc) goto done;
        if (t.len == 0) continue;
        any = true;
        json_t *text = json_stringn (t.data, t.len);
        if (!text || json_array_append_new (content, json_pack ("{s:s, s:o}", "type",
                                                                "text", "text", text))) {
            rc = cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
            goto done;
        }
    }
    if (!any) {
        rc = cm_err_set (err, errlen, CM_E_INVALID, "prompt: has no text");
        goto done;
    }
    *msg_out = json_pack ("{s:s, s:O}", "role", "user", "content", content);
    if (!*msg_out) rc = cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
done:
    free (t.data);
    json_decref (content);
    json_decref (blocks);
    return rc;
}

// ---------------------------------------------------------------------------
//  Repair

static json_t *s_result (const char *id, const char *content, bool is_error)
{
    return json_pack ("{s:s, s:s, s:s, s:b}", "type", "tool_result", "tool_use_id", id,
                      "content", content, "is_error", is_error);
}

//  A shallow copy of msg with content replaced (reference stolen).
static json_t *s_with_content (const json_t *msg, json_t *content)
{
    json_t *copy = content ? json_copy ((json_t *)msg) : NULL;
    if (!copy || json_object_set_new (copy, "content", content)) {
        json_decref (copy);
        if (!copy) json_decref (content);
        return NULL;
    }
    return copy;
}

//  The assistant message conv[*i] and the tool messages after it, into out;
//  advances *i past them.  Returns results added or CM_E_NOMEM.
static int s_repair_window (json_t *conv, size_t *i, json_t *out, const char *reason,
                            bool *changed)
{
    const json_t *assistant = json_array_get (conv, *i);
    const json_t *content = json_object_get (assistant, "content");
    size_t nblocks = json_array_size (content);
    const char **ids = calloc (nblocks + 1, sizeof *ids);
    bool *answered = calloc (nblocks + 1, sizeof *answered);
    int rc = 0, added = 0;
    if (!ids || !answered || json_array_append (out, (json_t *)assistant)) goto nomem;
    size_t nids = 0;
    for (size_t b = 0; b < nblocks; b++) {
        const json_t *block = json_array_get (content, b);
        if (!strcmp (s_type (block), "tool_use")) ids[nids++] = s_str (block, "id");
    }
    //  Keep the first answer to each id; drop the rest.
    size_t last_tool = SIZE_MAX; //  index in out of the last tool message kept
    for ((*i)++; *i < json_array_size (conv); (*i)++) {
        const json_t *tool = json_array_get (conv, *i);
        if (strcmp (s_role (tool), "tool")) break;
        const json_t *results = json_object_get (tool, "content");
        json_t *kept = json_array ();
        if (!kept) goto nomem;
        for (size_t r = 0; r < json_array_size (results); r++) {
            json_t *result = json_array_get (results, r);
            const char *id = s_str (result, "tool_use_id");
            size_t k = 0;
            while (k < nids && strcmp (ids[k], id)) k++;
            if (k < nids && !answered[k]) {
                answered[k] = true;
                if (json_array_append (kept, result)) {
                    json_decref (kept);
                    goto nomem;
                }
            }
        }
        if (json_array_size (kept) == json_array_size (results)) {
            json_decref (kept);
            if (json_array_append (out, (json_t *)tool)) goto nomem;
        } else {
            *changed = true;
            if (json_array_size (kept) == 0) {
                json_decref (kept);
                continue;
            }
            if (json_array_append_new (out, s_with_content (tool, kept))) goto nomem;
        }
        last_tool = json_array_size (out) - 1;
    }
    //  Answer what is left, in the order of the calls.
    json_t *extra = json_array ();
    if (!extra) goto nomem;
    for (size_t k = 0; k < nids; k++) {
        if (answered[k]) continue;
        if (json_array_append_new (extra, s_result (ids[k], reason, true))) {
            json_decref (extra);
            goto nomem;
        }
        added++;
    }
    if (added) {
        *changed = true;
        if (last_tool == SIZE_MAX) {
            json_t *msg = json_pack ("{s:s, s:o}", "role", "tool", "content", extra);
            if (!msg || json_array_append_new (out, msg)) goto nomem;
        } else {
            const json_t *tool = json_array_get (out, last_tool);
            json_t *all = json_copy (json_object_get (tool, "content"));
            if (!all || json_array_extend (all, extra)) {
                json_decref (all);
                json_decref (extra);
                goto nomem;
            }
            json_decref (extra);
            if (json_array_set_new (out, last_tool, s_with_content (tool, all)))
                goto nomem;
        }
    } else
        json_decref (extra);
    rc = added;
    goto done;
nomem:
    rc = CM_E_NOMEM;
done:
    free (ids);
    free (answered);
    return rc;
}

int wrk_conv_repair (json_t *conv, const char *reason, char *err, size_t errlen)
{
    int rc = wrk_conv_check (conv, err, errlen);
    if (rc) return rc;
    if (!reason) reason = WRK_CONV_CANCELLED;
    json_t *out = json_array ();
    if (!out) return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
    bool changed = false;
    int added = 0;
    size_t i = 0;
    while (i < json_array_size (conv)) {
        json_t *msg = json_array_get (conv, i);
        const char *role = s_role (msg);
        if (!strcmp (role, "assistant")) {
            if (json_array_size (json_object_get (msg, "content")) == 0) {
                changed = true;
                i++;
                continue;
            }
            rc = s_repair_window (conv, &i, out, reason, &changed);
            if (rc < 0) goto done;
            added += rc;
        } else if (!strcmp (role, "tool")) {
            changed = true; //  answers no assistant message
            i++;
        } else {
            if (json_array_append (out, msg)) {
                rc = CM_E_NOMEM;
                goto done;
            }
            i++;
        }
    }
    //  Overwrite in place: setting an element never allocates, so only
    //  appending past the old length can fail.
    rc = 0;
    for (size_t k = 0; changed && !rc && k < json_array_size (out); k++) {
        json_t *msg = json_array_get (out, k);
        rc = k < json_array_size (conv) ? json_array_set (conv, k, msg)
                                        : json_array_append (conv, msg);
        if (rc) rc = CM_E_NOMEM;
    }
    while (changed && !rc && json_array_size (conv) > json_array_size (out))
        json_array_remove (conv, json_array_size (conv) - 1);
done:
    json_decref (out);
    if (rc) return cm_err_set (err, errlen, rc, "out of memory");
    return added;
}

// ---------------------------------------------------------------------------
//  Request bodies

//  Check the tools offered and build the provider's list of them into *out
//  (NULL when there are none).
static int s_tools (const json_t *tools, bool openai, json_t **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (!tools || (json_is_array (tools) && json_array_size (tools) == 0)) return 0;
    if (!json_is_array (tools))
        return cm_err_set (err, errlen, CM_E_INVALID, "tools: must be an array");
    if (json_array_size (tools) > WRK_CONV_MAX_TOOLS)
        return cm_err_set (err, errlen, CM_E_INVALID, "tools: more than %d",
                           WRK_CONV_MAX_TOOLS);
    json_t *list = json_array ();
    if (!list) return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size (tools); i++) {
        const json_t *tool = json_array_get (tools, i);
        char where[32];
        snprintf (where, sizeof where, "tools[%zu]", i);
        if (!json_is_object (tool)) {
            json_decref (list);
            return cm_err_set (err, errlen, CM_E_INVALID, "%s: must be an object", where);
        }
        //  Both providers accept names of 1-64 letters, digits, '_' and '-'.
        const char *name = s_str (tool, "name");
        size_t n = name ? strlen (name) : 0;
        bool ok = n > 0 && n <= 64;
        for (size_t c = 0; ok && c < n; c++) {
            char ch = name[c];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        }
        const json_t *desc = json_object_get (tool, "description");
        json_t *schema = json_object_get (tool, "input_schema");
        const char *problem =
            !ok                              ? "\"name\" must be 1-64 of [A-Za-z0-9_-]"
            : desc && !json_is_string (desc) ? "\"description\" must be a string"
            : !json_is_object (schema)       ? "\"input_schema\" must be an object"
                                             : NULL;
        if (problem) {
            json_decref (list);
            return cm_err_set (err, errlen, CM_E_INVALID, "%s: %s", where, problem);
        }
        json_t *entry = json_pack ("{s:s}", "name", name);
        if (entry && desc) json_object_set (entry, "description", (json_t *)desc);
        if (entry)
            json_object_set (entry, openai ? "parameters" : "input_schema", schema);
        if (entry && openai)
            entry = json_pack ("{s:s, s:o}", "type", "function", "function", entry);
        if (!entry || json_array_append_new (list, entry)) {
            json_decref (list);
            return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
        }
    }
    *out = list;
    return 0;
}

//  The text blocks of content joined by "\n\n", into *t (may stay empty).
static int s_join_text (const json_t *content, s_text_t *t)
{
    bool first = true;
    for (size_t b = 0; b < json_array_size (content); b++) {
        const json_t *block = json_array_get (content, b);
        if (strcmp (s_type (block), "text")) continue;
        const json_t *text = json_object_get (block, "text");
        if (json_string_length (text) == 0) continue;
        if (!first && s_text_add (t, "\n\n", 2)) return CM_E_NOMEM;
        if (s_text_add (t, json_string_value (text), json_string_length (text)))
            return CM_E_NOMEM;
        first = false;
    }
    return 0;
}

//  Finish a body: dump root (reference stolen) as compact text.
static int s_dump (json_t *root, char **body_out, size_t *len_out, char *err,
                   size_t errlen)
{
    char *body = root ? json_dumps (root, JSON_COMPACT) : NULL;
    json_decref (root);
    if (!body) return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
    *body_out = body;
    if (len_out) *len_out = strlen (body);
    return 0;
}

//  The OpenAI messages for one neutral message, appended to msgs.
static int s_openai_message (const json_t *msg, json_t *msgs)
{
    const char *role = s_role (msg);
    const json_t *content = json_object_get (msg, "content");
    if (!strcmp (role, "tool")) {
        for (size_t b = 0; b < json_array_size (content); b++) {
            const json_t *r = json_array_get (content, b);
            if (json_array_append_new (
                    msgs, json_pack ("{s:s, s:s, s:O}", "role", "tool", "tool_call_id",
                                     s_str (r, "tool_use_id"), "content",
                                     json_object_get (r, "content"))))
                return CM_E_NOMEM;
        }
        return 0;
    }
    s_text_t t = {0};
    json_t *calls = json_array ();
    int rc = calls ? s_join_text (content, &t) : CM_E_NOMEM;
    for (size_t b = 0; !rc && b < json_array_size (content); b++) {
        const json_t *block = json_array_get (content, b);
        if (strcmp (s_type (block), "tool_use")) continue;
        char *args = json_dumps (json_object_get (block, "input"), JSON_COMPACT);
        json_t *call =
            args ? json_pack ("{s:s, s:s, s:{s:s, s:s}}", "id", s_str (block, "id"),
                              "type", "function", "function", "name",
                              s_str (block, "name"), "arguments", args)
                 : NULL;
        free (args);
        if (json_array_append_new (calls, call)) rc = CM_E_NOMEM;
    }
    if (rc || (t.len == 0 && json_array_size (calls) == 0)) goto done; //  nothing to say
    json_t *out = json_pack ("{s:s, s:o}", "role", role, "content",
                             t.len ? json_stringn (t.data, t.len) : json_null ());
    if (out && json_array_size (calls) && json_object_set (out, "tool_calls", calls)) {
        json_decref (out);
        out = NULL;
    }
    if (json_array_append_new (msgs, out)) rc = CM_E_NOMEM;
done:
    free (t.data);
    json_decref (calls);
    return rc;
}

int wrk_conv_openai_request (json_t *conv, const wrk_request_opts_t *opts,
                             char **body_out, size_t *len_out, char *err, size_t errlen)
{
    *body_out = NULL;
    if (!opts->model || !*opts->model)
        return cm_err_set (err, errlen, CM_E_INVALID, "request: no model");
    int rc = wrk_conv_check (conv, err, errlen);
    if (rc) return rc;
    json_t *tools = NULL;
    rc = s_tools (opts->tools, true, &tools, err, errlen);
    if (rc) return rc;
    json_t *root = json_pack ("{s:s, s:[]}", "model", opts->model, "messages");
    json_t *msgs = json_object_get (root, "messages");
    if (!root) goto nomem;
    if (opts->system && *opts->system &&
        json_array_append_new (
            msgs, json_pack ("{s:s, s:s}", "role", "system", "content", opts->system)))
        goto nomem;
    size_t first = json_array_size (msgs);
    for (size_t i = 0; i < json_array_size (conv); i++) {
        if (s_openai_message (json_array_get (conv, i), msgs)) goto nomem;
    }
    if (json_array_size (msgs) == first) {
        json_decref (root);
        json_decref (tools);
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "request: the conversation is empty");
    }
    if (tools && json_object_set_new (root, "tools", tools)) {
        tools = NULL;
        goto nomem;
    }
    tools = NULL;
    if (opts->max_tokens &&
        json_object_set_new (
            root, opts->max_completion_tokens ? "max_completion_tokens" : "max_tokens",
            json_integer (opts->max_tokens)))
        goto nomem;
    if (json_object_set_new (root, "stream", json_true ()) ||
        json_object_set_new (root, "stream_options",
                             json_pack ("{s:b}", "include_usage", 1)))
        goto nomem;
    return s_dump (root, body_out, len_out, err, errlen);
nomem:
    json_decref (root);
    json_decref (tools);
    return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
}

//  The Anthropic blocks for one neutral message, into a new array.
static json_t *s_anthropic_blocks (const json_t *msg, bool thinking)
{
    const json_t *content = json_object_get (msg, "content");
    json_t *blocks = json_array ();
    for (size_t b = 0; blocks && b < json_array_size (content); b++) {
        const json_t *block = json_array_get (content, b);
        const char *type = s_type (block);
        json_t *out = NULL;
        if (!strcmp (type, "text")) {
            if (json_string_length (json_object_get (block, "text")) == 0) continue;
            out = json_pack ("{s:s, s:O}", "type", "text", "text",
                             json_object_get (block, "text"));
        } else if (!strcmp (type, "thinking")) {
            if (!thinking || !json_object_get (block, "signature")) continue;
            out = json_pack ("{s:s, s:O, s:O}", "type", "thinking", "thinking",
                             json_object_get (block, "thinking"), "signature",
                             json_object_get (block, "signature"));
        } else if (!strcmp (type, "tool_use")) {
            out = json_pack ("{s:s, s:O, s:O, s:O}", "type", "tool_use", "id",
                             json_object_get (block, "id"), "name",
                             json_object_get (block, "name"), "input",
                             json_object_get (block, "input"));
        } else {
            out = s_result (s_str (block, "tool_use_id"), s_str (block, "content"),
                            json_is_true (json_object_get (block, "is_error")));
        }
        if (json_array_append_new (blocks, out)) {
            json_decref (blocks);
            return NULL;
        }
    }
    return blocks;
}

//  Put the tool_result blocks of a user message first, keeping order.
static int s_results_first (json_t *blocks)
{
    json_t *sorted = json_array ();
    if (!sorted) return CM_E_NOMEM;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t b = 0; b < json_array_size (blocks); b++) {
            json_t *block = json_array_get (blocks, b);
            bool result = !strcmp (s_type (block), "tool_result");
            if (result == (pass == 0) && json_array_append (sorted, block)) {
                json_decref (sorted);
                return CM_E_NOMEM;
            }
        }
    }
    int rc =
        json_array_clear (blocks) || json_array_extend (blocks, sorted) ? CM_E_NOMEM : 0;
    json_decref (sorted);
    return rc;
}

int wrk_conv_anthropic_request (json_t *conv, const wrk_request_opts_t *opts,
                                char **body_out, size_t *len_out, char *err,
                                size_t errlen)
{
    *body_out = NULL;
    if (!opts->model || !*opts->model)
        return cm_err_set (err, errlen, CM_E_INVALID, "request: no model");
    if (opts->max_tokens == 0)
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "request: Anthropic needs max_tokens");
    if (opts->thinking_budget &&
        (opts->thinking_budget < 1024 || opts->thinking_budget >= opts->max_tokens))
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "request: thinking budget %u must be at least 1024 and below "
                           "max_tokens (%u)",
                           opts->thinking_budget, opts->max_tokens);
    int rc = wrk_conv_check (conv, err, errlen);
    if (rc) return rc;
    json_t *tools = NULL;
    rc = s_tools (opts->tools, false, &tools, err, errlen);
    if (rc) return rc;
    bool thinking = opts->thinking_budget > 0;
    json_t *root = json_pack ("{s:s, s:I}", "model", opts->model, "max_tokens",
                              (json_int_t)opts->max_tokens);
    json_t *msgs = json_array ();
    if (!root || !msgs) goto nomem;
    if (opts->system && *opts->system &&
        json_object_set_new (root, "system", json_string (opts->system)))
        goto nomem;
    for (size_t i = 0; i < json_array_size (conv); i++) {
        const json_t *msg = json_array_get (conv, i);
        const char *role = strcmp (s_role (msg), "tool") ? s_role (msg) : "user";
        json_t *blocks = s_anthropic_blocks (msg, thinking);
        if (!blocks) goto nomem;
        if (json_array_size (blocks) == 0) {
            json_decref (blocks);
            continue;
        }
        size_t n = json_array_size (msgs);
        json_t *last = n ? json_array_get (msgs, n - 1) : NULL;
        if (last && !strcmp (s_role (last), role)) {
            rc = json_array_extend (json_object_get (last, "content"), blocks);
            json_decref (blocks);
            if (rc) goto nomem;
        } else if (json_array_append_new (
                       msgs, json_pack ("{s:s, s:o}", "role", role, "content", blocks)))
            goto nomem;
    }
    if (json_array_size (msgs) == 0) {
        json_decref (root);
        json_decref (msgs);
        json_decref (tools);
        return cm_err_set (err, errlen, CM_E_INVALID,
                           "request: the conversation is empty");
    }
    for (size_t i = 0; i < json_array_size (msgs); i++) {
        json_t *msg = json_array_get (msgs, i);
        if (!strcmp (s_role (msg), "user") &&
            s_results_first (json_object_get (msg, "content")))
            goto nomem;
    }
    rc = json_object_set_new (root, "messages", msgs);
    msgs = NULL;
    if (rc) goto nomem;
    if (tools) {
        rc = json_object_set_new (root, "tools", tools);
        tools = NULL;
        if (rc) goto nomem;
    }
    if (thinking &&
        json_object_set_new (root, "thinking",
                             json_pack ("{s:s, s:I}", "type", "enabled", "budget_tokens",
                                        (json_int_t)opts->thinking_budget)))
        goto nomem;
    if (json_object_set_new (root, "stream", json_true ())) goto nomem;
    return s_dump (root, body_out, len_out, err, errlen);
nomem:
    json_decref (root);
    json_decref (msgs);
    json_decref (tools);
    return cm_err_set (err, errlen, CM_E_NOMEM, "out of memory");
}
