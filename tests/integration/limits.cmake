# Limits end to end (docs/limits.md): the memory limit on a command's tree,
# orphans of a killed worker, session and key budgets.
add_test(NAME limits_end_to_end
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_limits.py
                 $<TARGET_FILE:corral-store> $<TARGET_FILE:corral-session>
                 $<TARGET_FILE:corral-worker> $<TARGET_FILE:corral-fake-model>)
set_tests_properties(limits_end_to_end PROPERTIES LABELS integration TIMEOUT 300)
