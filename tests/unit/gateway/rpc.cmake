# gw_rpc: framing, rejections, builders and the error-code table.  The
# test also checks that docs/protocol.md lists every code.
corral_unit_test(test_gw_rpc SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_gw_rpc.c LIBS corral_gw_rpc)
target_compile_definitions(test_gw_rpc PRIVATE
  CORRAL_CLIENT_PROTOCOL_DOC="${PROJECT_SOURCE_DIR}/docs/protocol.md")
