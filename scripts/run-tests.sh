#!/usr/bin/env bash
# Runs the whole test suite on this machine: installs what is missing, builds the release tree and
# the ASan/UBSan tree, runs every test in the first and the sanitizer-capable ones in the second.
# Usage: scripts/run-tests.sh [--extended] [extra ctest arguments]
#   --extended  also the tests labelled `extended` (repeats of the longest multi-host and job
#               tests over a second transport or MPI: about 10 more minutes); without it the
#               suite keeps within 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
select=(-LE extended)
if [ "${1:-}" = --extended ]; then
  select=()
  shift
fi
scripts/install-deps.sh
jobs=$(nproc)

# -g1 (line tables: backtraces with file and line) instead of -g: full debug info almost doubled
# the compile time of the template-heavy files (CI time); nothing in the suite reads variables.
debug_lines=(-DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
             -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG")
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGHOST_WERROR=ON "${debug_lines[@]}" >/dev/null
ninja -C build
# ctest starts the tests it knows to be long first, from the times it recorded; a fresh tree has
# none, and a long test started last would run alone at the end: give it the recorded ones
# (tests/ctest_costs.txt: seconds per test, one run of the suite on 2 cores).
mkdir -p build/Testing/Temporary
[ -f build/Testing/Temporary/CTestCostData.txt ] ||
  cp tests/ctest_costs.txt build/Testing/Temporary/CTestCostData.txt
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600 "${select[@]}" "$@"

# Host-side code (CLI, exporter, resources, unit tests) under AddressSanitizer and UBSan. The agent
# and the restorer run inside other programs and are never sanitized. The MPI layer is not built
# here: no asan- or unit-labelled test uses it (its generated wrappers are most of the build time).
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGHOST_SANITIZE=ON -DGHOST_WERROR=ON \
  -DCMAKE_C_FLAGS_DEBUG=-g1 -DCMAKE_CXX_FLAGS_DEBUG=-g1 >/dev/null
ninja -C build-asan runtime/all resources/all ghost-core/all launcher/all tests/all
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L "^(asan|unit)$" --timeout 600 "$@"
