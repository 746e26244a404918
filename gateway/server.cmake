# corral-gateway: the lws server around the libraries above (gw_rpc,
# gw_auth, gw_render).  One loop, no threads: see gw.h.
add_executable(corral-gateway
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_main.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_server.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_listen.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_bus.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_conn.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_ev.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_watch.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_acp.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_acp_session.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_acp_prompt.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_acp_extra.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_keys.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_http.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_rest.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_metrics.c
  ${CMAKE_CURRENT_SOURCE_DIR}/gw_static.c)
target_link_libraries(corral-gateway PRIVATE corral_gw_render corral_gw_rpc corral_gw_auth
                                             corral_proto corral_common PkgConfig::LWS ${LIBEV_LIBRARY}
                                             PkgConfig::ZMQ PkgConfig::JANSSON)
# The web page's folder in the source tree: the default of --static-dir, so
# a build tree run from the checkout serves it without a flag.
target_compile_definitions(corral-gateway PRIVATE GW_WEB_DIR="${CMAKE_CURRENT_SOURCE_DIR}/web")
