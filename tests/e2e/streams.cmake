# Event streams over the gateway's WebSocket (tests/e2e/test_ws_streams.py):
# permission fan-out (and a pending request reaching a client that attaches
# past its event, asked once per connection), slow clients (one that stops
# reading delays nobody, is caught up from the store or closed 1008),
# session/prompt answered only
# after the turn's events, reconnect with afterSeq (plain, across a gateway
# restart, across a corral-session restart; wrong epoch / past the end ->
# -32008), and 1 000 clients attached to one session.  A whole stack from
# this build tree (corral_stack.py); Debian's python3-websockets as client.
# RUN_SERIAL: it measures latencies and opens 1 000 connections.
add_test(NAME e2e_ws_streams
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_ws_streams.py
                 ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_ws_streams PROPERTIES LABELS e2e TIMEOUT 600 RUN_SERIAL TRUE)
