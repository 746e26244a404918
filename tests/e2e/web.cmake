# e2e_web: the web page (gateway/web) in headless Chromium (Debian's
# chromium, driven by playwright-core from tests/e2e/node_modules) against a
# whole stack with the scripted model (web_script.json) and a price table
# (web_prices.json) so costs show.  web.test.mjs signs in, creates a
# session, streams, answers and denies permissions in two tabs, cancels,
# queues, kills and restarts the gateway mid-stream (corral_stack.py's
# CORRAL_CONTROL), reloads, and checks 360 px and the dark theme.
# Screenshots of the main states: <build>/tests/e2e/web-artifacts/.
find_program(CORRAL_NODE node)
find_program(CORRAL_CHROMIUM NAMES chromium chromium-browser)
if(NOT CORRAL_NODE OR NOT CORRAL_CHROMIUM)
  message(STATUS "node or chromium not found: e2e_web is not registered (scripts/setup.sh installs both)")
  return()
endif()
if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/node_modules/playwright-core/package.json)
  message(WARNING "tests/e2e/node_modules has no playwright-core: run `npm ci` in tests/e2e, or e2e_web fails")
endif()
add_test(NAME e2e_web
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/corral_stack.py ${CMAKE_BINARY_DIR}
                 --script ${CMAKE_CURRENT_SOURCE_DIR}/web_script.json
                 --worker-args "--prices ${CMAKE_CURRENT_SOURCE_DIR}/web_prices.json"
                 -- ${CORRAL_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/web.test.mjs)
set_tests_properties(e2e_web PROPERTIES LABELS e2e TIMEOUT 240
  ENVIRONMENT "CORRAL_WEB_ARTIFACTS=${CMAKE_BINARY_DIR}/tests/e2e/web-artifacts;CORRAL_CHROMIUM=${CORRAL_CHROMIUM}")
