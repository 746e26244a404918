# e2e_ws_extensions: _corral/session/history, _corral/usage,
# _corral/session/detach and the _corral/session/state notification.
add_test(NAME e2e_ws_extensions
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_ws_extensions.py ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_ws_extensions PROPERTIES LABELS e2e TIMEOUT 120)
