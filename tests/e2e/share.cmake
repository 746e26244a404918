# e2e_ws_share: two gateways on one port (SO_REUSEPORT) share the bus; one
# is killed mid-turn and its clients resume on the other, gap-free.
add_test(NAME e2e_ws_share
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_ws_share.py ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_ws_share PROPERTIES LABELS e2e TIMEOUT 120)
