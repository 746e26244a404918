# corral-monitor through the gateway: readiness flips when the store, the
# session service, the last worker or the monitor is killed and comes back;
# /metrics of the whole system after real turns, through promtool; hostile
# bytes on the monitor's sockets.  Needs promtool (scripts/setup.sh).
add_test(NAME e2e_monitor COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_monitor.py
                                  ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_monitor PROPERTIES LABELS e2e TIMEOUT 300)
