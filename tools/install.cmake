# install.cmake — what `cmake --install BUILD [--prefix P]` puts where:
# berthd and berth in bin/, berthd's systemd unit (naming the installed
# berthd) in lib/systemd/system/, the README and docs/ in share/doc/berth/.
# tests/install.sh checks the tree it makes.
include(GNUInstallDirs)
if(TARGET berthd AND TARGET berth)
  install(TARGETS berthd berth RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  set(BERTH_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
  set(BERTH_DOCDIR ${CMAKE_INSTALL_FULL_DOCDIR})
  configure_file(${CMAKE_CURRENT_SOURCE_DIR}/berthd.service.in ${CMAKE_CURRENT_BINARY_DIR}/berthd.service @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/berthd.service DESTINATION lib/systemd/system)
  install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
endif()
