# e2e_acp_sdk: the official ACP TypeScript SDK (@agentclientprotocol/sdk and
# ws from tests/e2e/node_modules, `npm ci` there) as a client of a whole
# stack: initialize, session/new, prompts with streamed updates and an
# answered permission request, session/cancel, session/load replay on a new
# connection, session/list, another tenant refused, session/close.  Every
# frame the gateway sends is validated against the SDK's ACP v1 schema.
# The scripted model answers from acp_sdk_script.json.
find_program(CORRAL_NODE node)
if(NOT CORRAL_NODE)
  message(STATUS "node not found: e2e_acp_sdk is not registered (scripts/setup.sh installs Node.js)")
  return()
endif()
if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/node_modules/@agentclientprotocol/sdk/package.json)
  message(WARNING "tests/e2e/node_modules is missing: run `npm ci` in tests/e2e, or e2e_acp_sdk fails")
endif()
add_test(NAME e2e_acp_sdk
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/corral_stack.py ${CMAKE_BINARY_DIR}
                 --script ${CMAKE_CURRENT_SOURCE_DIR}/acp_sdk_script.json
                 -- ${CORRAL_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/acp_sdk.test.mjs)
set_tests_properties(e2e_acp_sdk PROPERTIES LABELS e2e TIMEOUT 300)
