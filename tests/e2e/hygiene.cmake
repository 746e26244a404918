# e2e_ws_hygiene: Debian's python3-websockets (and a raw RFC 6455 client for
# frames that library will not send) against a whole stack: the bad-input
# table (each input gets its documented JSON-RPC error or close code) while
# a healthy client streams gap-free, tenant isolation over ACP, and each
# connection-hygiene setting on a gateway of its own (size and depth caps,
# pings, idle timeout, Origin allowlist, per-IP cap, per-key rate limit,
# revoked key, SIGTERM drain, TLS).  Needs python3-websockets and openssl.
add_test(NAME e2e_ws_hygiene
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_ws_hygiene.py ${CMAKE_BINARY_DIR})
set_tests_properties(e2e_ws_hygiene PROPERTIES LABELS e2e TIMEOUT 300)
