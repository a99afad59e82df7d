# tests/core.cmake — the core engine's unit tests (ctest `core`) and the
# model-based randomized test (ctest `model`). Owned by the core-tests helper.
# Both link only berth_core and Check: core is pure, so its tests need no
# journal, no LMDB and no network.
add_executable(test_core ${CMAKE_CURRENT_SOURCE_DIR}/test_core.c)
target_link_libraries(test_core PRIVATE berth_core PkgConfig::CHECK)
add_test(NAME core COMMAND test_core)
# A hang guard, not a timed assertion: under AddressSanitizer on a busy
# 2-core machine the core tests took 80-97 s, too close to 120.
set_tests_properties(core PROPERTIES TIMEOUT 300)

add_executable(test_model ${CMAKE_CURRENT_SOURCE_DIR}/test_model.c)
target_link_libraries(test_model PRIVATE berth_core PkgConfig::CHECK)
add_test(NAME model COMMAND test_model)
# The model test runs a few fixed seeds in about a few seconds; the timeout
# only guards against a hang, it is not a timed assertion.
set_tests_properties(model PROPERTIES TIMEOUT 300)
