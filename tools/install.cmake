# install.cmake — what `cmake --install BUILD [--prefix P]` puts where:
# berthd and berth in bin/, berthd's systemd unit (naming the installed
# berthd) in lib/systemd/system/, the README and docs/ in share/doc/berth/.
# tests/install.sh checks the tree it makes.
#
# The unit is filled in when installing (install_unit.cmake), not here: a
# configure-time CMAKE_INSTALL_FULL_BINDIR is the configured prefix, and
# `cmake --install build --prefix /usr` would install a unit whose
# ExecStart names /usr/local/bin/berthd.
include(GNUInstallDirs)
if(TARGET berthd AND TARGET berth)
  install(TARGETS berthd berth RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(CODE "
    set(BERTH_UNIT_IN \"${CMAKE_CURRENT_SOURCE_DIR}/berthd.service.in\")
    set(BERTH_UNIT_OUT \"${CMAKE_CURRENT_BINARY_DIR}/berthd.service\")
    set(BERTH_INSTALL_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
    set(BERTH_INSTALL_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
    include(\"${CMAKE_CURRENT_SOURCE_DIR}/install_unit.cmake\")")
  install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
endif()
