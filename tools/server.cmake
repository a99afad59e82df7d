# server.cmake — berthd, the libev RESP front end (issue 3).
# The RESP reader and reply writer form a small library of their own so the
# unit tests (tests/resp.cmake) and fuzzers link exactly the code berthd runs.
add_library(berth_resp STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/resp.c
  ${CMAKE_CURRENT_SOURCE_DIR}/reply.c)
target_include_directories(berth_resp PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(berth_resp PUBLIC berth_core)

add_executable(berthd
  ${CMAKE_CURRENT_SOURCE_DIR}/berthd.c
  ${CMAKE_CURRENT_SOURCE_DIR}/config.c
  ${CMAKE_CURRENT_SOURCE_DIR}/networking.c
  ${CMAKE_CURRENT_SOURCE_DIR}/commands.c
  ${CMAKE_CURRENT_SOURCE_DIR}/query.c
  ${CMAKE_CURRENT_SOURCE_DIR}/batch.c
  ${CMAKE_CURRENT_SOURCE_DIR}/watch.c
  ${CMAKE_CURRENT_SOURCE_DIR}/jobs.c
  ${CMAKE_CURRENT_SOURCE_DIR}/guard.c
  ${CMAKE_CURRENT_SOURCE_DIR}/replication.c)
target_link_libraries(berthd PRIVATE berth_resp berth_replay berth_journal_etcd berth_journal berth_core
  berth_libev PkgConfig::CRYPTO Threads::Threads)

include(${PROJECT_SOURCE_DIR}/tests/resp.cmake)
