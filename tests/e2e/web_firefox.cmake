# e2e_web_firefox: the web page (gateway/web) in Debian's headless Firefox ESR,
# driven by playwright-core (tests/e2e/node_modules) over WebDriver BiDi
# (its "moz-firefox" channel: stock Firefox, not playwright's patched
# build), against a whole stack with the same scripted model and prices as
# e2e_web.  web_firefox.test.mjs signs in (a wrong key first), creates a
# session, streams Markdown, approves a write and an edit (diff cards, the
# file in the workspace), queues a prompt, cancels with Esc, and checks
# 360 px, dark from the theme button, and that the page logs no errors.
# Screenshots: <build>/tests/e2e/web-artifacts/firefox-*.png.
find_program(CORRAL_NODE node)
find_program(CORRAL_FIREFOX NAMES firefox-esr firefox)
if(NOT CORRAL_NODE OR NOT CORRAL_FIREFOX)
  message(STATUS "node or firefox-esr not found: e2e_web_firefox is not registered (scripts/setup.sh installs both)")
  return()
endif()
add_test(NAME e2e_web_firefox
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/corral_stack.py ${CMAKE_BINARY_DIR}
                 --script ${CMAKE_CURRENT_SOURCE_DIR}/web_script.json
                 --worker-args "--prices ${CMAKE_CURRENT_SOURCE_DIR}/web_prices.json"
                 -- ${CORRAL_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/web_firefox.test.mjs)
set_tests_properties(e2e_web_firefox PROPERTIES LABELS e2e TIMEOUT 120
  ENVIRONMENT "CORRAL_WEB_ARTIFACTS=${CMAKE_BINARY_DIR}/tests/e2e/web-artifacts;CORRAL_FIREFOX=${CORRAL_FIREFOX}")
