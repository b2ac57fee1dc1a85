# cmake/install-conf.cmake — run by `cmake --install` (install(SCRIPT) in CMakeLists.txt), where
# CMAKE_INSTALL_PREFIX is the prefix of this install (--prefix), not the one configured:
#   - SYSCONFDIR/segnode/segnode.conf from etc/segnode.conf, only where no config is there yet
#     (an admin's edits survive every reinstall; the shipped file is always in
#     share/segnode/segnode.conf.example);
#   - PREFIX/lib/systemd/system/segnode.service from etc/segnode.service.in, naming this
#     prefix's binary and config.
# Destinations are absolute; file(INSTALL) puts $DESTDIR in front of them.
if(IS_ABSOLUTE "${SEGNODE_SYSCONFDIR}")
  set(_etc "${SEGNODE_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(_etc "/etc")                                   # GNU layout: /usr's configuration is in /etc
else()
  set(_etc "${CMAKE_INSTALL_PREFIX}/${SEGNODE_SYSCONFDIR}")
endif()
set(_conf "${_etc}/segnode/segnode.conf")
if(EXISTS "$ENV{DESTDIR}${_conf}")
  message(STATUS "Kept: $ENV{DESTDIR}${_conf} (the shipped example: share/segnode/segnode.conf.example)")
else()
  file(INSTALL "${SEGNODE_SOURCE_DIR}/etc/segnode.conf" DESTINATION "${_etc}/segnode"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()

set(SEGNODE_EXEC "${CMAKE_INSTALL_PREFIX}/${SEGNODE_BINDIR}/segnode")
set(SEGNODE_CONF "${_conf}")
set(SEGNODE_DOC "${CMAKE_INSTALL_PREFIX}/${SEGNODE_DOCDIR}")
set(_unit "${SEGNODE_BUILD_DIR}/segnode.service")
configure_file("${SEGNODE_SOURCE_DIR}/etc/segnode.service.in" "${_unit}" @ONLY)
file(INSTALL "${_unit}" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
