/*  cm_error.h - Corral error codes, one table for the whole system.

    Every function in Corral returns 0 on success or a negative cm error
    code.  The same codes travel on the bus in `error{code,message}` replies
    and are mapped to JSON-RPC codes by the gateway, so the table below is
    part of the wire contract: never renumber an entry, only append.

    Each entry: symbol, numeric value (positive; functions return -value),
    short name (stable, machine-readable), and a message a person can act on.
*/
#ifndef CM_ERROR_H
#define CM_ERROR_H

#include <stddef.h>

#define CM_ERRORS(X)                                                                    \
    X (CM_E_INVALID, 1, "invalid",                                                      \
       "the request is malformed or a value is out of range")                           \
    X (CM_E_NOT_FOUND, 2, "not_found", "no such object; check the id")                  \
    X (CM_E_BUSY, 3, "busy", "a turn is already running; wait for it or cancel it")     \
    X (CM_E_CAPACITY, 4, "capacity", "a capacity limit was reached; retry later")       \
    X (CM_E_RATE_LIMITED, 5, "rate_limited", "too many requests; slow down and retry")  \
    X (CM_E_FORBIDDEN, 6, "forbidden", "this key may not access that object")           \
    X (CM_E_TOO_LARGE, 7, "too_large", "the message or value exceeds a size limit")     \
    X (CM_E_CONFLICT, 8, "conflict", "the object changed or already exists")            \
    X (CM_E_EXPIRED, 9, "expired",                                                      \
       "the position or object is no longer available; reload")                         \
    X (CM_E_WORKER_LOST, 10, "worker_lost", "the agent worker running the turn died")   \
    X (CM_E_UPSTREAM, 11, "upstream", "the model provider returned an error")           \
    X (CM_E_INTERNAL, 12, "internal", "internal error; see the service log")            \
    X (CM_E_VERSION, 13, "version", "peer speaks another protocol version; upgrade it") \
    X (CM_E_TRUNCATED, 14, "truncated", "message ends before a declared length")        \
    X (CM_E_TYPE, 15, "type", "a field has the wrong type")                             \
    X (CM_E_MISSING, 16, "missing_field", "a required field is missing")                \
    X (CM_E_DEPTH, 17, "depth", "message nests too deeply or has too many elements")    \
    X (CM_E_GAP, 18, "gap",                                                             \
       "sequence gap: append must continue from the last stored seq")                   \
    X (CM_E_FULL, 19, "store_full",                                                     \
       "the store reached its maximum map size; raise CORRAL_STORE_MAP_MAX")            \
    X (CM_E_IO, 20, "io", "an I/O operation failed; see the service log")               \
    X (CM_E_NOMEM, 21, "nomem", "out of memory")                                        \
    X (CM_E_TIMEOUT, 22, "timeout", "the operation timed out")                          \
    X (CM_E_UNAUTHORIZED, 23, "unauthorized",                                           \
       "authentication required: send a valid API key")                                 \
    X (CM_E_UNAVAILABLE, 24, "unavailable",                                             \
       "a service needed for this is not reachable; retry")                             \
    X (CM_E_CORRUPT, 25, "corrupt", "stored data is corrupt; restore from a backup")    \
    X (CM_E_SCHEMA, 26, "schema",                                                       \
       "the data directory was written by a newer Corral; upgrade")                     \
    X (CM_E_UNKNOWN_TYPE, 27, "unknown_type", "unknown message type")                   \
    X (CM_E_CANCELLED, 28, "cancelled", "the operation was cancelled")                  \
    X (CM_E_MEMORY_LIMIT, 29, "memory_limit",                                           \
       "a command of the turn exceeded the memory limit and was killed")                \
    X (CM_E_BUDGET, 30, "budget",                                                       \
       "the token or cost budget is spent; raise it or start a new session")

typedef enum {
    CM_OK = 0,
#define CM_ERR_ENUM(sym, val, name, msg) sym = -(val),
    CM_ERRORS (CM_ERR_ENUM)
#undef CM_ERR_ENUM
} cm_err_t;

//  Stable short name ("busy") of a code; "unknown" for a value not in the
//  table.  Accepts the code negative or positive.  Static storage.
const char *cm_errname (int code);

//  Human message for a code; static storage.
const char *cm_strerror (int code);

//  Code for a short name, or 0 if the name is not in the table.
int cm_errcode (const char *name);

//  Write a message for a person into err (errlen bytes; either may be
//  NULL/0) and return code, so a failure reads: return cm_err_set (err,
//  errlen, CM_E_INVALID, "field %s ...", name);
int cm_err_set (char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

#endif
