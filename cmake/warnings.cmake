# House warnings (STYLE.md), sanitizer and fuzz flags, applied to every
# target the project defines.
add_compile_options(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2
                    -Wno-unused-parameter -fno-common)
add_compile_definitions(_GNU_SOURCE)
if(CORRAL_WERROR)
  add_compile_options(-Werror)
endif()
if(CORRAL_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=all)
endif()
if(CORRAL_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CORRAL_FUZZ needs clang (use the 'fuzz' preset)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
