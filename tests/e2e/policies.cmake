# Policies as a client sees them, through the gateway (docs/policies.md):
# idle -> hibernate and resume, a stuck turn cancelled, max duration.
add_test(NAME e2e_policies COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_policies_ws.py
                                   ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_policies PROPERTIES LABELS e2e TIMEOUT 300)
