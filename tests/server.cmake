# server.cmake — berthd's integration tests (issue 3, "Tests").
#
# Each test is a bash script under tests/server/ that starts its own berthd on
# a free loopback port in a mkdtemp data directory, drives it with redis-cli
# and nc, and kills it on exit. They need Debian's redis-tools and
# netcat-openbsd; .ci/run installs both. server_oscrash also builds
# disk_shim.c, the LD_PRELOAD library it (and oscrash_fault, oscrash_log,
# order, park, commit_log) stage an OS crash or a failing disk with.
if(TARGET berthd)
  find_program(BERTH_REDIS_CLI redis-cli)
  find_program(BERTH_NC nc)
  if(NOT BERTH_REDIS_CLI OR NOT BERTH_NC)
    message(WARNING "berthd integration tests need redis-cli and nc: apt-get install -y redis-tools netcat-openbsd")
  endif()
  set(berth_server_tests seed refusals queries pipeline protocol auth watch restart kill9 limits sched_slice ckpt_priority growth
      config unixsocket accept_pause stop_drain)
  foreach(t ${berth_server_tests})
    add_test(NAME server_${t}
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/${t}.sh)
    set_tests_properties(server_${t} PROPERTIES TIMEOUT 90 LABELS server)
  endforeach()
  # limits.sh waits out idle timeouts and fills buffers: 46-70 s in CI
  # (the longer under ASan, beside the suite), too near 90 s.
  set_tests_properties(server_limits PROPERTIES TIMEOUT 240)
  # oscrash.sh: berthd under disk_shim, an LD_PRELOAD model of the disk
  # that keeps only synced writes, so an OS crash can be staged.
  add_library(berth_disk_shim MODULE ${CMAKE_CURRENT_SOURCE_DIR}/server/disk_shim.c)
  target_link_libraries(berth_disk_shim PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
  add_test(NAME server_oscrash
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/oscrash.sh)
  set_tests_properties(server_oscrash PROPERTIES TIMEOUT 120 LABELS server)
  # oscrash_fault.sh: the same disk model failing one sync (ENOSPC, EIO),
  # then an OS crash; and a restart in the same boot after the failure.
  add_test(NAME server_oscrash_fault
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/oscrash_fault.sh)
  set_tests_properties(server_oscrash_fault PROPERTIES TIMEOUT 120 LABELS server)
  # oscrash_log.sh: the same disk model over data.mdb and commit.log, with
  # the commit log on: OS crashes mid-stream, a failed sync of the log, a
  # dead disk; every acknowledged write survives and is moved from the log.
  # 21-44 s alone; 115 s once under ASan with the suite running beside it.
  add_test(NAME server_oscrash_log
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/oscrash_log.sh)
  set_tests_properties(server_oscrash_log PROPERTIES TIMEOUT 300 LABELS server)
  # order.sh: replies in order through a protocol error, a failed commit, a
  # failed sync (the shim's BERTH_SHIM_CTL slows and fails chosen syncs)
  # and a shutdown with background jobs waiting.
  add_test(NAME server_order
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/order.sh)
  set_tests_properties(server_order PROPERTIES TIMEOUT 120 LABELS server)
  # park.sh: parked clients are answered at SIGTERM and after a failed
  # sync, and a parked read is not starved by a writer's pipeline.
  # damaged_pages.sh: a flipped node pointer in a journal leaf page kills
  # the job's child, not berthd (berth finds the byte: it needs both).
  if(TARGET berth)
    add_test(NAME server_damaged_pages
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> BERTH=$<TARGET_FILE:berth>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/damaged_pages.sh)
    set_tests_properties(server_damaged_pages PROPERTIES TIMEOUT 120 LABELS server)
    # job_child.sh: a walk's child (berthd's job, berth's guarded command)
    # holds none of its parent's descriptors and does not outlive it; a
    # hung job's child is killed at --job-timeout (needs mdb_stat).
    add_test(NAME server_job_child
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> BERTH=$<TARGET_FILE:berth>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/job_child.sh)
    set_tests_properties(server_job_child PROPERTIES TIMEOUT 240 LABELS server)   # 48-72 s in CI
    # scenario_words.sh: the read-only words berth's scenario reader skips
    # are exactly the commands berthd's COMMAND INFO calls readonly, with
    # its arities.
    add_test(NAME server_scenario_words
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> BERTH=$<TARGET_FILE:berth>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/scenario_words.sh)
    set_tests_properties(server_scenario_words PROPERTIES TIMEOUT 90 LABELS server)
    # commit_log.sh: the commit log's reads, kills, recovery and damage
    # (the damage round holds data.mdb's syncs with disk_shim).
    add_test(NAME server_commit_log
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> BERTH=$<TARGET_FILE:berth>
                     BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/commit_log.sh)
    set_tests_properties(server_commit_log PROPERTIES TIMEOUT 300 LABELS server)
  endif()
  # commit_on_loop.sh: which thread writes a batch's frame (auto, on, off;
  # auto on a disk slowed by disk_shim).
  add_test(NAME server_commit_on_loop
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/commit_on_loop.sh)
  set_tests_properties(server_commit_on_loop PROPERTIES TIMEOUT 120 LABELS server)
  # The scripts that prove acknowledged writes survive kill -9 and OS
  # crashes, again with every frame on the committer thread (the default,
  # auto, writes them on the loop on a quick disk), and oscrash_log always
  # on the loop (its slowed syncs would move auto's frames to the committer
  # just when a crash should meet one on the loop): both roads stay proved.
  # Each: test name, script, --commit-on-loop's value.
  foreach(variant "kill9_committer kill9 off" "oscrash_log_committer oscrash_log off"
                  "oscrash_log_on_loop oscrash_log on")
    separate_arguments(variant)
    list(GET variant 0 name)
    list(GET variant 1 script)
    list(GET variant 2 mode)
    add_test(NAME server_${name}
             COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> "BERTHD_FLAGS=--commit-on-loop ${mode}"
                     BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                     bash ${CMAKE_CURRENT_SOURCE_DIR}/server/${script}.sh)
    set_tests_properties(server_${name} PROPERTIES TIMEOUT 300 LABELS server)
  endforeach()
  # clog_sync_fail.c: the commit log's checkpoint frees a sealed file only
  # once LMDB holds its frames durably, a failed sync on a retry included.
  add_executable(clog_sync_fail ${CMAKE_CURRENT_SOURCE_DIR}/server/clog_sync_fail.c)
  target_link_libraries(clog_sync_fail PRIVATE berth_journal Threads::Threads)
  add_test(NAME server_clog_sync_fail
           COMMAND ${CMAKE_COMMAND} -E env CLOG_SYNC_FAIL=$<TARGET_FILE:clog_sync_fail>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/clog_sync_fail.sh)
  set_tests_properties(server_clog_sync_fail PROPERTIES TIMEOUT 90 LABELS server)
  # watch_readers.sh: a WATCH catch-up with LMDB's reader table full (held by
  # hold_readers.c) waits for the next tick rather than spinning the loop.
  add_executable(hold_readers ${CMAKE_CURRENT_SOURCE_DIR}/server/hold_readers.c)
  target_link_libraries(hold_readers PRIVATE PkgConfig::LMDB)
  add_test(NAME server_watch_readers
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   HOLD_READERS=$<TARGET_FILE:hold_readers>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/watch_readers.sh)
  set_tests_properties(server_watch_readers PROPERTIES TIMEOUT 90 LABELS server)
  add_test(NAME server_park
           COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd>
                   BERTH_DISK_SHIM=$<TARGET_FILE:berth_disk_shim>
                   bash ${CMAKE_CURRENT_SOURCE_DIR}/server/park.sh)
  # COST: ~23 s, mostly waiting; started early rather than in ctest -j's tail.
  set_tests_properties(server_park PROPERTIES TIMEOUT 120 LABELS server COST 25)
endif()
