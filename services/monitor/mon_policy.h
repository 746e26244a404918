/*  mon_policy.h - corral-monitor's policy engine (DESIGN §8): session max
    duration, idle timeout -> hibernate, stuck loops.  The monitor decides;
    corral-session carries out (services/session/sess_policy.c).

    Two layers:
      the engine  (mon_policy_engine.c) - pure decisions: fed events,
                  census entries and action results with the time passed
                  in, it answers which actions to send.  No sockets, no
                  clock of its own, so unit tests drive it with synthetic
                  events and a fake clock.
      the plug-in (mon_policy.c) - the engine on the bus, inside the
                  monitor's loop: a SUB on the session service's events
                  (every session, topic "s/"), a DEALER to the session
                  service's client API for monitor.census and
                  monitor.action.

    What the engine tracks per live session: its state, when it was opened
    (created, or resumed after closing), its last activity (any event but
    a policy event), the running turn, when that turn last produced output
    (any event of the turn but policy and state events; a wait for a
    permission answer does not count as silence), and the tool calls of the
    turn (kind, title, arguments) with a count each.

    Decisions, every tick (MON_POLICY_TICK_MS), at most one action in
    flight per session, the most important first:
      close      max_duration   age >= max duration (from opened)
      cancel     stuck          a warned repeat reached 2 x N, or a warned
                                silence reached 2 x T
      hibernate  idle           state ready/idle, no turn, last activity
                                >= idle timeout ago
      warn       max_duration   age >= 90 % of max duration, once, with the
                                time remaining
      warn       stuck          one tool call (same kind, title, arguments)
                                made N times in the turn; or no output from
                                the running turn for T
    "Goes on" (warning, then cancel): the same call reaches 2 x N in the
    same turn, or the silence lasts 2 x T (any output resets the silence
    and allows a new warning).  A cancel always follows a warning of the
    same turn.  Every limit 0 switches its policy off.

    Actions are idempotent at the session service, so an unanswered one is
    sent again after MON_POLICY_RETRY_MS.  An answer of not_found forgets
    the session; other errors (busy, conflict: the state moved meanwhile)
    end that action; unavailable/timeout try again later.

    Knowing the sessions: events from the moment the SUB connects, and a
    census (monitor.census, paged) at start, whenever the SUB (re)connects
    (the session service restarted), and every census interval.  A census
    page is newer than every event that came before the census began, so
    it replaces what they said (state, running turn, last activity) -
    except for a session that had an event since the census began; and a
    tracked session no page lists, with no event since, is forgotten
    (closed or deleted meanwhile).  A session first seen by an event of
    its own is opened at its UUIDv7's time until the census says otherwise.
*/
#ifndef MON_POLICY_H
#define MON_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_id.h"
#include "proto.h"

#define MON_POLICY_TICK_MS     250     //  decisions this often
#define MON_POLICY_RETRY_MS    5000    //  an unanswered action is sent again
#define MON_POLICY_WARN_PCT    90      //  duration warning at this share
#define MON_POLICY_MAX_SESSION 1000000 //  sessions tracked at most
#define MON_POLICY_SIGS        32      //  distinct tool calls counted per turn
#define MON_POLICY_TITLE_MAX   120     //  bytes of a tool title in a message
#define MON_POLICY_MSG_MAX     512     //  bytes of an action's message
#define MON_POLICY_CENSUS_PAGE 1000    //  sessions per census request
#define MON_POLICY_CALL_MS     5000    //  a census page unanswered this long fails

typedef struct {
    char *events_endpoint;    //  the session service's PUB (SUB connects)
    char *session_endpoint;   //  its client API (DEALER connects)
    int64_t max_duration_ms;  //  0 = off
    int64_t idle_timeout_ms;  //  0 = off
    int64_t stuck_repeat;     //  N; 0 = off
    int64_t stuck_silence_ms; //  T; 0 = off
    int64_t census_ms;        //  full census this often (0 = only on (re)connect)
} mon_policy_config_t;

/* ---- the engine -------------------------------------------------- */

typedef struct mon_policy_engine mon_policy_engine_t;

//  One event as the engine needs it (strings borrowed for the call).
typedef struct {
    proto_type_t type; //  PROTO_EV_*
    cm_uuid_t session;
    cm_uuid_t turn;         //  nil when the event has none
    int64_t ts;             //  the event's time, Unix ms
    const char *state;      //  EV_STATE: the new state
    const char *reason;     //  EV_STATE: why (may be NULL)
    const char *tool_kind;  //  EV_TOOL_CALL (may be NULL)
    const char *tool_title; //  EV_TOOL_CALL
    const char *tool_input; //  EV_TOOL_CALL: arguments, JSON text (may be NULL)
} mon_policy_event_t;

