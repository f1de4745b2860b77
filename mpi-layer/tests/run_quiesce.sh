#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Quiesces an MPI job at random (seeded, replayable) moments while it runs and checks that it prints
# exactly what an uninterrupted run prints.
#   run_quiesce.sh FLAVOUR NP SEED COUNT PROGRAM [PROGRAM ARGS...] [-- MPIRUN OPTIONS...]
# The program runs natively first, then under ghostrun while `ghost quiesce JOB` is issued COUNT
# times: at steps of the program when it reports them (programs/mpit.h: MPIT_PROGRESS_FILE; it then
# holds before its last step until the last request), else at times scaled by the duration of a
# run under ghostrun undisturbed, made before. Every request must succeed (unless the job has already
# ended), at least one must land while the job runs, outputs (sorted) must be identical, every rank
# must print PASS.
# A program whose first argument is a repetition count (the corpus's MPIT_REPEAT) and whose native
# work lasts under 1.5 s has its count scaled up to about 3 s of work first.
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per run, default 120).
set -u
flavour=$1 np=$2 seed=$3 count=$4 prog=$5
shift 5
pargs=() extra=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do pargs+=("$1"); shift; done
[ $# -gt 0 ] && shift
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
work=$(mktemp -d /tmp/ghost-quiesce.XXXXXX)
gpid=
trap '[ -n "$gpid" ] && kill -9 $gpid 2>/dev/null; rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err "$work"/quiesce.log; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 4000 "$f"; }
  done
  exit 1
}
passes() { [ "$(grep -c " PASS$" "$work/$1.out")" = "$np" ]; }

native() {
  MPIT_PROGRESS_FILE=$work/native.progress MPIT_WORK_TIME=1 timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "${pargs[@]}" \
    >"$work/native.out" 2>"$work/native.err"
  rc=$?
  [ $rc = 0 ] || fail "native run exited $rc"
}
native
# A repetition count (the first program argument) tuned on a loaded machine runs for a moment on
# an idle one (MPICH's topo: 2000 repetitions in 0.1 s): scaled up until the program's own work
# (MPI_Init to its end, as the corpus programs report it) lasts about 3 s natively.
work_ms=$(sed -n 's/^mpit: work_ms=\([0-9]*\)$/\1/p' "$work/native.err" | tail -1)
if [ -n "$work_ms" ] && [ "${pargs[0]:-x}" -eq "${pargs[0]:-x}" ] 2>/dev/null && [ "$work_ms" -lt 1500 ]; then
  scale=$((3000 / (work_ms > 30 ? work_ms : 30)))
  pargs[0]=$((pargs[0] * scale))
  native
fi
passes native || fail "native run did not pass on every rank"
# ghostrun in the background; sets gpid, job, and waits until every rank has registered with the
# coordinator (the moments count from there: MPI_Init is not what is being tested).
launch() {  # launch NAME
  timeout -k 5 "$timeout_s" "$GHOSTRUN" -np "$np" "${extra[@]}" "$prog" "${pargs[@]}" >"$work/$1.out" 2>"$work/$1.err" &
  gpid=$!
  job=
  for _ in $(seq 1 400); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$1.err" | head -1)
    [ -n "$job" ] && break
    sleep 0.02
  done
  [ -n "$job" ] || fail "ghostrun printed no job id"
  for _ in $(seq 1 1000); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank ')" = "$np" ] && return 0
    kill -0 $gpid 2>/dev/null || return 0
    sleep 0.01
  done
}

# A program that reports its steps (programs/mpit.h) is quiesced at steps, and holds before its last
# one until the last request has been made: a run under ghost can be much faster or slower than
# the native and undisturbed runs (Open MPI's busy polling with 4 threads per rank on 2 cores:
# native 10 s, under ghost 1 s), and moments in time then fell after the job's end. Any other is
# quiesced at moments scaled by an undisturbed run under ghost.
nsteps=0
[ -s "$work/native.progress" ] && nsteps=$(($(cat "$work/native.progress") + 1))
if [ "$nsteps" -lt 4 ]; then
  launch plain
  t0=$(date +%s.%N)
  wait $gpid
  rc=$?
  t1=$(date +%s.%N)
  gpid=
  [ $rc = 0 ] || fail "undisturbed ghost run exited $rc"
fi
[ "$nsteps" -ge 4 ] && export MPIT_PROGRESS_FILE=$work/progress MPIT_HOLD_FILE=$work/release
launch ghost

# The moments: steps drawn uniformly over most of the run, each with a random delay of up to 50 ms
# after rank 0 started it; otherwise times relative to the job's start, uniform over most of the
# undisturbed run time.
if [ "$nsteps" -ge 4 ]; then
  moments=$(python3 -c "
import random; r = random.Random($seed); n = $nsteps
print(' '.join('%d:%d' % (s, r.uniform(0, 50)) for s in
               sorted(r.randint(max(1, n // 20), max(1, (n * 9) // 10 - 1)) for _ in range($count))))")
else
  moments=$(python3 -c "
import random; r = random.Random($seed); d = ($t1 - $t0)
print(' '.join('%.3f' % x for x in sorted(r.uniform(0.05 * d, 0.75 * d) for _ in range($count))))")
fi
start=$(date +%s%N)
ok=0
for m in $moments; do
  if [ "$nsteps" -ge 4 ]; then
    for _ in $(seq 1 $((timeout_s * 100))); do
      at=$(cat "$work/progress" 2>/dev/null)
      [ -n "$at" ] && [ "$at" -ge "${m%%:*}" ] 2>/dev/null && break
      kill -0 $gpid 2>/dev/null || break
      sleep 0.01
    done
    sleep "$(printf '0.%03d' "${m##*:}")"
    when="step ${m%%:*} +${m##*:} ms"
  else
    when="${m}s"
    ms=${m/./}
    ms=$((10#$ms))
    now=$((($(date +%s%N) - start) / 1000000))
    [ $ms -gt $now ] && sleep "$(printf '%d.%03d' $(((ms - now) / 1000)) $(((ms - now) % 1000)))"
  fi
  out=$("$GHOST" quiesce "$job" --timeout 20000 2>&1)
  q=$?
  echo "at $when: $out" >>"$work/quiesce.log"
  if [ $q = 0 ]; then
    ok=$((ok + 1))
  elif kill -0 $gpid 2>/dev/null && ! grep -q "has called MPI_Finalize\|called MPI_Finalize\|the job ended\|not connected" <<<"$out"; then
    fail "quiesce at $when failed while the job ran: $out"
  fi
done
touch "$work/release" # the job may end now
wait $gpid
rc=$?
gpid=
[ $rc = 0 ] || fail "ghost run exited $rc"
passes ghost || fail "ghost run did not pass on every rank"
[ $ok -ge 1 ] || fail "no quiesce landed while the job ran"
sort "$work/native.out" >"$work/native.sorted"
sort "$work/ghost.out" >"$work/ghost.sorted"
diff -u "$work/native.sorted" "$work/ghost.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
cat "$work/quiesce.log"
echo "OK: $(basename "$prog") ${pargs[*]} $flavour np=$np seed=$seed: $ok of $count quiesces while running, $(wc -l <"$work/ghost.sorted") identical lines"
