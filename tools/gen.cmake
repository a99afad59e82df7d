# gen: the deterministic scenario generator (library berth_gen). `berth gen`,
# the unit tests and the engine benchmark all draw command streams from it,
# so it lives in one small library with no I/O.
add_library(berth_gen STATIC ${CMAKE_CURRENT_LIST_DIR}/gen.c)
target_include_directories(berth_gen PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(berth_gen PUBLIC berth_core)