typedef enum {
    MON_ACT_DURATION_WARN,
    MON_ACT_DURATION_CLOSE,
    MON_ACT_IDLE_HIBERNATE,
    MON_ACT_REPEAT_WARN,
    MON_ACT_REPEAT_CANCEL,
    MON_ACT_SILENCE_WARN,
    MON_ACT_SILENCE_CANCEL,
    MON_ACT_KINDS
} mon_act_kind_t;

//  An action to send as monitor.action.
typedef struct {
    uint64_t token; //  names it in mon_policy_engine_result
    mon_act_kind_t kind;
    cm_uuid_t session;
    cm_uuid_t turn;     //  the turn a stuck action is about (nil otherwise)
    const char *action; //  warn | cancel | hibernate | close (static)
    const char *policy; //  max_duration | idle | stuck (static)
    char message[MON_POLICY_MSG_MAX];
    uint64_t remaining_ms; //  duration warnings
} mon_policy_action_t;

//  A new engine; cfg is copied (its endpoints are not used here).  NULL
//  when out of memory.
mon_policy_engine_t *mon_policy_engine_new (const mon_policy_config_t *cfg);
void mon_policy_engine_destroy (mon_policy_engine_t **self_p);

//  Take in one event at now (Unix ms).
void mon_policy_engine_event (mon_policy_engine_t *self, const mon_policy_event_t *ev,
                              int64_t now);

//  A census: begin, entries (any number of pages), end.  end drops the
//  sessions neither listed nor heard of since begin (closed or deleted).
//  abort forgets a census that failed half way (nothing is dropped).
void mon_policy_engine_census_begin (mon_policy_engine_t *self);
void mon_policy_engine_census_entry (mon_policy_engine_t *self,
                                     const proto_census_entry_t *e, int64_t now);
void mon_policy_engine_census_end (mon_policy_engine_t *self);
void mon_policy_engine_census_abort (mon_policy_engine_t *self);

//  Decide at now: writes at most max actions to out and returns how many.
//  An action stays in flight until its result, or is returned again after
//  MON_POLICY_RETRY_MS with the same token.
size_t mon_policy_engine_tick (mon_policy_engine_t *self, int64_t now,
                               mon_policy_action_t *out, size_t max);

//  The session service's answer to an action: rc 0 (ok) or a cm error
//  code.  A token no longer in flight is ignored.
void mon_policy_engine_result (mon_policy_engine_t *self, const cm_uuid_t *session,
                               uint64_t token, int rc, int64_t now);

//  Sessions tracked; actions answered ok, by kind (for metrics and tests).
size_t mon_policy_engine_sessions (const mon_policy_engine_t *self);
uint64_t mon_policy_engine_done (const mon_policy_engine_t *self, mon_act_kind_t kind);

//  "1h30m", "45s", "800ms": a duration for people.  Returns out.
char *mon_policy_fmt_ms (int64_t ms, char *out, size_t outlen);

/* ---- the plug-in (mon_policy.c) ----------------------------------- */

typedef struct mon_policy mon_policy_t;

//  Open the sockets (connect: nothing needs to be up yet).  NULL when they
//  cannot be made (logged).  With every limit 0 the plug-in still runs
//  (it costs a SUB) - callers may skip it then.
mon_policy_t *mon_policy_new (const mon_policy_config_t *cfg);
void mon_policy_destroy (mon_policy_t **self_p);
//  Put its sockets into a poll set: writes 2 items, returns 2.
int mon_policy_pollitems (mon_policy_t *self, void *items /* zmq_pollitem_t[2] */);
//  After every poll: read what its sockets have, and on its tick (every
//  MON_POLICY_TICK_MS) decide and send.  now is monotonic ms.
void mon_policy_service (mon_policy_t *self, int64_t now);
//  Milliseconds until it wants service again (for the poll timeout).
int64_t mon_policy_timeout (const mon_policy_t *self, int64_t now);
//  The engine, for statistics.
const mon_policy_engine_t *mon_policy_engine (const mon_policy_t *self);
//  proto_beat fill callback (arg: the mon_policy_t) for the monitor's own
//  heartbeat: corral_policy_actions_total{policy,action} (every pair, 0
//  included) and corral_policy_sessions_tracked.
struct proto_beat;
void mon_policy_beat_fill (struct proto_beat *beat, void *arg);

#endif
