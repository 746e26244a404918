# API keys and admission limits (gateway/auth.cmake).
corral_unit_test(test_gw_auth SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_gw_auth.c
                 LIBS corral_gw_auth)
corral_unit_test(test_gw_ratelimit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_gw_ratelimit.c
                 LIBS corral_gw_auth)
