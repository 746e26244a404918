# WebSocket benchmarks for the gateway (DESIGN §14), included from
# bench/CMakeLists.txt.  Not tests: never registered with ctest.
#
# corral-ws-idle: many idle WebSocket connections against one server and
# the server's RSS per connection (bench/ws_idle.c).
add_executable(corral-ws-idle ${CMAKE_CURRENT_LIST_DIR}/ws_idle.c)
target_link_libraries(corral-ws-idle PRIVATE corral_bench_proc PkgConfig::CRYPTO)

# corral-fanout-emit: the event source of bench/fanout_load.mjs --target
# corral, a synthetic worker emitting timestamped events into corral-session
# (bench/fanout_emit.c; bench/fanout.sh runs it).
add_executable(corral-fanout-emit ${CMAKE_CURRENT_LIST_DIR}/fanout_emit.c)
target_link_libraries(corral-fanout-emit PRIVATE corral_proto corral_common
                      PkgConfig::ZMQ corral_bench_proc)

# corral-fanout-load: the fan-out load generator in C (bench/fanout_load.c),
# the same runs and table row as bench/fanout_load.mjs at a fraction of its
# CPU; bench/fanout.sh uses it unless LOADGEN=node.
add_executable(corral-fanout-load ${CMAKE_CURRENT_LIST_DIR}/fanout_load.c)
target_link_libraries(corral-fanout-load PRIVATE corral_bench_proc PkgConfig::CRYPTO)
