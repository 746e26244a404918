# corral-gateway stops cleanly (exit 0, and in an ASan build no leak) with
# calls to a stopped store, session service and monitor in flight.
add_test(NAME e2e_gw_stop COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_gw_stop.py
                                  ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_gw_stop PROPERTIES LABELS e2e TIMEOUT 120)
