# Every external library comes from Debian through pkg-config
# (scripts/setup.sh installs them). IMPORTED_TARGET gives one target each.
find_package(PkgConfig REQUIRED)
pkg_check_modules(ZMQ     REQUIRED IMPORTED_TARGET libzmq)
pkg_check_modules(CZMQ    REQUIRED IMPORTED_TARGET libczmq)
pkg_check_modules(MSGPACK REQUIRED IMPORTED_TARGET msgpack)
pkg_check_modules(LMDB    REQUIRED IMPORTED_TARGET lmdb)
pkg_check_modules(CMOCKA  REQUIRED IMPORTED_TARGET cmocka)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(CURL    REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(CRYPTO  REQUIRED IMPORTED_TARGET libcrypto)
find_package(Threads REQUIRED)
pkg_check_modules(LWS     REQUIRED IMPORTED_TARGET libwebsockets)
# libev: the epoll loop the gateway hands lws (gw_server.c); no .pc file.
find_library(LIBEV_LIBRARY NAMES ev REQUIRED)
