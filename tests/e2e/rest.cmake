# The gateway's HTTP side end to end (curl against a whole stack): every
# REST endpoint, JSON lines and SSE, login, static files, /metrics through
# promtool.  Needs curl and promtool (scripts/setup.sh installs them).
add_test(NAME e2e_rest COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_rest.py
                               ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_rest PROPERTIES LABELS e2e TIMEOUT 300)
