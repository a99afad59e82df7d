# server.cmake — bench_server, berth's own RESP load generator (issue 3,
# "Speed"). bench_server.sh runs it beside redis-benchmark and pgbench; see
# docs/bench-server.md. Not a ctest test: figures, not pass/fail.
add_executable(bench_server ${CMAKE_CURRENT_SOURCE_DIR}/bench_server.c)
target_link_libraries(bench_server PRIVATE Threads::Threads)
