#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Job checkpoints at random (seeded, replayable) moments: the job is checkpointed COUNT times while
# it runs, most of them with --kill followed by `ghost restart` (a new job, restarted again at the
# next moment), some without (the job goes on); everything the segments print, sorted, must equal
# what an uninterrupted native run prints.
#   run_job_random.sh FLAVOUR NP SEED COUNT PROGRAM [PROGRAM ARGS...] [-- MPIRUN OPTIONS...]
# A program that reports its progress (programs/mpit.h: MPIT_PROGRESS_FILE, as every corpus program
# does through MPIT_REPEAT, and quiesce_mix) gets its moments as steps: each moment is a step drawn
# uniformly over most of the run plus a random part of a step's duration, and the checkpoint is
# requested once rank 0 has started that step, however fast or slow the machine runs the job; the
# job holds before its last step until the last moment has passed (MPIT_HOLD_FILE), so that no
# moment falls after its end. Otherwise:
# the moments are uniform over most of the native run's working time (from MPI_Init to the end, as
# the program prints it with MPIT_WORK_TIME set: programs/mpit.h; mpirun's start-up is not in it;
# or a run under ghostrun's, when shorter; the wall time stands in for a program that does not
# print it),
# counted in the job's own running time (from every rank's registration, right after MPI_Init, to
# each checkpoint request, summed over the segments). The
# checkpoint at moment i (from 0) is without --kill when i % 3 == 1, with --kill otherwise.
# `ghost restart` gets no mpirun options: the checkpoint's manifest carries the job's own.
# A checkpoint may be refused in one line only because the job has ended or a rank has called
# MPI_Finalize (the moment fell after the program's work), or, when GHOST_MAY_REFUSE (an extended
# regular expression) is set, with the layer's one-line refusal of what it cannot carry ("ghost:
# checkpoint of job J failed: rank R: cannot park pid P: mpi: rank R: <GHOST_MAY_REFUSE>...; the
# job resumed"): the job then goes on. Anything else fails; at least one checkpoint (or, with
# GHOST_MAY_REFUSE, one checkpoint or refusal) must land while the job runs; the last segment must
# exit 0 and every rank must print PASS.
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per segment, default 120),
# GHOST_MAY_REFUSE (see above), GHOST_TEST_KEEP (set: the work directory is kept, for a post-mortem).
set -u
flavour=$1 np=$2 seed=$3 count=$4 prog=$5
shift 5
pargs=() extra=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do pargs+=("$1"); shift; done
[ $# -gt 0 ] && shift
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
may_refuse=${GHOST_MAY_REFUSE:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-jobrandom.XXXXXX)
ck=$work/ck
gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null
  if [ -n "${GHOST_TEST_KEEP:-}" ]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $(basename "$prog") ${pargs[*]} $flavour np=$np seed=$seed: $*"
  [ -s "$work/ckpt.log" ] && { echo "--- checkpoints"; cat "$work/ckpt.log"; }
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  for f in "$ck"/gen-*/*.log "$ck"/.gen-*/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -c 1000 "$f"; }; done
  exit 1
}

# Runs a ghostrun (or ghost restart) command line in the background in a session of its own; sets
# gpid, job and t_run (when every rank had registered with the coordinator).
start() { # start NAME COMMAND...
  local name=$1
  shift
  setsid timeout -k 5 "$timeout_s" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  gpid=$!
  job=""
  for _ in $(seq 1 1500); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$name.err" | head -1)
    [ -n "$job" ] && break
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before it printed its job id"
    sleep 0.02
  done
  [ -n "$job" ] || fail "$name printed no job id"
  for _ in $(seq 1 1500); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank ')" = "$np" ] && break
    kill -0 "$gpid" 2>/dev/null || break # a short segment may end before we look
    sleep 0.01
  done
  t_run=$(date +%s%N)
}

t0=$(date +%s%N)
MPIT_PROGRESS_FILE=$work/native.progress MPIT_WORK_TIME=1 timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "${pargs[@]}" >"$work/native.out" 2>"$work/native.err" ||
  fail "the native run failed"
t1=$(date +%s%N)
[ "$(grep -c " PASS$" "$work/native.out")" = "$np" ] || fail "the native run did not pass on every rank"
work_ms=$(sed -n 's/^mpit: work_ms=\([0-9]*\)$/\1/p' "$work/native.err" | head -1)
# Steps (a progress-reporting program: its last step index + 1) or milliseconds.
nsteps=0
[ -s "$work/native.progress" ] && nsteps=$(($(cat "$work/native.progress") + 1))
if [ "$nsteps" -ge 4 ]; then
  : # moments in steps: the run's speed does not matter
elif [ -n "$work_ms" ]; then
  # ... or the job's under ghostrun, when shorter: a load spike during the native run (other jobs on
  # the machine; Open MPI's busy polling suffers more from an oversubscribed machine than ghost's
  # test loops, which yield) must not spread the moments past the job's end.
  MPIT_WORK_TIME=1 timeout -k 5 "$timeout_s" "$GHOSTRUN" -np "$np" "${extra[@]}" "$prog" "${pargs[@]}" >"$work/calib.out" 2>"$work/calib.err"
  rc=$?
  [ $rc = 0 ] || fail "the calibration run under ghostrun exited $rc"
  w2=$(sed -n 's/^mpit: work_ms=\([0-9]*\)$/\1/p' "$work/calib.err" | head -1)
  [ -n "$w2" ] && [ "$w2" -lt "$work_ms" ] && work_ms=$w2
