# install_unit.cmake — run by `cmake --install` (install(CODE) in
# tools/install.cmake), not at configure time: fills in berthd.service with
# the prefix given to the install (`--prefix P`, else the configured one),
# so the unit names the berthd that install puts in P's bindir. file(INSTALL)
# adds $DESTDIR itself, and the unit names the path without it: the tree
# under DESTDIR is meant to be moved to /.
#
# Set by the caller: BERTH_UNIT_IN (berthd.service.in), BERTH_UNIT_OUT (where
# the filled-in unit is written in the build tree), BERTH_INSTALL_BINDIR and
# BERTH_INSTALL_DOCDIR (GNUInstallDirs' CMAKE_INSTALL_BINDIR and _DOCDIR,
# relative to the prefix unless the configure made them absolute).
foreach(dir BINDIR DOCDIR)
  if(IS_ABSOLUTE "${BERTH_INSTALL_${dir}}")
    set(BERTH_${dir} "${BERTH_INSTALL_${dir}}")
  else()
    set(BERTH_${dir} "${CMAKE_INSTALL_PREFIX}/${BERTH_INSTALL_${dir}}")
  endif()
endforeach()
configure_file("${BERTH_UNIT_IN}" "${BERTH_UNIT_OUT}" @ONLY)
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE FILES "${BERTH_UNIT_OUT}")
