# e2e_ws_limits: the memory limit (-32013) and a key's token budget (-32012)
# as a WebSocket client sees them (docs/limits.md).
add_test(NAME e2e_ws_limits
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_ws_limits.py ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_ws_limits PROPERTIES LABELS e2e TIMEOUT 180)
