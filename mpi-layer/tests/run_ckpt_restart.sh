#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# One MPI job checkpointed rank by rank and restarted under a new mpirun from the images.
#   run_ckpt_restart.sh FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]
# PROGRAM DIR (programs/ckpt_restart.c) writes DIR/pid.<rank> at its checkpoint point and sleeps
# until DIR/go exists. Steps:
#   1. the uninterrupted run, under plain mpirun (DIR/go made up front);
#   2. the job under ghostrun; once every rank waited at its point, `ghost checkpoint --image
#      CK/rank<R>.ghost PID` for each rank (the ranks go on sleeping), then the job is killed;
#   3. a new mpirun runs `ghost restart-rank CK` as every rank: each becomes its rank again, with a
#      fresh lower half, and the job finishes.
# Passes when step 3 exits 0 and the ranks' lines of steps 2 and 3 together, sorted, equal step 1's.
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per run, default 120).
set -u
flavour=$1 np=$2 prog=$3
shift 3
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-mpickpt.XXXXXX)
job_pid=""
cleanup() {
  [ -n "$job_pid" ] && kill -KILL "$job_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err "$work"/ck/*.log; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; head -c 4000 "$f"; }
  done
  exit 1
}

# 1. uninterrupted
mkdir -p "$work/ref" "$work/run" "$work/ck"
touch "$work/ref/go"
timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "$work/ref" >"$work/ref.out" 2>"$work/ref.err"
rc=$?
[ $rc = 0 ] || fail "the uninterrupted run exited $rc"

# 2. under ghostrun, checkpointed at the point
timeout -k 5 "$timeout_s" "$GHOSTRUN" -np "$np" "${extra[@]}" "$prog" "$work/run" >"$work/run1.out" 2>"$work/run1.err" &
job_pid=$!
deadline=$((SECONDS + timeout_s))
for ((r = 0; r < np; r++)); do
  while [ ! -s "$work/run/pid.$r" ]; do
    kill -0 "$job_pid" 2>/dev/null || fail "the job ended before rank $r reached its checkpoint point"
    [ $SECONDS -lt $deadline ] || fail "rank $r did not reach its checkpoint point"
    sleep 0.05
  done
done
for ((r = 0; r < np; r++)); do
  pid=$(cat "$work/run/pid.$r")
  timeout -k 5 60 "$GHOST" checkpoint --image "$work/ck/rank$r.ghost" "$pid" >>"$work/ckpt.out" 2>>"$work/ckpt.err" ||
    fail "checkpoint of rank $r (pid $pid) failed"
done
kill -KILL $(cat "$work"/run/pid.*) 2>/dev/null
wait "$job_pid"
job_pid=""

# 3. restart under a new mpirun
touch "$work/run/go"
timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$GHOST" restart-rank "$work/ck" >"$work/run2.out" 2>"$work/run2.err"
rc=$?
[ $rc = 0 ] || fail "the restarted job exited $rc"
[ "$(grep -c " PASS$" "$work/run2.out")" = "$np" ] || fail "the restarted job did not pass on every rank"
# Only the ranks' own lines: the launcher of the killed job reports the kill on stdout (Hydra).
grep -h '^rank [0-9]*: ' "$work/ref.out" | sort >"$work/ref.sorted"
grep -h '^rank [0-9]*: ' "$work/run1.out" "$work/run2.out" | sort >"$work/ghost.sorted"
diff -u "$work/ref.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
echo "OK: $(basename "$prog") $flavour np=$np ${extra[*]}: checkpointed, killed, restarted; $(wc -l <"$work/ghost.sorted") lines as uninterrupted"
