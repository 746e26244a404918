# gw_render: bus events and session records as the JSON clients see (ACP
# session/update and _corral/* notifications, REST objects).  Pure: no
# sockets, no libwebsockets, so unit-testable and fuzzable on its own.
add_library(corral_gw_render STATIC ${CMAKE_CURRENT_SOURCE_DIR}/gw_render.c)
target_include_directories(corral_gw_render PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(corral_gw_render PUBLIC corral_gw_rpc corral_proto corral_common
                                              PkgConfig::JANSSON)