else
  work_ms=$(((t1 - t0) / 1000000))
fi

if [ "$nsteps" -ge 4 ]; then
  export MPIT_PROGRESS_FILE=$work/progress MPIT_HOLD_FILE=$work/release
  # "STEP:DELAY_MS" each: the step rank 0 must have started, then a part of a step's duration.
  moments=$(python3 -c "
import random; r = random.Random($seed); n = $nsteps; per = max(1.0, ${work_ms:-1000} / n)
steps = sorted(r.randint(max(1, n // 20), max(1, (n * 9) // 10 - 1)) for _ in range($count))
print(' '.join('%d:%d' % (s, r.uniform(0, per)) for s in steps))")
else
  moments=$(python3 -c "
import random; r = random.Random($seed); d = $work_ms
print(' '.join('%d' % x for x in sorted(r.uniform(0.05 * d, 0.6 * d) for _ in range($count))))")
fi
# Waits until rank 0 has started step $1 (the job still running), then $2 ms more.
wait_for_step() {
  local want=$1 delay=$2 at
  for _ in $(seq 1 $((timeout_s * 100))); do
    at=$(cat "$work/progress" 2>/dev/null)
    [ -n "$at" ] && [ "$at" -ge "$want" ] 2>/dev/null && break
    kill -0 "$gpid" 2>/dev/null || return 0
    sleep 0.01
  done
  sleep "$(printf '0.%03d' $((delay % 1000)))"
}
seg=1
start seg1 "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" "${pargs[@]}"
outs=("$work/seg1.out")
ran=0 # the job's running time (ms) before the current segment's t_run
landed=0 refusals=0 i=0
for m in $moments; do
  if [ "$nsteps" -ge 4 ]; then
    wait_for_step "${m%%:*}" "${m##*:}"
    m="step ${m%%:*} +${m##*:}"
  else
    now=$((ran + ($(date +%s%N) - t_run) / 1000000))
    [ "$m" -gt "$now" ] && sleep "$(printf '%d.%03d' $(((m - now) / 1000)) $(((m - now) % 1000)))"
  fi
  kill=--kill
  [ $((i % 3)) = 1 ] && kill=""
  i=$((i + 1))
  ran=$((ran + ($(date +%s%N) - t_run) / 1000000))
  timeout -k 5 120 "$GHOST" checkpoint "$job" --dir "$ck" $kill >"$work/ck.out" 2>"$work/ck.err"
  rc=$?
  echo "at ${m} ms, job $job, checkpoint $kill: status $rc: $(cat "$work/ck.out" "$work/ck.err")" >>"$work/ckpt.log"
  t_run=$(date +%s%N)
  if [ $rc = 0 ]; then
    grep -q "^checkpoint job=$job generation=[0-9]* dir=$ck/gen-[0-9]* ranks=$np " "$work/ck.out" ||
      fail "unexpected checkpoint line: $(cat "$work/ck.out")"
    landed=$((landed + 1))
    if [ -n "$kill" ]; then
      wait "$gpid"
      rc=$?
      gpid=""
      [ $rc = 75 ] || fail "the job checkpointed with --kill exited $rc, expected 75"
      seg=$((seg + 1))
      start seg$seg "$GHOST" restart "$ck"
      outs+=("$work/seg$seg.out")
    fi
    continue
  fi
  [ "$(wc -l <"$work/ck.err")" = 1 ] || fail "checkpoint at ${m} ms: not one line: $(cat "$work/ck.err")"
  [ ! -s "$work/ck.out" ] || fail "checkpoint at ${m} ms failed but printed: $(cat "$work/ck.out")"
  if grep -q "called MPI_Finalize\|MPI_Finalize was called\|the job ended\|no job or process $job" "$work/ck.err"; then
    continue
  fi
  if [ -n "$may_refuse" ] &&
    grep -Eq "^ghost: checkpoint of job $job failed: rank [0-9]+: (cannot park pid [0-9]+: mpi: rank [0-9]+: )?($may_refuse).*; the job resumed$" "$work/ck.err"; then
    refusals=$((refusals + 1))
    kill -0 "$gpid" 2>/dev/null || fail "the job did not go on after the refusal"
    continue
  fi
  fail "checkpoint at ${m} ms: $(cat "$work/ck.err")"
done
touch "$work/release" # the job may end now
wait "$gpid"
rc=$?
gpid=""
[ $rc = 0 ] || fail "the last segment exited $rc"
[ $((landed + refusals)) -ge 1 ] || fail "no checkpoint landed while the job ran"
[ -n "$may_refuse" ] || [ $landed -ge 1 ] || fail "no checkpoint landed while the job ran"
grep -h "^rank [0-9]*: " "$work/native.out" | sort >"$work/native.sorted" # not mpirun's banners
grep -h "^rank [0-9]*: " "${outs[@]}" | sort >"$work/ghost.sorted"
diff -u "$work/native.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
cat "$work/ckpt.log"
echo "OK: $(basename "$prog") ${pargs[*]} $flavour np=$np seed=$seed: $landed of $count checkpoints landed ($refusals refused), $seg segments, $(wc -l <"$work/ghost.sorted") identical lines (native work ${work_ms} ms)"
