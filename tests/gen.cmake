# tests/gen.cmake — unit test of the scenario generator (ctest `gen`):
# determinism, a golden stream digest, canonical text, and its predicted
# outcomes held against the real state machine. Links berth_gen and
# berth_core only: no journal, no disk.
if(NOT TARGET test_gen)
  add_executable(test_gen ${CMAKE_CURRENT_LIST_DIR}/test_gen.c)
  target_link_libraries(test_gen PRIVATE berth_gen berth_core PkgConfig::CHECK)
  add_test(NAME gen COMMAND test_gen)
  # Guards against a hang only; nothing here asserts on time.
  set_tests_properties(gen PROPERTIES TIMEOUT 300)
endif()
