# tests/resp.cmake — unit tests of berthd's RESP reader and reply writer
# (ctest `resp`). Included from tools/server.cmake, next to the berth_resp
# library it tests, and safe to include again from tests/CMakeLists.txt.
if(TARGET test_resp)
  return()
endif()
pkg_check_modules(BERTH_RESP_CHECK IMPORTED_TARGET check)
if(NOT BERTH_RESP_CHECK_FOUND)
  message(FATAL_ERROR "check not found: apt-get install -y check")
endif()
add_executable(test_resp ${CMAKE_CURRENT_LIST_DIR}/test_resp.c)
target_link_libraries(test_resp PRIVATE berth_resp PkgConfig::BERTH_RESP_CHECK)
add_test(NAME resp COMMAND test_resp)
set_tests_properties(resp PROPERTIES TIMEOUT 60)
