/*  it_store.h - integration-test harness: run the real corral-store binary
    in a scratch directory and talk to it over ZeroMQ.

    A test gets an it_store_t from it_store_new(), which creates a fresh
    mkdtemp directory holding the data dir, the ipc socket and the store's
    log.  it_store_start() fork/execs the binary on
        --data-dir <dir>/data --store-endpoint ipc://<dir>/store.sock
    with stderr appended to <dir>/store.log (CORRAL_* variables are removed
    from its environment so only these flags configure it).  The child is
    killed by the kernel if the test dies (PR_SET_PDEATHSIG).

    Cleanup: the stores live in this module (so they outlive main's frame
    for the exit handler) and every scratch dir is registered; at exit (normal or
    through IT_CHECK's failure path) each running child is killed with
    SIGKILL and reaped and each scratch directory removed.  On failure the
    tail of the store's log is printed first.  That registry is the test
    process's only global state; it exists so that no failure path can leak
    a process or a directory.

    Every wait is bounded: functions that wait take a timeout in ms.
*/
#ifndef IT_STORE_H
#define IT_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "cm_error.h"
#include "proto_rpc.h"

#define IT_DIR_MAX  80  //  scratch dirs are short: ipc paths must fit sockaddr_un
#define IT_PATH_MAX 128 //  paths inside a scratch dir

typedef struct {
    const char *binary;
    char dir[IT_DIR_MAX];        //  scratch root (removed at exit)
    char data_dir[IT_PATH_MAX];  //  <dir>/data
    char sock_path[IT_PATH_MAX]; //  <dir>/store.sock
    char endpoint[IT_PATH_MAX];  //  ipc://<dir>/store.sock
    char log_path[IT_PATH_MAX];  //  <dir>/store.log
    pid_t pid;                   //  0 when not running
    int starts;
} it_store_t;

//  Fail the test: print "FAIL file:line: message" and exit(1) (the exit
//  handler kills the children and removes the scratch dirs).
#define IT_FAIL(...) it_fail (__FILE__, __LINE__, __VA_ARGS__)
#define IT_CHECK(cond, ...)                 \
    do {                                    \
        if (!(cond)) IT_FAIL (__VA_ARGS__); \
    } while (0)
//  Check that an expression returning a cm code returned 0.
#define IT_OK(expr)                                                         \
    do {                                                                    \
        int it_rc_ = (expr);                                                \
        if (it_rc_) IT_FAIL ("%s returned %s", #expr, cm_errname (it_rc_)); \
    } while (0)

void it_fail (const char *file, int line, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4), noreturn));

//  A store for the binary at path, with its own scratch dir; not started.
//  Fails the test if the directory cannot be made.  Owned by this module
//  (released at exit); at most IT_MAX_STORES per process.
#define IT_MAX_STORES 4
it_store_t *it_store_new (const char *binary);

//  Start the store with the standard flags plus extra_args (NULL-terminated,
//  may be NULL).  Removes a stale socket file first.  Does not wait.
void it_store_start (it_store_t *self, const char *const *extra_args);

//  Wait until the store answers store.stats on a fresh client; returns that
//  client (owned by the caller) and copies the epoch into epoch (may be
//  NULL; CM_UUID_STR_LEN bytes).  Fails the test if the child exits or
//  timeout_ms passes first.
proto_rpc_t *it_store_connect (it_store_t *self, int timeout_ms, char *epoch);

//  Send sig to the running store.
void it_store_signal (it_store_t *self, int sig);

//  Wait up to timeout_ms for the store to exit.  Returns true with its
//  wait status in *status, or false if it is still running.
bool it_store_wait_exit (it_store_t *self, int timeout_ms, int *status);

//  SIGKILL and reap (bounded; fails the test if the child will not die).
void it_store_kill (it_store_t *self);

//  Run binary with argv (argv[0] is the binary) and wait up to timeout_ms
//  for it to exit, capturing up to errcap-1 bytes of its stderr into err
//  (NUL-terminated).  Returns its wait status; fails the test on timeout.
int it_run_capture (const char *const *argv, int timeout_ms, char *err, size_t errcap);

//  Make a fresh scratch directory (registered for removal) into out.
void it_tmpdir (char *out, size_t outlen);

//  Append to buf the event the tests store as (session, seq): an encoded
//  agent_message_chunk whose session, seq, ts and text all derive from
//  (sid, seq), so stored bytes identify themselves and a resend is
//  byte-identical.  About 100 bytes.
void it_event (proto_buf_t *buf, const cm_uuid_t *sid, uint64_t seq);

//  Check that data is exactly it_event (sid, seq) and decodes to an event
//  that names that session and seq.  Returns NULL if so, else what is
//  wrong (static storage).
const char *it_event_check (proto_msg_t *scratch, const void *data, size_t size,
                            const cm_uuid_t *sid, uint64_t seq);

//  Milliseconds on the monotonic clock.
int64_t it_now_ms (void);

//  Deterministic PRNG (splitmix64).
uint64_t it_rand (uint64_t *state);

#endif
