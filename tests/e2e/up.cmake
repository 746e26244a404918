# e2e_corral_up: `corral up` runs the whole stack from this build tree in a
# scratch folder (ipc:// endpoints, an ephemeral port); the official ACP SDK
# client runs a prompt through it, corral tap/sessions/keys are exercised,
# a killed worker comes back, SIGTERM/SIGINT/SIGKILL leave no process
# behind, CORRAL_API_KEY is honoured (test_up.py, docs/cli.md).
find_program(CORRAL_NODE node)
if(NOT CORRAL_NODE)
  message(STATUS "node not found: e2e_corral_up is not registered (scripts/setup.sh installs Node.js)")
  return()
endif()
add_test(NAME e2e_corral_up
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_up.py ${CMAKE_BINARY_DIR} ${CORRAL_NODE})
set_tests_properties(e2e_corral_up PROPERTIES LABELS e2e TIMEOUT 300)
