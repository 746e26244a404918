# The WebSocket commands (acp, tail, chat) of the corral binary, over
# cli_ws.c: a libwebsockets client speaking ACP, JSON with jansson.
# (Owned by the cli-ws part; included from cli/CMakeLists.txt.)
target_sources(corral PRIVATE cli_ws.c cmd_acp.c cmd_tail.c cmd_chat.c)
target_link_libraries(corral PRIVATE PkgConfig::LWS PkgConfig::JANSSON)
