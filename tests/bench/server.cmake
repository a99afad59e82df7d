# server.cmake — bench_server, berth's own RESP load generator (issue 3,
# "Speed"). bench_server.sh runs it beside redis-benchmark and pgbench; see
# docs/bench-server.md. Not a ctest test: figures, not pass/fail.
add_executable(bench_server ${CMAKE_CURRENT_SOURCE_DIR}/bench_server.c)
target_link_libraries(bench_server PRIVATE Threads::Threads)

# A tiny run against a real berthd (no peers needed): the generator adds its
# workers, cycles with no error reply and leaves nothing deployed.
if(TARGET berthd)
  add_test(NAME bench_server_smoke
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BENCH_SERVER=$<TARGET_FILE:bench_server>
                   bash ${PROJECT_SOURCE_DIR}/tests/server/bench_smoke.sh)
  set_tests_properties(bench_server_smoke PROPERTIES TIMEOUT 60 LABELS server)
  # The loop/committer hand-off across history folds and snapshots.
  add_test(NAME server_handoff
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BENCH_SERVER=$<TARGET_FILE:bench_server>
                   bash ${PROJECT_SOURCE_DIR}/tests/server/handoff.sh)
  set_tests_properties(server_handoff PROPERTIES TIMEOUT 240 LABELS server)
  # Batches taking turns between the loop and the committer under load.
  add_test(NAME server_commit_alternate
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BENCH_SERVER=$<TARGET_FILE:bench_server>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${PROJECT_SOURCE_DIR}/tests/server/commit_alternate.sh)
  set_tests_properties(server_commit_alternate PROPERTIES TIMEOUT 120 LABELS server)
  # INFO journal's history_fold_*, and the fold keeping up with every core busy.
  add_test(NAME server_fold_backlog
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BENCH_SERVER=$<TARGET_FILE:bench_server>
                   bash ${PROJECT_SOURCE_DIR}/tests/server/fold_backlog.sh)
  set_tests_properties(server_fold_backlog PROPERTIES TIMEOUT 90 LABELS server)
endif()
