# etcd.cmake — the etcd journal's integration tests (issue 6, "Tests").
#
# Each test is a bash script under tests/etcd/ that starts its own
# three-member etcd cluster (Debian's etcd-server) and three berthd replicas
# on free loopback ports in a mktemp directory, and kills them all on exit.
# They run one at a time (RUN_SERIAL): each is a small cluster of its own.
# `ctest -L etcd` runs just these.
if(TARGET berthd AND TARGET berth)
  find_program(BERTH_ETCD etcd)
  find_program(BERTH_CURL curl)
  if(NOT BERTH_ETCD OR NOT BERTH_CURL)
    message(WARNING "the etcd tests need etcd and curl: apt-get install -y etcd-server curl")
  else()
    foreach(t seed failover pause fence members rebuild tls)
      add_test(NAME etcd_${t}
               COMMAND ${CMAKE_COMMAND} -E env BERTHD=$<TARGET_FILE:berthd> BERTH=$<TARGET_FILE:berth> ETCD=${BERTH_ETCD}
                       bash ${CMAKE_CURRENT_SOURCE_DIR}/etcd/${t}.sh)
      set_tests_properties(etcd_${t} PROPERTIES TIMEOUT 120 LABELS etcd RUN_SERIAL TRUE)
    endforeach()
  endif()
endif()
