#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# A job checkpoint at one chosen moment: PROGRAM (programs/ckpt_points.c) holds some MPI state,
# writes DIR/ready.<rank> and waits outside MPI until DIR/go exists.
#   run_job_point.sh MODE FLAVOUR NP PROGRAM CASE [MPIRUN OPTIONS...]
# MODE kill: `ghost checkpoint JOB --kill` once every rank is ready, then `ghost restart` (DIR/go
# made first); resume: `ghost checkpoint JOB`, the job goes on; restart-resume: kill, restart, and
# the restarted job (waiting at the point again) is checkpointed without --kill before it goes on.
# Passes when the last job exits 0, every rank prints PASS and the ranks' lines of all segments, sorted, equal an
# uninterrupted native run's. Every wait is bounded (GHOST_TEST_TIMEOUT seconds, default 60).
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT.
set -u
mode=$1 flavour=$2 np=$3 prog=$4 pcase=$5
shift 5
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-60}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-jobpoint.XXXXXX)
ck=$work/ck
gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $mode $pcase $flavour np=$np: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  exit 1
}

start() { # start NAME COMMAND...: in the background, in a session of its own; sets gpid and job
  local name=$1
  shift
  setsid timeout -k 5 "$timeout_s" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  gpid=$!
  job=""
  for _ in $(seq 1 1500); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$name.err" 2>/dev/null | head -1)
    [ -n "$job" ] && return 0
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before it printed its job id"
    sleep 0.02
  done
  fail "$name printed no job id"
}

wait_ready() { # every rank waits at the point, and has registered with the coordinator
  local deadline=$((SECONDS + timeout_s))
  for ((r = 0; r < np; r++)); do
    while [ ! -s "$work/run/ready.$r" ]; do
      kill -0 "$gpid" 2>/dev/null || fail "the job ended before rank $r reached the point"
      [ $SECONDS -lt $deadline ] || fail "rank $r did not reach the point"
      sleep 0.02
    done
  done
  until [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ]; do
    kill -0 "$gpid" 2>/dev/null || fail "the job ended before every rank registered"
    [ $SECONDS -lt $deadline ] || fail "not every rank registered with the coordinator"
    sleep 0.02
  done
}

checkpoint() { # checkpoint [--kill]
  timeout -k 5 "$timeout_s" "$GHOST" checkpoint "$job" --dir "$ck" "$@" >"$work/ck.out" 2>"$work/ck.err" ||
    fail "checkpoint $*: $(cat "$work/ck.err")"
  grep -q "^checkpoint job=$job generation=[0-9]* dir=$ck/gen-[0-9]* ranks=$np " "$work/ck.out" ||
    fail "unexpected checkpoint line: $(cat "$work/ck.out")"
}

finish() { # the job in the background ends with status $1
  wait "$gpid"
  local rc=$?
  gpid=""
  [ $rc = "$1" ] || fail "the job exited $rc, expected $1"
}

mkdir -p "$work/ref" "$work/run"
touch "$work/ref/go"
timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "$work/ref" "$pcase" >"$work/native.out" 2>"$work/native.err" ||
  fail "the native run failed"
[ "$(grep -c " PASS$" "$work/native.out")" = "$np" ] || fail "the native run did not pass on every rank"

start seg1 "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" "$work/run" "$pcase"
outs=("$work/seg1.out")
wait_ready
case $mode in
resume)
  checkpoint
  touch "$work/run/go"
  ;;
kill | restart-resume)
  checkpoint --kill
  finish 75
  # restart-resume: the restarted ranks wait at the point again (go is made only after their
  # checkpoint); made earlier, a rank could reach MPI_Finalize before the checkpoint came.
  [ "$mode" = kill ] && touch "$work/run/go"
  start seg2 "$GHOST" restart "$ck"
  outs+=("$work/seg2.out")
  if [ "$mode" = restart-resume ]; then
    deadline=$((SECONDS + timeout_s))
    until [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ]; do
      kill -0 "$gpid" 2>/dev/null || fail "the restarted job ended before its checkpoint"
      [ $SECONDS -lt $deadline ] || fail "not every restarted rank registered with the coordinator"
      sleep 0.02
    done
    checkpoint
    touch "$work/run/go"
  fi
  ;;
*) fail "unknown mode (kill, resume or restart-resume)" ;;
esac
finish 0
last=${outs[-1]}
[ "$(grep -c " PASS$" "$last")" = "$np" ] || fail "the last segment did not pass on every rank"
grep -h "^rank [0-9]*: " "$work/native.out" | sort >"$work/native.sorted"
grep -h "^rank [0-9]*: " "${outs[@]}" | sort >"$work/ghost.sorted"
diff -u "$work/native.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
echo "OK: $mode $pcase $flavour np=$np: $(wc -l <"$work/ghost.sorted") lines as uninterrupted"
