# tests/replay.cmake — replay/: replay, verify, snapshots, digest and the live
# engine, tested through real LMDB journals in temporary directories; plus the
# replay speed program (prints figures; never a pass/fail test).
add_executable(test_replay ${CMAKE_CURRENT_SOURCE_DIR}/test_replay.c)
target_link_libraries(test_replay PRIVATE berth_replay PkgConfig::CHECK PkgConfig::CRYPTO PkgConfig::LMDB PkgConfig::MSGPACK)
add_test(NAME replay COMMAND test_replay)
set_tests_properties(replay PROPERTIES TIMEOUT 600)

add_executable(replay_speed ${CMAKE_CURRENT_SOURCE_DIR}/replay_speed.c)
target_link_libraries(replay_speed PRIVATE berth_replay)
