#!/usr/bin/env bash
# The plugin SDK's promise, end to end, as a researcher outside this repository meets it:
#   1. `cmake --install` the build tree into a temporary prefix, then move the prefix elsewhere (the
#      tree must relocate); check the layout, that only the public headers are there, that the
#      package config is PCH-free and names no build path, and the RPATHs;
#   2. configure and build examples/plugin-template against that prefix with find_package(Bulwark)
#      (same generator, compiler and launcher as this build), run its CTest (unit test + experiment);
#   3. run the INSTALLED host on the example's experiment loading the plugin (a) by path and (b) by
#      name through BULWARK_PLUGIN_PATH, and check metrics.csv has one row per round.
# Registered from tests/CMakeLists.txt, which passes the build's settings in the environment. Needs
# a full build (the install copies every bundled plugin), which `make test` does. No network.
set -euo pipefail

: "${BULWARK_BUILD_DIR:?}" "${BULWARK_SOURCE_DIR:?}" "${BULWARK_CMAKE:?}" "${BULWARK_GENERATOR:?}"
: "${BULWARK_CTEST:?}" "${BULWARK_CXX:?}" "${BULWARK_LIBDIR:?}" "${BULWARK_BINDIR:?}" "${BULWARK_INCLUDEDIR:?}"
launcher=${BULWARK_CXX_LAUNCHER:-}
make_program=${BULWARK_MAKE_PROGRAM:-}

work=$BULWARK_BUILD_DIR/test-tmp/sdk
prefix=$work/prefix
example_src=$BULWARK_SOURCE_DIR/examples/plugin-template
example_build=$work/example-build
plugin_prefix=$work/plugin-prefix
rm -rf "$work"
mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
# Runs a command with its output in a log; on failure shows the log's end and fails with $1.
logged() {
  local what=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; fail "$what (full log: $log)"; }
}

step "install, then relocate the prefix to $prefix"
logged "cmake --install failed; build every target first (make build), then rerun" "$work/install.log" \
  "$BULWARK_CMAKE" --install "$BULWARK_BUILD_DIR" --prefix "$work/installed-here"
mv "$work/installed-here" "$prefix"

libdir=$prefix/$BULWARK_LIBDIR
for file in "$BULWARK_BINDIR/bulwark" "$BULWARK_LIBDIR/libbulwark_sdk.so" "$BULWARK_LIBDIR/libbulwark_core.so" \
            "$BULWARK_LIBDIR/cmake/Bulwark/BulwarkConfig.cmake" "$BULWARK_LIBDIR/cmake/Bulwark/BulwarkConfigVersion.cmake" \
            "$BULWARK_LIBDIR/cmake/Bulwark/BulwarkTargets.cmake" "$BULWARK_LIBDIR/cmake/Bulwark/BulwarkPlugin.cmake"; do
  [ -f "$prefix/$file" ] || fail "not installed: $file"
done
for source in "$BULWARK_SOURCE_DIR"/plugins/*/*.cpp; do
  name=$(basename "$source" .cpp)
  [ -n "$(find "$libdir/bulwark" -mindepth 2 -maxdepth 2 -name "$name.so")" ] ||
    fail "bundled plugin $name not installed under $BULWARK_LIBDIR/bulwark/<kind>s/"
done

step "headers: exactly core/include/bulwark"
[ "$(ls "$prefix/$BULWARK_INCLUDEDIR")" = bulwark ] ||
  fail "include/ holds more than bulwark/: $(ls "$prefix/$BULWARK_INCLUDEDIR" | tr '\n' ' ')"
diff <(cd "$BULWARK_SOURCE_DIR/core/include/bulwark" && ls) <(cd "$prefix/$BULWARK_INCLUDEDIR/bulwark" && ls) ||
  fail "installed headers differ from core/include/bulwark"

step "package config: no build or source paths, no precompiled headers"
if grep -rl -e "$BULWARK_BUILD_DIR" -e "$BULWARK_SOURCE_DIR" "$libdir/cmake/Bulwark"; then
  fail "the installed package config names the build or source tree (files above)"
fi
if grep -il -e "precompile" -e "cmake_pch" -e "bulwark_plugin_pch" "$libdir"/cmake/Bulwark/BulwarkTargets*.cmake; then
  fail "the exported targets carry precompiled headers (files above)"
fi

step "RPATHs and library resolution"
runpath() { readelf -d "$1" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p; s/.*(RPATH).*\[\(.*\)\]/\1/p'; }
case "$(runpath "$prefix/$BULWARK_BINDIR/bulwark")" in '$ORIGIN/'*) ;;
  *) fail "bin/bulwark RUNPATH '$(runpath "$prefix/$BULWARK_BINDIR/bulwark")' does not start with \$ORIGIN/" ;; esac
ldd "$prefix/$BULWARK_BINDIR/bulwark" >"$work/ldd-host.txt"
grep -q "libbulwark_core.so => $prefix/" "$work/ldd-host.txt" || { cat "$work/ldd-host.txt"; fail "bin/bulwark does not resolve libbulwark_core.so in the prefix"; }
grep -q "libbulwark_sdk.so => $prefix/" "$work/ldd-host.txt" || { cat "$work/ldd-host.txt"; fail "bin/bulwark does not resolve libbulwark_sdk.so in the prefix"; }
for plugin in "$libdir"/bulwark/*/*.so; do
  case ":$(runpath "$plugin"):" in *':$ORIGIN/../..:'*) ;; *) fail "$plugin RUNPATH lacks \$ORIGIN/../.." ;; esac
