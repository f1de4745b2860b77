#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs one MPI test program natively and under ghostrun and compares them.
#   run_compare.sh MODE FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]
# MODE compare: both exit 0, every rank prints PASS, sorted stdout identical.
#      ghost:   under ghostrun only; every rank prints PASS.
#      fatal:   both end with a non-zero status within the timeout; the native error marker (e.g.
#               MPI_ERR_RANK) appears in ghost's stderr too.
# Environment: GHOSTRUN (path to ghostrun), GHOST_TEST_TIMEOUT (seconds per run, default 120).
set -u
mode=$1 flavour=$2 np=$3 prog=$4
shift 4
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-mpit.XXXXXX)
trap 'rm -rf "$work"' EXIT

run() {  # run NAME LAUNCHER...
  local name=$1
  shift
  timeout -k 5 "$timeout_s" "$@" -np "$np" "${extra[@]}" "$prog" >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.rc"
}

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; head -c 4000 "$f"; }
  done
  exit 1
}

passes() { [ "$(grep -c " PASS$" "$work/$1.out")" = "$np" ]; }

case $mode in
compare)
  run native $mpirun
  run ghost "$GHOSTRUN"
  [ "$(cat "$work/native.rc")" = 0 ] || fail "native run exited $(cat "$work/native.rc")"
  [ "$(cat "$work/ghost.rc")" = 0 ] || fail "ghost run exited $(cat "$work/ghost.rc")"
  passes native || fail "native run did not pass on every rank"
  passes ghost || fail "ghost run did not pass on every rank"
  sort "$work/native.out" >"$work/native.sorted"
  sort "$work/ghost.out" >"$work/ghost.sorted"
  diff -u "$work/native.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
  echo "OK: $(basename "$prog") $flavour np=$np ${extra[*]}: $(wc -l <"$work/ghost.sorted") identical lines"
  ;;
ghost)
  run ghost "$GHOSTRUN"
  [ "$(cat "$work/ghost.rc")" = 0 ] || fail "ghost run exited $(cat "$work/ghost.rc")"
  passes ghost || fail "ghost run did not pass on every rank"
  echo "OK: $(basename "$prog") $flavour np=$np under ghost"
  ;;
fatal)
  # Hydra may kill the job before it forwards the aborting rank's stderr (natively too): the error
  # marker is required only if some native attempt shows it, and ghost gets the same number of tries.
  markers=(MPI_ERR_RANK "Invalid rank" MPI_ERR_COMM MPI_ERR_TYPE)
  found=""
  for attempt in 1 2 3; do
    run native $mpirun
    n=$(cat "$work/native.rc")
    [ "$n" != 0 ] || fail "native run unexpectedly succeeded"
    [ "$n" != 124 ] && [ "$n" != 137 ] || fail "native run hung"
    for m in "${markers[@]}"; do grep -q "$m" "$work/native.err" "$work/native.out" && found=$m; done
    [ -n "$found" ] && break
  done
  for attempt in 1 2 3; do
    run ghost "$GHOSTRUN"
    g=$(cat "$work/ghost.rc")
    [ "$g" != 0 ] || fail "ghost run unexpectedly succeeded"
    [ "$g" != 124 ] && [ "$g" != 137 ] || fail "ghost run hung"
    [ -z "$found" ] && break
    grep -q "$found" "$work/ghost.err" "$work/ghost.out" && break
    [ $attempt = 3 ] && fail "ghost's error lacks '$found'"
  done
  echo "OK: $(basename "$prog") $flavour np=$np: both failed (native $n, ghost $g) ${found:+with '$found'}"
  ;;
*)
  echo "usage: $0 compare|ghost|fatal FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]" >&2
  exit 2
  ;;
esac
