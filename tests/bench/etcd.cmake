# etcd.cmake — bench_etcd_put, etcd's own put throughput over its JSON
# gateway, run by bench_etcd.sh beside berth on etcd and berth on LMDB
# (issue 6, "Speed"; docs/etcd.md). Not a ctest test: figures, not pass/fail.
berth_require_pc(BENCH_CURL libcurl libcurl4-openssl-dev)
add_executable(bench_etcd_put ${CMAKE_CURRENT_SOURCE_DIR}/bench_etcd_put.c)
target_link_libraries(bench_etcd_put PRIVATE PkgConfig::BENCH_CURL PkgConfig::CRYPTO Threads::Threads)
