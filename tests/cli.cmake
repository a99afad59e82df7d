# cli: tests of the `berth` tool (issue 4). mkjournal builds journals through
# the real engine from scenario files; cli_test.sh drives `berth` over them.
add_executable(berth_mkjournal ${CMAKE_CURRENT_SOURCE_DIR}/cli/mkjournal.c)
target_link_libraries(berth_mkjournal PRIVATE berth_cli_scenario berth_replay berth_journal berth_core)

# berth built twice more for cli_rejudge_large: once with the feed thread
# decoding and parsing every batch, once with the judging thread doing it
# all (the default splits them by timing), each with the rejudge tracker
# and output buffer small enough to grow and flush on a test journal. The
# case checks that all three print the same bytes.
get_target_property(berth_sources berth SOURCES)
foreach(variant feed caller)
  add_executable(berth_${variant}_prepares ${berth_sources})
  target_include_directories(berth_${variant}_prepares PRIVATE ${PROJECT_SOURCE_DIR}/tools)
  target_link_libraries(berth_${variant}_prepares PRIVATE berth_cli_scenario berth_replay
                        berth_journal_etcd berth_journal berth_core berth_gen Threads::Threads)
  target_compile_definitions(berth_${variant}_prepares PRIVATE
                             TRACK_SLOTS_INITIAL=16u TRACK_KEY_BYTES_INITIAL=16u OUT_BUF_BYTES=256u)
endforeach()
# 0: the feed thread always prepares; FEED_CHUNKS + 1 (9): it never does.
target_compile_definitions(berth_feed_prepares PRIVATE FEED_PREPARE_AHEAD_MIN=0u)
target_compile_definitions(berth_caller_prepares PRIVATE FEED_PREPARE_AHEAD_MIN=9u)

foreach(case gen dump_replay at_time at_time_back verify_corrupt cut_head verify_pages whatif_readonly
             whatif_scenario rejudge timeline history_status usage reqid_damage internal_error
             doc_session)
  add_test(NAME cli_${case}
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh ${case}
                   $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                   ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work)
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 120 LABELS cli)
endforeach()

# forge: hash-valid journals of records berthd never writes (cli_foreign).
add_executable(berth_forge ${CMAKE_CURRENT_SOURCE_DIR}/cli/forge.c)
target_link_libraries(berth_forge PRIVATE berth_journal berth_core)
add_test(NAME cli_foreign
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh foreign
                 $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                 ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                 $<TARGET_FILE:berth_forge>)
set_tests_properties(cli_foreign PROPERTIES TIMEOUT 120 LABELS cli)

add_test(NAME cli_rejudge_large
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh rejudge_large
                 $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                 ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                 $<TARGET_FILE:berth_feed_prepares> $<TARGET_FILE:berth_caller_prepares>)
set_tests_properties(cli_rejudge_large PROPERTIES TIMEOUT 300 LABELS cli)

# The HISTORY index rebuilt (berthd's refusal, LOCKED beside it and its
# answers afterwards too, when berthd is built).
set(history_rebuild_berthd "")
if(TARGET berthd)
  set(history_rebuild_berthd $<TARGET_FILE:berthd>)
endif()
add_test(NAME cli_history_rebuild
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh history_rebuild
                 $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                 ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                 ${history_rebuild_berthd})
# COST: it is the longest test under ASan (a berth process per name and
# answer: ~80 s on earlier machines, 259 s alone on session 10's before its
# answers ran unguarded), so a fresh build's ctest -j starts it first, not
# in the tail; the timeout leaves room for a slow machine under load
# (346 s under ASan in session 13's CI, beside the rest of the suite).
set_tests_properties(cli_history_rebuild PROPERTIES TIMEOUT 1200 LABELS cli COST 80)

# berth beside a live berthd, against berthd's own answers (when berthd is built).
if(TARGET berthd)
  add_test(NAME cli_vs_berthd
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh vs_berthd
                   $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                   ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                   $<TARGET_FILE:berthd>)
  set_tests_properties(cli_vs_berthd PROPERTIES TIMEOUT 120 LABELS cli)
endif()

# backup (and, when berthd is built, a backup beside it under writes).
add_test(NAME cli_backup
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh backup
                 $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                 ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                 ${history_rebuild_berthd})
set_tests_properties(cli_backup PROPERTIES TIMEOUT 300 LABELS cli)

# berth as root on a data directory owned by the service's user (nobody
# here) leaves it berthd can start on as that user; skipped unless root.
if(TARGET berthd)
  add_test(NAME cli_as_root
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/as_root.sh $<TARGET_FILE:berth> $<TARGET_FILE:berthd>)
  set_tests_properties(cli_as_root PROPERTIES TIMEOUT 120 LABELS cli SKIP_RETURN_CODE 77)
endif()

# guard: the walk's child (tools/guard.c, shared by berth and berthd).
add_executable(test_guard ${CMAKE_CURRENT_SOURCE_DIR}/test_guard.c
                          ${CMAKE_SOURCE_DIR}/tools/guard.c)
target_include_directories(test_guard PRIVATE ${CMAKE_SOURCE_DIR}/tools)
target_link_libraries(test_guard PRIVATE PkgConfig::CHECK)
add_test(NAME guard COMMAND test_guard)
set_tests_properties(guard PROPERTIES TIMEOUT 60)

# install: `cmake --install` into a temporary prefix gives working tools,
# the systemd unit and the docs (tools/install.cmake).
if(TARGET berthd)
  include(GNUInstallDirs)
  add_test(NAME install
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install.sh ${CMAKE_BINARY_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX}
                   ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_DOCDIR})
  set_tests_properties(install PROPERTIES TIMEOUT 120)
endif()
