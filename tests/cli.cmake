# cli: tests of the `berth` tool (issue 4). mkjournal builds journals through
# the real engine from scenario files; cli_test.sh drives `berth` over them.
add_executable(berth_mkjournal ${CMAKE_CURRENT_SOURCE_DIR}/cli/mkjournal.c)
target_link_libraries(berth_mkjournal PRIVATE berth_cli_scenario berth_replay berth_journal berth_core)

foreach(case gen dump_replay at_time verify_corrupt whatif_readonly whatif_scenario rejudge
             timeline history_status usage)
  add_test(NAME cli_${case}
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh ${case}
                   $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                   ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work)
  set_tests_properties(cli_${case} PROPERTIES TIMEOUT 120 LABELS cli)
endforeach()

# berth beside a live berthd, against berthd's own answers (when berthd is built).
if(TARGET berthd)
  add_test(NAME cli_vs_berthd
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.sh vs_berthd
                   $<TARGET_FILE:berth> $<TARGET_FILE:berth_mkjournal>
                   ${CMAKE_CURRENT_SOURCE_DIR}/cli ${CMAKE_CURRENT_BINARY_DIR}/cli_work
                   $<TARGET_FILE:berthd>)
  set_tests_properties(cli_vs_berthd PROPERTIES TIMEOUT 120 LABELS cli)
endif()
