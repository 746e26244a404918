# gw_render: every event type to /acp frames and REST objects, session
# records, and bad bytes (errors, never a crash).
corral_unit_test(test_gw_render SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_gw_render.c
                 LIBS corral_gw_render)
