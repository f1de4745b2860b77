#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# An MPI job checkpointed rank by rank and restarted under a new mpirun from the images.
#   run_ckpt_restart.sh MODE FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]
# PROGRAM DIR POINTS (programs/ckpt_restart.c) writes DIR/pid.<point>.<rank> at each checkpoint
# point and sleeps until DIR/go.<point> exists. Steps:
#   1. the uninterrupted run, under plain mpirun (every DIR/go.<point> made up front);
#   2. the job under ghostrun; once every rank waits at point 1, `ghost checkpoint --image
#      CK/rank<R>.ghost PID` for each rank (the ranks go on sleeping), then the ranks are killed;
#   3. a new mpirun runs `ghost restart-rank CK` as every rank: each becomes its rank again, with a
#      fresh lower half, and the job goes on.
# MODE restart: one point. twice: two points; the restarted job is checkpointed, killed and
# restarted again at point 2 (a second generation). refuse: the program holds a passive-target
# lock on an MPI window (MPI_Win_lock), an epoch the layer does not carry: every checkpoint must
# fail with one line naming it, and the job must go on and finish as if nothing happened. freed_errh: as restart, with an error handler the program freed
# while a communicator keeps it (carried: still called after the restart). refuse_errh: the job
# also holds a duplicate of that communicator, which got the freed handler from it: refused as
# refuse is. busy: a thread of every rank waits inside
# MPI_Recv at point 1: the checkpoint must be refused (naming the thread), the job must go on (the
# thread may not be inside yet when the first request comes: that checkpoint succeeds, the process
# goes on, and the request is repeated, at most 100 times). self: as restart, but every rank asks
# its own agent for its checkpoint (ghost_agent_request_checkpoint, the coordinator's way in).
# resume: every rank is checkpointed at point 1 and goes on (no kill); the job finishes and the
# images are intact (ghost inspect). wrongsize: the images are restarted as a job of one rank
# fewer: every rank ends with one line naming both sizes, non-zero status, no hang.
# Passes when the last job exits 0 and the ranks' lines of all jobs together, sorted, equal step 1's.
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per run, default 120).
set -u
mode=$1 flavour=$2 np=$3 prog=$4
shift 4
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-mpickpt.XXXXXX)
case $mode in
restart) points=1 prog_args=(1) ;;
twice) points=2 prog_args=(2) ;;
refuse) points=1 prog_args=(1 refuse) ;;
refuse_errh) points=1 prog_args=(1 refuse_errh) ;;
refuse_greq) points=1 prog_args=(1 refuse_greq) ;;
refuse_mpit) points=1 prog_args=(1 refuse_mpit) ;;
freed_errh) points=1 prog_args=(1 freed_errh) ;;
busy) points=1 prog_args=(1 busy) ;;
self) points=1 prog_args=(1 self "$work/ck1") ;;
resume) points=1 prog_args=(1) ;;
wrongsize) points=1 prog_args=(1) ;;
*)
  echo "usage: $0 restart|twice|refuse|freed_errh|refuse_errh|refuse_greq|refuse_mpit|busy|self|resume|wrongsize FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]" >&2
  rm -rf "$work"
  exit 2
  ;;
