# tests/reliability.cmake — issue 5: the tests that break berth on purpose.
#
# Owns the short ctest variants of the reliability programs (crash loop,
# full disk and full map, hostile clients, random command storm, corrupt
# data on start) and the
# libFuzzer runs. Everything is labelled `reliability`; the long variants are
# the same programs with bigger flags (docs/reliability.md lists the
# commands). Fuzzing needs clang while the main build may use gcc, so the
# fuzz targets are a small project of their own (tests/fuzz/CMakeLists.txt):
# the fixture test `fuzz_build` configures and builds it with clang under
# <build>/fuzz, and each `fuzz_<target>` test runs one target for
# BERTH_FUZZ_SECONDS on its committed corpus after replaying its regression
# inputs. The fuzz tests carry the label `nosan`: they build their own
# ASan+UBSan binaries, so the sanitizer build need not run them twice.

set(BERTH_FUZZ_SECONDS 12 CACHE STRING "seconds each libFuzzer target runs under ctest")
set(rel_src ${CMAKE_CURRENT_SOURCE_DIR}/reliability)
set(fuzz_src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
set(fuzz_bin ${CMAKE_BINARY_DIR}/fuzz)

# ---- fuzzing ---------------------------------------------------------------
find_program(BERTH_CLANG NAMES clang clang-14)
if(BERTH_CLANG)
  add_test(NAME fuzz_build
           COMMAND sh ${fuzz_src}/build.sh ${BERTH_CLANG} ${CMAKE_SOURCE_DIR} ${fuzz_bin})
  set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP berth_fuzz TIMEOUT 600
                       LABELS "reliability;fuzz;nosan")
  foreach(t fuzz_cmd_parse fuzz_resp fuzz_record fuzz_snapshot fuzz_scenario)
    add_test(NAME ${t}
             COMMAND sh ${fuzz_src}/run.sh ${fuzz_bin}/build/${t} ${CMAKE_SOURCE_DIR}
                     ${fuzz_bin}/work ${BERTH_FUZZ_SECONDS})
    set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED berth_fuzz TIMEOUT 300
                         LABELS "reliability;fuzz;nosan")
  endforeach()
else()
  message(WARNING "clang not found: the fuzz tests are not registered (apt-get install -y clang libclang-rt-14-dev)")
endif()

# Regenerates the record and snapshot seed corpora with berth's own encoders:
#   berth_fuzz_seeds tests/fuzz/corpus
add_executable(berth_fuzz_seeds ${fuzz_src}/make_seeds.c)
target_link_libraries(berth_fuzz_seeds PRIVATE berth_replay berth_journal berth_core)

# ---- programs that drive a real berthd -------------------------------------
add_library(berth_harness STATIC ${rel_src}/harness.c)
target_include_directories(berth_harness PUBLIC ${rel_src})
target_link_libraries(berth_harness PUBLIC berth_journal)   # h_recover_commit_log

add_executable(berth_crashloop ${rel_src}/crashloop.c)
target_link_libraries(berth_crashloop PRIVATE berth_harness berth_replay berth_journal berth_core)

add_executable(berth_corrupt_start ${rel_src}/corrupt_start.c)
target_link_libraries(berth_corrupt_start PRIVATE berth_harness berth_replay berth_journal berth_core)

add_executable(berth_fulldisk ${rel_src}/fulldisk.c)
target_link_libraries(berth_fulldisk PRIVATE berth_harness berth_replay berth_journal berth_core)

add_executable(berth_cmdstorm ${rel_src}/cmdstorm.c)
target_link_libraries(berth_cmdstorm PRIVATE berth_harness berth_replay berth_journal berth_core)

add_executable(berth_hostile ${rel_src}/hostile.c)
target_link_libraries(berth_hostile PRIVATE berth_harness)

if(TARGET berthd)
  set(rel_work ${CMAKE_BINARY_DIR}/reliability)
  file(MAKE_DIRECTORY ${rel_work})

  # 3 SIGKILLs under 16 connections; the long variant is --kills 20 or more.
  add_test(NAME reliability_crashloop
           COMMAND berth_crashloop --berthd $<TARGET_FILE:berthd> --data ${rel_work}/crashloop
                   --kills 3 --connections 16 --workers 24 --seed 1)
  set_tests_properties(reliability_crashloop PROPERTIES TIMEOUT 180 LABELS reliability)

  if(TARGET berth)
    set(rel_berth $<TARGET_FILE:berth>)
  else()
    set(rel_berth "")
  endif()
  add_test(NAME reliability_corrupt_start
           COMMAND berth_corrupt_start --berthd $<TARGET_FILE:berthd> --berth "${rel_berth}"
                   --work ${rel_work}/corrupt)
  set_tests_properties(reliability_corrupt_start PROPERTIES TIMEOUT 180 LABELS reliability)

  # Random commands with random arguments; the journal must verify after.
  add_test(NAME reliability_cmdstorm
           COMMAND berth_cmdstorm --berthd $<TARGET_FILE:berthd> --data ${rel_work}/cmdstorm
                   --seconds 8 --connections 8 --seed 1)
  set_tests_properties(reliability_cmdstorm PROPERTIES TIMEOUT 180 LABELS reliability)

  # Mounts a small tmpfs (root only); exits 77 (skipped) when mount is refused.
  add_test(NAME reliability_fulldisk
           COMMAND sh ${rel_src}/fulldisk.sh $<TARGET_FILE:berth_fulldisk> $<TARGET_FILE:berthd>
                   ${rel_work}/fulldisk)
  set_tests_properties(reliability_fulldisk PROPERTIES TIMEOUT 180 LABELS reliability
                       SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)

  # The latency bound is the release build's promise; sanitizers slow every
  # call, so their build checks behaviour and memory with a looser bound.
  if(BERTH_SANITIZE)
    set(rel_p99_ms 50)
  else()
    set(rel_p99_ms 5)
  endif()
  add_test(NAME reliability_hostile
           COMMAND berth_hostile --berthd $<TARGET_FILE:berthd> --data ${rel_work}/hostile
                   --connections 2000 --seconds 8 --p99-max-ms ${rel_p99_ms})
  set_tests_properties(reliability_hostile PROPERTIES TIMEOUT 180 LABELS reliability RUN_SERIAL TRUE)
endif()
