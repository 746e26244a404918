# The corral CLI's WebSocket commands (cli/cli_ws.c) against a whole stack:
#   e2e_cli_acp_bridge  the official ACP SDK spawns `corral acp` and speaks
#                       ndjson over its stdio: a prompt with a permission
#                       request answered through the bridge, a cancel, exit
#                       0 when stdin closes (cli_acp_bridge.test.mjs)
#   e2e_cli_ws          tail (--after N, JSON and text, across a gateway
#                       restart, no gap or duplicate), the bridge's edges
#                       (pipelining, bad lines, backpressure, the gateway
#                       dying), wss:// with --ca-file, and chat in tmux
#                       (test_cli_ws.py)
find_program(CORRAL_NODE node)
if(CORRAL_NODE)
  add_test(NAME e2e_cli_acp_bridge
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/corral_stack.py ${CMAKE_BINARY_DIR}
                   --script ${CMAKE_CURRENT_SOURCE_DIR}/acp_sdk_script.json
                   -- ${CORRAL_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/cli_acp_bridge.test.mjs
                   $<TARGET_FILE:corral>)
  set_tests_properties(e2e_cli_acp_bridge PROPERTIES LABELS e2e TIMEOUT 180)
else()
  message(STATUS "node not found: e2e_cli_acp_bridge is not registered (scripts/setup.sh installs Node.js)")
endif()
# Python (Debian's python3-websockets for the helper client) and tmux for
# the chat phase; RUN_SERIAL because it restarts gateways and times a
# cancel.
add_test(NAME e2e_cli_ws
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_ws.py ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_cli_ws PROPERTIES LABELS e2e TIMEOUT 300 RUN_SERIAL TRUE
                     ENVIRONMENT CORRAL_CLI=$<TARGET_FILE:corral>)
# The client alone against a scripted fake gateway (python3-websockets):
# -32011 retried, duplicates and binary frames dropped, attach after a
# reconnect from the last seq and epoch, -32008 -> replay from 0, a lost
# prompt answer asked again with the same idempotency key, y/n/a mapped to
# option ids, refusals -> exit 3 (test_cli_ws_client.py).  No stack needed.
add_test(NAME e2e_cli_ws_client
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_ws_client.py
                 $<TARGET_FILE:corral>)
set_tests_properties(e2e_cli_ws_client PROPERTIES LABELS e2e TIMEOUT 120)
