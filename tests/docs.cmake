# Docs generated from the code must match it: docs/operations.md's table of
# every CORRAL_* setting comes from each binary's --help.
add_test(NAME docs_settings_current
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/scripts/doc_settings.py
                 ${PROJECT_BINARY_DIR} --check)
set_tests_properties(docs_settings_current PROPERTIES LABELS integration TIMEOUT 60)
