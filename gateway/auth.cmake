# API keys and admission limits (issue 4, "Keys and tenants", "Hygiene"):
# a library the gateway server links, and the corral-keys admin CLI.
add_library(corral_gw_auth STATIC ${CMAKE_CURRENT_SOURCE_DIR}/gw_auth.c
                                  ${CMAKE_CURRENT_SOURCE_DIR}/gw_ratelimit.c)
target_include_directories(corral_gw_auth PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(corral_gw_auth PUBLIC corral_common corral_proto PkgConfig::CRYPTO)

add_executable(corral-keys ${CMAKE_CURRENT_SOURCE_DIR}/keys_main.c)
target_link_libraries(corral-keys PRIVATE corral_gw_auth)
