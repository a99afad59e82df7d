# cli: the `berth` command-line tool (issue 4): read-only journal inspection,
# audit, time travel, what-if simulation, the timeline picture and `berth gen`.
# The scenario reader is shared with the tests' journal builder.
add_library(berth_cli_scenario STATIC ${CMAKE_CURRENT_LIST_DIR}/cli_scenario.c)
target_include_directories(berth_cli_scenario PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(berth_cli_scenario PUBLIC berth_core)

add_executable(berth
  ${CMAKE_CURRENT_LIST_DIR}/berth.c
  ${CMAKE_CURRENT_LIST_DIR}/guard.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_common.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_feed.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_inspect.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_rebuild.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_backup.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_whatif.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_gen.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_timeline.c
  ${CMAKE_CURRENT_LIST_DIR}/cli_etcd.c)
target_include_directories(berth PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(berth PRIVATE berth_cli_scenario berth_replay berth_journal_etcd berth_journal berth_core berth_gen Threads::Threads)

