# Policies end to end (docs/policies.md): max duration, idle -> hibernate,
# stuck loops, with corral-monitor on tiny limits.
add_test(NAME policies_end_to_end
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_policies.py
                 $<TARGET_FILE:corral-store> $<TARGET_FILE:corral-session>
                 $<TARGET_FILE:corral-worker> $<TARGET_FILE:corral-fake-model>
                 $<TARGET_FILE:corral-monitor>)
set_tests_properties(policies_end_to_end PROPERTIES LABELS integration TIMEOUT 300)

# corral-monitor's policy engine against a session service that misbehaves
# (census pages that do not advance) or is absent (a prompt stop).
add_test(NAME monitor_peers
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_monitor_peers.py
                 $<TARGET_FILE:corral-monitor>)
set_tests_properties(monitor_peers PROPERTIES LABELS integration TIMEOUT 120)
