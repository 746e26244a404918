# corral-keys against the real corral-store: create, list, revoke.
add_executable(test_keys_cli ${CMAKE_CURRENT_SOURCE_DIR}/test_keys_cli.c)
target_link_libraries(test_keys_cli PRIVATE corral_it corral_gw_auth)
add_dependencies(test_keys_cli corral-store corral-keys)
add_test(NAME keys_cli COMMAND test_keys_cli $<TARGET_FILE:corral-store>
                                             $<TARGET_FILE:corral-keys>)
set_tests_properties(keys_cli PROPERTIES LABELS integration TIMEOUT 120)
