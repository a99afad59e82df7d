# tests/journal.cmake — the journal module's tests: the record codec and the
# LMDB store through journal.h (ctest `journal`), plus journal_speed, a
# program that prints codec and append figures (never a pass/fail test).
# test_journal also links LMDB itself, to plant gaps and flipped bytes that
# the journal API can never write.
add_executable(test_journal ${CMAKE_CURRENT_SOURCE_DIR}/test_journal.c)
target_link_libraries(test_journal PRIVATE berth_journal PkgConfig::CHECK PkgConfig::LMDB
                      PkgConfig::MSGPACK PkgConfig::CRYPTO Threads::Threads)
add_test(NAME journal COMMAND test_journal)
# Only guards against a hang; no assertion is timed.
set_tests_properties(journal PROPERTIES TIMEOUT 300)

add_executable(journal_speed ${CMAKE_CURRENT_SOURCE_DIR}/journal_speed.c)
target_link_libraries(journal_speed PRIVATE berth_journal PkgConfig::CRYPTO)

# The commit log (journal/commit_log.h) beside a real LMDB journal (ctest
# `commit_log`).
add_executable(test_commit_log ${CMAKE_CURRENT_SOURCE_DIR}/test_commit_log.c)
target_link_libraries(test_commit_log PRIVATE berth_journal PkgConfig::CHECK PkgConfig::LMDB
                      PkgConfig::MSGPACK PkgConfig::CRYPTO Threads::Threads)
add_test(NAME commit_log COMMAND test_commit_log)
# Only guards against a hang; no assertion is timed.
set_tests_properties(commit_log PROPERTIES TIMEOUT 300)
