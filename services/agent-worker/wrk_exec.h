/*  wrk_exec.h - run_command: one shell command as a child process that the
    worker's event loop drives without blocking.

    The child runs `/bin/sh -c <command>` with:
      - cwd: the session cwd, opened confined by wrk_path_open (O_DIRECTORY)
        and entered with fchdir in the child;
      - its own process group (pgid = pid), so timeout and cancel signal
        the command and everything it started;
      - PR_SET_PDEATHSIG(SIGKILL): if the thread that started it dies, the
        shell dies too (the getppid race after prctl is checked).  Start
        commands from the event-loop thread, which lives as long as the
        worker;
      - stdin /dev/null; stdout and stderr into one pipe, read
        non-blocking by the caller's loop;
      - a scrubbed environment (wrk_exec_env_new): provider keys and other
        secrets never reach a command;
      - every other descriptor closed (close_range), signal mask and
        dispositions reset to defaults.

    Loop contract: poll the descriptors from wrk_exec_fds (both POLLIN: the
    output pipe, and a pidfd that becomes readable when the shell exits),
    and call wrk_exec_service when either is ready and no later than
    wrk_exec_deadline.  Clock: cm_mono_ms() (cm_time.h).  Where
    pidfd_open(2) is missing (kernel < 5.3, or under valgrind) there is no
    pidfd: fds[1] is -1 and wrk_exec_deadline is at most WRK_EXEC_POLL_MS
    ahead, so the same loop notices the exit by polling.

    Ending:
      - the shell exits: remaining output is read; members of its process
        group still running (background jobs) are killed with SIGKILL, and
        whatever they wrote before is kept.  Background jobs do not outlive
        the command; a process that escaped the group (setsid) is not
        touched, and is reaped by wrk_exec_reap_orphans if the worker is a
        subreaper (wrk_exec_subreaper);
      - timeout: SIGTERM to the group at the deadline, SIGKILL to the group
        grace_ms later if the shell is still alive;
      - cancel: SIGKILL to the group at once.
    The shell is reaped by wrk_exec_service (or wrk_exec_destroy); the group
    is only ever signalled while the shell is unreaped, so its pgid cannot
    have been reused by then.

    Output cap: the first head_max bytes and the last tail_max bytes are
    kept; when more came, wrk_exec_output joins them with a line
    "… [N bytes truncated] …".
*/
#ifndef WRK_EXEC_H
#define WRK_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wrk_path.h"
#include "wrk_tools.h"

#define WRK_EXEC_TIMEOUT_DEFAULT_MS 120000
#define WRK_EXEC_TIMEOUT_MAX_MS     600000
#define WRK_EXEC_GRACE_DEFAULT_MS   2000
#define WRK_EXEC_HEAD_DEFAULT       (16u * 1024)
#define WRK_EXEC_TAIL_DEFAULT       (16u * 1024)
#define WRK_EXEC_KEEP_MAX           (1u << 20) //  head_max and tail_max each
#define WRK_EXEC_READ_SLICE         (1u << 20) //  bytes read per service call
#define WRK_EXEC_DEFAULT_PATH       "/usr/local/bin:/usr/bin:/bin"
#define WRK_EXEC_POLL_MS            50 //  service interval without a pidfd

typedef struct {
    const wrk_scope_t *scope; //  the command runs in scope->cwd
    const char *command;      //  for /bin/sh -c; non-empty, at most WRK_TOOL_COMMAND_MAX
    int64_t timeout_ms;       //  0: WRK_EXEC_TIMEOUT_DEFAULT_MS; above the max: the max
    int64_t grace_ms;         //  SIGTERM to SIGKILL; 0: WRK_EXEC_GRACE_DEFAULT_MS
    size_t head_max;          //  0: WRK_EXEC_HEAD_DEFAULT; at most WRK_EXEC_KEEP_MAX
    size_t tail_max;          //  0: WRK_EXEC_TAIL_DEFAULT; at most WRK_EXEC_KEEP_MAX
    //  The command's environment, NULL-terminated "NAME=value" strings,
    //  read only during wrk_exec_start.  NULL: wrk_exec_env_new (environ,
    //  NULL).  Pass a list built by wrk_exec_env_new; it is used as given.
    char *const *env;
} wrk_exec_opts_t;

typedef struct wrk_exec_s wrk_exec_t;

//  --------------------------------------------------------------------------
//  Environment

//  Build a command environment from `parent` (NULL-terminated
//  "NAME=value", e.g. environ; NULL for none):
//    kept from parent, if not denied: PATH HOME USER LOGNAME SHELL TMPDIR
//      LANG LC_ALL LC_CTYPE LC_MESSAGES TZ;
//    defaults: PATH=WRK_EXEC_DEFAULT_PATH when missing, LANG=C.UTF-8 when
//      neither LANG nor LC_ALL is set;
//    always: TERM=dumb PAGER=cat GIT_PAGER=cat GIT_TERMINAL_PROMPT=0;
//    then `extra` ("NAME=value" strings, NULL-terminated, may be NULL),
//      each replacing an entry of the same name.
//  On success returns 0 and *out, a new list the caller frees with
//  wrk_exec_env_destroy.  Errors:
//    CM_E_FORBIDDEN  an extra name is denied (wrk_exec_env_denied)
//    CM_E_INVALID    an extra is not NAME=value with NAME [A-Za-z_][A-Za-z0-9_]*
//    CM_E_NOMEM
int wrk_exec_env_new (char *const *parent, const char *const *extra, char ***out);

