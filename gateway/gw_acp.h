/*  gw_acp.h - what the ACP handler files share (not a public interface):
    the continuation a bus request carries, parameter helpers, and the
    handlers the method table in gw_acp.c names.

      gw_acp.c          answers, contexts, params, initialize/authenticate,
                        the method table and the dispatcher
      gw_acp_session.c  session/new, load, attach, resume, detach, list,
                        close, delete, cancel, set_mode, set_config_option
      gw_acp_prompt.c   session/prompt and $/cancel_request
      gw_acp_extra.c    _corral/session/history, _corral/session/permission and
                        _corral/usage
*/
#ifndef GW_ACP_H
#define GW_ACP_H

#include "gw.h"

#define IDEM_MAX   128
#define PROMPT_MAX 64 //  content blocks in one prompt

typedef struct gw_acp_ctx {
    uint64_t conn_id;
    json_t *id; //  JSON-RPC id to answer (NULL: notification)
    cm_uuid_t session;
    uint64_t after;
    uint64_t perm_seq; //  attach: the session's pending permission request
    bool has_epoch_check;
    char *idem;
    char *text; //  prompt / option value
    int kind;   //  handler-specific
} ctx_t;

//  A continuation for a request: which connection (by id: it may close
//  before the answer) and JSON-RPC id to answer.  NULL when out of memory.
ctx_t *gw_acp_ctx_new (gw_conn_t *conn, json_t *id);
void gw_acp_ctx_free (ctx_t *c);
//  gw_acp_ctx_free for a bus call's drop (gw_call_drop_fn).
void gw_acp_ctx_drop (void *c);
//  The connection a continuation answers, or NULL (gone or closing; c is
//  then freed).
gw_conn_t *gw_acp_ctx_conn (gw_server_t *self, ctx_t *c);
//  Answer a failed bus request.
void gw_acp_bus_error (gw_server_t *self, gw_conn_t *conn, json_t *id, int rc,
                       proto_msg_t *reply);
const char *gw_acp_tenant (const gw_conn_t *conn);
//  params.sessionId as a UUID; answers the error itself and returns -1.
int gw_acp_param_session (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg,
                          cm_uuid_t *out);
const char *gw_acp_param_str (json_t *params, const char *name);
//  {modes, configOptions} of a session (new, load, resume answers).
json_t *gw_acp_session_setup (const proto_session_rec_t *rec);
//  The session record of a SESSION reply, or NULL.
proto_session_rec_t *gw_acp_reply_session (int rc, proto_msg_t *reply);
//  A SESSION reply's perm_seq (the seq of the running turn's unanswered
//  permission_request event), 0 when none.
uint64_t gw_acp_reply_perm_seq (proto_msg_t *reply);
//  The start of every continuation that waits for a session record: the
//  connection to answer (*conn_p) and the record.  NULL when the
//  connection is gone, or when the reply was an error (then answered);
//  either way c is freed and the continuation just returns.
proto_session_rec_t *gw_acp_ctx_session (gw_server_t *self, ctx_t *c, int rc,
                                         proto_msg_t *reply, gw_conn_t **conn_p);

typedef void gw_acp_handler_fn (gw_server_t *self, gw_conn_t *conn, gw_rpc_msg_t *msg);
gw_acp_handler_fn gw_acp_initialize, gw_acp_authenticate, gw_acp_new, gw_acp_load,
    gw_acp_attach, gw_acp_resume, gw_acp_detach, gw_acp_list, gw_acp_close, gw_acp_delete,
    gw_acp_cancel, gw_acp_set_mode, gw_acp_set_config, gw_acp_prompt,
    gw_acp_cancel_request, gw_acp_history, gw_acp_permission, gw_acp_usage;

#endif
