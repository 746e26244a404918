# gw_rpc: JSON-RPC 2.0 framing for /acp (parse one frame, build replies,
# the cm code -> JSON-RPC code table).  No libwebsockets: unit-testable
# and fuzzable on its own.
add_library(corral_gw_rpc STATIC ${CMAKE_CURRENT_SOURCE_DIR}/gw_rpc.c)
target_include_directories(corral_gw_rpc PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(corral_gw_rpc PUBLIC corral_common PkgConfig::JANSSON)