//  Free a list from wrk_exec_env_new and NULL the pointer.  Idempotent.
void wrk_exec_env_destroy (char ***env);

//  Whether a variable name (without '=') may never reach a command, case
//  insensitively: names that end in _KEY or contain API_KEY, TOKEN, SECRET,
//  PASSWORD, PASSWD, CREDENTIAL, PRIVATE, or that start with CORRAL_, AWS_,
//  AZURE_, GOOGLE_, GCP_, OPENAI_, ANTHROPIC_, GITHUB_, GH_, GITLAB_, HF_.
bool wrk_exec_env_denied (const char *name);

//  --------------------------------------------------------------------------
//  One command

//  Start a command.  On success returns 0 and *out (owned by the caller:
//  wrk_exec_destroy).  The shell has been exec'd when this returns (a
//  failure before exec is reported here, not as output).  Errors (message
//  in err, *out NULL, no process left behind):
//    CM_E_INVALID    opts, command or scope missing; command empty or too
//                    long; a cap over WRK_EXEC_KEEP_MAX; negative times
//    CM_E_FORBIDDEN, CM_E_NOT_FOUND
//                    the session cwd (from wrk_path_open)
//    CM_E_NOMEM
//    CM_E_IO         pipe, fork, pidfd_open (other than ENOSYS), or the
//                    child's setup or exec failed (what and errno text in err)
int wrk_exec_start (const wrk_exec_opts_t *opts, wrk_exec_t **out, char *err,
                    size_t errlen);

//  The descriptors to poll for POLLIN: fds[0] the output pipe, fds[1] the
//  pidfd; an entry is -1 once it is no longer needed (output at end of
//  file; finished), and fds[1] is -1 where there is no pidfd (see the top
//  of this file).  Owned by x: do not close.  Returns how many are >= 0.
int wrk_exec_fds (const wrk_exec_t *x, int fds[2]);

//  Read available output (at most WRK_EXEC_READ_SLICE bytes a call),
//  notice the shell's exit, and apply the timeout at now_ms.  Returns 1
//  when the command is finished (then and after: exit status, output and
//  result are final, and the descriptors are closed), 0 while it runs.
//  Never blocks.
int wrk_exec_service (wrk_exec_t *x, int64_t now_ms);

//  When the caller must call wrk_exec_service next even if no descriptor
//  is ready: the timeout deadline, or the SIGKILL time after a timeout's
//  SIGTERM (without a pidfd: no later than now + WRK_EXEC_POLL_MS);
//  INT64_MAX once finished.
int64_t wrk_exec_deadline (const wrk_exec_t *x);

//  Kill the command's process group with SIGKILL now.  The caller keeps
//  servicing it until finished (quick), or destroys it.  No effect once
//  finished.
void wrk_exec_cancel (wrk_exec_t *x);

//  State and outcome.
bool wrk_exec_finished (const wrk_exec_t *x);
pid_t wrk_exec_pid (const wrk_exec_t *x);           //  the shell (also its pgid)
int wrk_exec_exit_code (const wrk_exec_t *x);       //  0-255; -1 if signalled or running
int wrk_exec_signal (const wrk_exec_t *x);          //  the killing signal, or 0
bool wrk_exec_timed_out (const wrk_exec_t *x);      //  the deadline passed
bool wrk_exec_cancelled (const wrk_exec_t *x);      //  wrk_exec_cancel came first
bool wrk_exec_truncated (const wrk_exec_t *x);      //  output over head_max + tail_max
size_t wrk_exec_output_total (const wrk_exec_t *x); //  bytes the command wrote
int64_t wrk_exec_elapsed_ms (const wrk_exec_t *x);  //  start to finish (or now)

//  The output kept so far (head, truncation line, tail), raw bytes as the
//  command wrote them.  Owned by x; valid until the next call on x.  *len
//  (may be NULL) gets its length; the text is also NUL-terminated.  NULL
//  only when out of memory.
const char *wrk_exec_output (wrk_exec_t *x, size_t *len);

//  The tool result for the model from a finished command: the output (as
//  UTF-8) then one status line - "[exit code N]", "[killed by signal
//  SIGX]", "[timed out after N ms; killed]" or "[cancelled]" - and a line
//  about truncation when it applies.  is_error unless the exit code is 0.
//  Returns 0 (free *out with wrk_tool_result_free), CM_E_INVALID if x has
//  not finished, or CM_E_NOMEM.
int wrk_exec_result (wrk_exec_t *x, wrk_tool_result_t *out);

//  Destroy: a command still running is killed (SIGKILL to its group) and
//  reaped, which waits for the shell to die.  Idempotent; NULLs *x.
void wrk_exec_destroy (wrk_exec_t **x);

//  --------------------------------------------------------------------------
//  Orphans

//  Make this process a child subreaper (PR_SET_CHILD_SUBREAPER): orphaned
//  descendants - a command's background job that called setsid, or group
//  members left when the shell died - become its children instead of
//  init's.  Call once at worker start.  Returns 0 or CM_E_IO.
int wrk_exec_subreaper (void);

//  Reap every exited child of this process except those in keep (pids the
//  caller still waits for itself: every live wrk_exec_pid, agent
//  subprocesses...).  Children are found in /proc/self/task/*/children, so
//  a kept child's status is never taken.  Returns how many were reaped
//  (the worker reports it), or CM_E_IO when /proc cannot be read.
int wrk_exec_reap_orphans (const pid_t *keep, size_t nkeep);

#endif
