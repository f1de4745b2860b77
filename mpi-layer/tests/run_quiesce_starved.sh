#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Quiesces, back to back, a job whose application threads get almost no CPU: each rank's main
# thread shares a CPU with a busy loop at a higher priority (nice -5 against 19), its other
# threads (the layer's coordinator client) run freely. A thread that a resume woke has then often
# not run yet when the next request raises the flag again; it must stay parked for that request
# (it looks parked to it), not go on into a send after the request's message counts were
# reported ("messages were sent after the collective clocks agreed"). Every request must succeed
# and the job must still print what a native run prints.
#   run_quiesce_starved.sh FLAVOUR COUNT PROGRAM STEPS
# Environment: GHOSTRUN, GHOST (paths).
set -u
flavour=$1 count=$2 prog=$3 steps=$4
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
[ "$(nproc)" -ge 2 ] || { echo "SKIP: needs 2 CPUs"; exit 77; }
work=$(mktemp -d /tmp/ghost-starved.XXXXXX)
hog= gpid= pids=
# On a failure the ranks go too (killing ghostrun alone leaves them running, starved).
trap '[ -n "$hog" ] && kill -9 $hog 2>/dev/null; [ -n "$gpid" ] && kill -9 $gpid $pids 2>/dev/null; rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err "$work"/quiesce.log; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  exit 1
}

timeout -k 5 120 $mpirun -np 2 "$prog" "$steps" 0 >"$work/native.out" 2>"$work/native.err" ||
  fail "the native run failed"
export MPIT_PROGRESS_FILE=$work/progress MPIT_HOLD_FILE=$work/release
"$GHOSTRUN" --ckpt-dir "$work/ck" -np 2 "$prog" "$steps" 0 >"$work/run.out" 2>"$work/run.err" &
gpid=$!
job=
for _ in $(seq 1 600); do
  job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/run.err" | head -1)
  [ -n "$job" ] && [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = 2 ] && break
  sleep 0.1
done
pids=$("$GHOST" status "$job" 2>/dev/null | awk '$1 == "rank" {print $4}')
[ "$(echo $pids | wc -w)" = 2 ] || fail "the ranks of job $job did not come up"
taskset -c 1 nice -n -5 sh -c 'while :; do :; done' &
hog=$!
for p in $pids; do # the main thread only (its pid): the client thread keeps any CPU
  taskset -p -c 1 "$p" >/dev/null && renice -n 19 -p "$p" >/dev/null || fail "cannot starve rank pid $p"
done
ok=0
for i in $(seq 1 "$count"); do
  if out=$("$GHOST" quiesce "$job" --timeout 20000 2>&1); then
    ok=$((ok + 1))
  else
    echo "$out" >>"$work/quiesce.log"
    [ -e "$work/progress" ] && [ "$(cat "$work/progress")" = $((steps - 1)) ] && break # at its end
    fail "request $i: $out"
  fi
done
kill -9 $hog
hog=
for p in $pids; do # the job runs its last steps at full speed
  renice -n 0 -p "$p" >/dev/null
  taskset -p -c "0-$(($(nproc) - 1))" "$p" >/dev/null
done
touch "$work/release"
timeout -k 5 120 tail --pid=$gpid -f /dev/null
wait $gpid
rc=$?
gpid=
[ $rc = 0 ] || fail "the job exited $rc"
diff <(sort "$work/native.out") <(sort "$work/run.out") >/dev/null || fail "the output differs from the native run's"
echo "PASS: $ok quiesce requests on starved ranks"