done
ldd "$libdir/bulwark/aggregators/fedavg.so" >"$work/ldd-plugin.txt"
grep -q "libbulwark_sdk.so => $prefix/" "$work/ldd-plugin.txt" || { cat "$work/ldd-plugin.txt"; fail "an installed plugin does not resolve libbulwark_sdk.so in the prefix"; }
if grep "not found" "$work/ldd-host.txt" "$work/ldd-plugin.txt"; then fail "unresolved libraries (above)"; fi

host=$prefix/$BULWARK_BINDIR/bulwark
unset BULWARK_PLUGIN_PATH
step "the installed host lists its bundled plugins from the prefix only"
"$host" plugins >"$work/plugins.txt" 2>&1 || { cat "$work/plugins.txt"; fail "bulwark plugins failed"; }
grep -q "^dataset  *synthetic .* $libdir/bulwark/datasets/synthetic.so" "$work/plugins.txt" ||
  { cat "$work/plugins.txt"; fail "bulwark plugins does not list the installed synthetic.so"; }
if grep -q "$BULWARK_BUILD_DIR/plugins/" "$work/plugins.txt"; then
  cat "$work/plugins.txt"; fail "the installed host looked into the build tree's plugin folder"
fi

step "configure and build examples/plugin-template with find_package(Bulwark)"
configure=("$BULWARK_CMAKE" -S "$example_src" -B "$example_build" -G "$BULWARK_GENERATOR"
           -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$BULWARK_CXX" -DCMAKE_PREFIX_PATH="$prefix"
           -DCMAKE_INSTALL_PREFIX="$plugin_prefix")
[ -n "$launcher" ] && configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher")
[ -n "$make_program" ] && configure+=(-DCMAKE_MAKE_PROGRAM="$make_program")
logged "configuring the example failed" "$work/example-configure.log" "${configure[@]}"
grep -q "^Bulwark_DIR:PATH=$libdir/cmake/Bulwark$" "$example_build/CMakeCache.txt" ||
  fail "find_package(Bulwark) did not use the installed package: $(grep ^Bulwark_DIR "$example_build/CMakeCache.txt")"
logged "building the example failed" "$work/example-build.log" "$BULWARK_CMAKE" --build "$example_build" -j 2
plugin=$example_build/plugins/aggregators/phocas.so
[ -f "$plugin" ] || fail "bulwark_add_plugin did not produce plugins/aggregators/phocas.so"

step "the example's own tests (unit test; experiment by name from its build folder)"
(cd "$example_build" && "$BULWARK_CTEST" --output-on-failure) \
  >"$work/example-ctest.log" 2>&1 || { cat "$work/example-ctest.log"; fail "the example's tests failed"; }

experiment=$example_src/experiment.toml
rounds=2
check_metrics() {  # <run folder>: a header plus one row per round, the last one for round $rounds
  local csv=$1/metrics.csv
  [ -f "$csv" ] || fail "no metrics file at $csv"
  [ "$(wc -l <"$csv")" -eq $((rounds + 1)) ] || { cat "$csv"; fail "$csv has $(wc -l <"$csv") lines; expected $((rounds + 1))"; }
  [ "$(tail -n 1 "$csv" | cut -d, -f1)" = "$rounds" ] || { cat "$csv"; fail "$csv: last row is not round $rounds"; }
}

step "(a) the installed host loads the plugin by path"
"$host" run "$experiment" --out "$work/run-by-path" --quiet --set experiment.rounds=$rounds \
  --set "aggregator.plugin=$plugin" >"$work/run-by-path.log" 2>&1 ||
  { cat "$work/run-by-path.log"; fail "run with the plugin by path failed"; }
check_metrics "$work/run-by-path"

step "(b) the installed host loads the plugin by name through BULWARK_PLUGIN_PATH"
logged "installing the example failed" "$work/example-install.log" "$BULWARK_CMAKE" --install "$example_build"
installed_plugin=$plugin_prefix/$BULWARK_LIBDIR/bulwark/aggregators/phocas.so
[ -f "$installed_plugin" ] || fail "bulwark_add_plugin's install rule did not install $installed_plugin"
ldd "$installed_plugin" | grep "libbulwark_sdk.so => $libdir/" >/dev/null ||
  { ldd "$installed_plugin"; fail "the installed example plugin does not resolve the SDK through its RPATH"; }
set +e
"$host" run "$experiment" --out "$work/run-no-path" --quiet >"$work/run-no-path.log" 2>&1
status=$?
set -e
[ $status -eq 2 ] && grep -q "unknown aggregator plugin 'phocas'" "$work/run-no-path.log" ||
  { cat "$work/run-no-path.log"; fail "without BULWARK_PLUGIN_PATH the host should not find phocas (exit $status)"; }
export BULWARK_PLUGIN_PATH=$plugin_prefix/$BULWARK_LIBDIR/bulwark
abi=$(sed -n 's/^#define BULWARK_PLUGIN_ABI_VERSION \([0-9]*\).*/\1/p' "$prefix/$BULWARK_INCLUDEDIR/bulwark/plugin_abi.h")
"$host" plugins >"$work/plugins-with-path.txt" 2>&1
grep -q "^aggregator  *phocas  *1.0.0  *$abi  *$installed_plugin" "$work/plugins-with-path.txt" ||
  { cat "$work/plugins-with-path.txt"; fail "bulwark plugins does not list phocas from BULWARK_PLUGIN_PATH"; }
"$host" run "$experiment" --out "$work/run-by-name" --quiet --set experiment.rounds=$rounds \
  >"$work/run-by-name.log" 2>&1 || { cat "$work/run-by-name.log"; fail "run with the plugin by name failed"; }
check_metrics "$work/run-by-name"

echo "ok: installed SDK, out-of-tree plugin built with find_package(Bulwark), loaded by path and by name"