esac
job_pid=""
# Each job runs in a session of its own (setsid): a failure kills the whole job, launcher and
# ranks, and the ranks named by pid files.
cleanup() {
  [ -n "$job_pid" ] && kill -KILL -- "-$job_pid" 2>/dev/null
  cat "$work"/run/pid.* 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err "$work"/ck*/*.log; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; head -c 4000 "$f"; }
  done
  exit 1
}

# Waits until every rank of the job in the background waits at point $1.
wait_point() {
  local k=$1 deadline=$((SECONDS + timeout_s))
  for ((r = 0; r < np; r++)); do
    while [ ! -s "$work/run/pid.$k.$r" ]; do
      kill -0 "$job_pid" 2>/dev/null || fail "the job ended before rank $r reached point $k"
      [ $SECONDS -lt $deadline ] || fail "rank $r did not reach point $k"
      sleep 0.05
    done
  done
}

# Checkpoints every rank at point $1 into $work/ck$1, then kills them ("self": the ranks asked
# for their checkpoints themselves; their checkpointers' reports are awaited).
checkpoint_all() {
  local k=$1
  if [ "$mode" = self ] && [ "$k" = 1 ]; then
    local deadline=$((SECONDS + timeout_s))
    for ((r = 0; r < np; r++)); do
      until grep -q "^checkpoint pid=" "$work/ck1/rank$r.ghost.log" 2>/dev/null; do
        grep -q "^ghost: " "$work/ck1/rank$r.ghost.log" 2>/dev/null && fail "rank $r's own checkpoint failed"
        [ $SECONDS -lt $deadline ] || fail "rank $r's own checkpoint did not complete"
        sleep 0.05
      done
    done
    kill -KILL $(cat "$work"/run/pid.$k.*) 2>/dev/null
    wait "$job_pid"
    job_pid=""
    return
  fi
  for ((r = 0; r < np; r++)); do
    pid=$(cat "$work/run/pid.$k.$r")
    timeout -k 5 60 "$GHOST" checkpoint --image "$work/ck$k/rank$r.ghost" "$pid" \
      >>"$work/ckpt.out" 2>>"$work/ckpt.err" || fail "checkpoint of rank $r (pid $pid) failed"
  done
  kill -KILL $(cat "$work"/run/pid.$k.*) 2>/dev/null
  wait "$job_pid"
  job_pid=""
}

# 1. uninterrupted
mkdir -p "$work/ref" "$work/run"
for ((k = 1; k <= points; k++)); do touch "$work/ref/go.$k"; done
timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "$work/ref" "${prog_args[@]}" \
  >"$work/ref.out" 2>"$work/ref.err"
rc=$?
[ $rc = 0 ] || fail "the uninterrupted run exited $rc"

# 2. under ghostrun
setsid timeout -k 5 "$timeout_s" "$GHOSTRUN" -np "$np" "${extra[@]}" "$prog" "$work/run" "${prog_args[@]}" \
  >"$work/run1.out" 2>"$work/run1.err" &
job_pid=$!
wait_point 1
if [[ "$mode" = refuse* ]]; then
  want="the window made by MPI_Win_create cannot be carried now: a passive-target lock is held"
  [ "$mode" = refuse_errh ] && want="a communicator holds an error handler the program has freed"
  # (MPICH said a pending generalized request was complete: the restart then failed in
  # MPI_Grequest_complete. MPI_T handles dangled after a restart.)
  [ "$mode" = refuse_greq ] && want="a generalized request (MPI_Grequest_start) is pending"
  [ "$mode" = refuse_mpit ] && want="the MPI tool interface (MPI_T_init_thread) is in use"
  for ((r = 0; r < np; r++)); do
    pid=$(cat "$work/run/pid.1.$r")
    if timeout -k 5 60 "$GHOST" checkpoint --image "$work/ck1/rank$r.ghost" "$pid" >"$work/refused.out" 2>"$work/refused.err"; then
      fail "the checkpoint of rank $r was not refused"
    fi
    grep -q "^ghost: cannot park pid $pid: mpi: \(rank $r: \)*$want" "$work/refused.err" ||
      fail "rank $r: unexpected refusal: $(cat "$work/refused.err")"
    [ "$(wc -l <"$work/refused.err")" = 1 ] || fail "the refusal is not one line"
  done
  touch "$work/run/go.1"
  wait "$job_pid"
  rc=$?
  job_pid=""
  [ $rc = 0 ] || fail "the job exited $rc after its checkpoints were refused"
  outs=("$work/run1.out")
elif [ "$mode" = resume ]; then
  for ((r = 0; r < np; r++)); do
    pid=$(cat "$work/run/pid.1.$r")
    timeout -k 5 60 "$GHOST" checkpoint --image "$work/ck1/rank$r.ghost" "$pid" >>"$work/ckpt.out" 2>>"$work/ckpt.err" ||
      fail "checkpoint of rank $r (pid $pid) failed"
  done
  touch "$work/run/go.1"
  wait "$job_pid"
  rc=$?
  job_pid=""
  [ $rc = 0 ] || fail "the job exited $rc after its checkpoints"
  for ((r = 0; r < np; r++)); do
    "$GHOST" inspect "$work/ck1/rank$r.ghost" >/dev/null 2>>"$work/inspect.err" || fail "the image of rank $r does not verify"
  done
  outs=("$work/run1.out")
elif [ "$mode" = busy ]; then
  for ((r = 0; r < np; r++)); do
    pid=$(cat "$work/run/pid.1.$r")
    refused=""
    for ((try = 0; try < 100; try++)); do
      if ! timeout -k 5 60 "$GHOST" checkpoint --image "$work/ck1/rank$r.ghost" "$pid" >"$work/refused.out" 2>"$work/refused.err"; then
        refused=1
        break
      fi
    done
    [ -n "$refused" ] || fail "rank $r: no checkpoint was refused while a thread was inside MPI_Recv"
    grep -q "^ghost: cannot park pid $pid: thread [0-9]* is inside a component (an MPI call): not at a safe point$" "$work/refused.err" ||
      fail "rank $r: unexpected refusal: $(cat "$work/refused.err")"
  done
  touch "$work/run/go.1"
  wait "$job_pid"
  rc=$?
  job_pid=""
  [ $rc = 0 ] || fail "the job exited $rc after its checkpoints were refused"
  outs=("$work/run1.out")
elif [ "$mode" = wrongsize ]; then
  checkpoint_all 1
  touch "$work/run/go.1"
  timeout -k 5 "$timeout_s" $mpirun -np $((np - 1)) "${extra[@]}" "$GHOST" restart-rank "$work/ck1" \
    >"$work/run2.out" 2>"$work/run2.err"
  rc=$?
  [ $rc != 0 ] || fail "a job of $((np - 1)) ranks restarted from $np images"
  [ $rc != 124 ] && [ $rc != 137 ] || fail "the restart with a wrong number of ranks hung"
  grep -q "cannot go on after the restore: mpi: rank 0: the image is of a job of $np ranks, this job has $((np - 1))" "$work/run2.err" ||
    fail "no line names the numbers of ranks"
  echo "OK: $mode $(basename "$prog") $flavour np=$np ${extra[*]}: refused to run as $((np - 1)) ranks"
  exit 0
else
  checkpoint_all 1
  # 3. restart under a new mpirun (and, for "twice", checkpoint it again at point 2)
  touch "$work/run/go.1"
  outs=("$work/run1.out")
  for ((k = 1; k <= points; k++)); do
    out="$work/run$((k + 1)).out"
    outs+=("$out")
    setsid timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$GHOST" restart-rank "$work/ck$k" \
      >"$out" 2>"${out%.out}.err" &
    job_pid=$!
    if [ $k -lt $points ]; then
      wait_point $((k + 1))
      checkpoint_all $((k + 1))
      touch "$work/run/go.$((k + 1))"
    else
      wait "$job_pid"
      rc=$?
      job_pid=""
      [ $rc = 0 ] || fail "the restarted job exited $rc"
    fi
  done
fi
last=${outs[-1]}
[ "$(grep -c " PASS$" "$last")" = "$np" ] || fail "the last job did not pass on every rank"
# Only the ranks' own lines: the launcher of a killed job reports the kill on stdout (Hydra).
grep -h '^rank [0-9]*: ' "$work/ref.out" | sort >"$work/ref.sorted"
grep -h '^rank [0-9]*: ' "${outs[@]}" | sort >"$work/ghost.sorted"
diff -u "$work/ref.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
echo "OK: $mode $(basename "$prog") $flavour np=$np ${extra[*]}: $(wc -l <"$work/ghost.sorted") lines as uninterrupted"
