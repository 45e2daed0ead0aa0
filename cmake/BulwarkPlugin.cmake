# bulwark_add_plugin(NAME KIND <dataset|aggregator|attack|privacy> SOURCES ... [LIBRARIES ...])
#
# Builds one plugin library, named <NAME>.so with no "lib" prefix, with hidden visibility and
# -z defs (an unresolved symbol fails the build instead of the load), linking the shared SDK.
# The same function builds the bundled plugins and, through find_package(Bulwark), out-of-tree
# ones: this file is installed next to BulwarkConfig.cmake.
#
# Layout, the one the host searches (<dir>/<kind>s/<name>.so):
#   build: ${BULWARK_PLUGIN_OUTPUT_DIR}/<kind>s/<name>.so (default ${CMAKE_BINARY_DIR}/plugins), so
#          `BULWARK_PLUGIN_PATH=<build>/plugins bulwark ...` finds a plugin straight from its build;
#   install: ${BULWARK_PLUGIN_INSTALL_DIR}/<kind>s/<name>.so (default ${CMAKE_INSTALL_LIBDIR}/bulwark),
#          with RPATH $ORIGIN/../.. so a plugin installed into Bulwark's own prefix finds
#          libbulwark_sdk.so there, plus the SDK's folder when it lies elsewhere.
#
# In-tree only: BULWARK_PLUGIN_PCH_TARGET names a precompiled-header target to reuse. The installed
# package never sets it; an out-of-tree project compiles its plugin without a PCH.
include_guard(GLOBAL)
include(GNUInstallDirs)

function(bulwark_add_plugin name)
  cmake_parse_arguments(ARG "" "KIND" "SOURCES;LIBRARIES" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "bulwark_add_plugin(${name}): unexpected arguments '${ARG_UNPARSED_ARGUMENTS}'; "
                        "expected KIND, SOURCES and optionally LIBRARIES")
  endif()
  if(NOT ARG_KIND MATCHES "^(dataset|aggregator|attack|privacy)$")
    message(FATAL_ERROR "bulwark_add_plugin(${name}): KIND must be dataset, aggregator, attack or privacy; got '${ARG_KIND}'")
  endif()
  # The folder the loader searches: datasets/, aggregators/, attacks/, privacy/.
  set(folder ${ARG_KIND}s)
  if(ARG_KIND STREQUAL "privacy")
    set(folder privacy)
  endif()
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "bulwark_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT TARGET Bulwark::sdk)
    message(FATAL_ERROR "bulwark_add_plugin(${name}): the target Bulwark::sdk does not exist; call "
                        "find_package(Bulwark CONFIG REQUIRED) first")
  endif()
  if(NOT DEFINED BULWARK_PLUGIN_OUTPUT_DIR)
    set(BULWARK_PLUGIN_OUTPUT_DIR ${CMAKE_BINARY_DIR}/plugins)
  endif()
  if(NOT DEFINED BULWARK_PLUGIN_INSTALL_DIR)
    set(BULWARK_PLUGIN_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/bulwark)
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE Bulwark::sdk ${ARG_LIBRARIES})
  # RPATH: <prefix>/<libdir>/bulwark/<kind>s/ -> <prefix>/<libdir>. INSTALL_RPATH_USE_LINK_PATH
  # adds the folders of linked libraries outside this project and outside the system paths: the
  # installed SDK's folder for an out-of-tree plugin, a non-system LibTorch for either.
  set_target_properties(${name} PROPERTIES PREFIX "" OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${BULWARK_PLUGIN_OUTPUT_DIR}/${folder}
    INSTALL_RPATH "$ORIGIN/../.." INSTALL_RPATH_USE_LINK_PATH ON)
  # Clang keeps its sanitizer runtimes in the executable (`make fuzz`), so a sanitized plugin has
  # those symbols unresolved until it is loaded.
  if(NOT (CMAKE_CXX_COMPILER_ID MATCHES "Clang" AND CMAKE_CXX_FLAGS MATCHES "-fsanitize"))
    target_link_options(${name} PRIVATE LINKER:-z,defs)
  endif()
  if(BULWARK_PLUGIN_PCH_TARGET AND TARGET ${BULWARK_PLUGIN_PCH_TARGET})
    target_precompile_headers(${name} REUSE_FROM ${BULWARK_PLUGIN_PCH_TARGET})
  endif()
  install(TARGETS ${name} LIBRARY DESTINATION ${BULWARK_PLUGIN_INSTALL_DIR}/${folder})
endfunction()
