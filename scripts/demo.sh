#!/usr/bin/env bash
# The demo job: a 4-rank MPI Modified Gram-Schmidt run (benchmarks/mgs/mgs_mpi) under ghostrun is
# checkpointed twice while it computes (the second time with --kill), restarted from its newest
# checkpoint, checkpointed and killed again, restarted again, and its result is checked against an
# uninterrupted native mpirun run. Installs and builds what it needs first.
# (scripts/demo-process.sh is the same for a single process under `ghost launch`.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build >/dev/null # everything: the MPI layer, the agent and the lower half too

ghost=$PWD/build/launcher/ghost
ghostrun=$PWD/build/launcher/ghostrun/ghostrun
mgs=$PWD/build/benchmarks/mgs/mgs_mpi
np=4
args=(--n 1000 --repeat 12)
# Open MPI refuses root without these and more ranks than cores without oversubscription.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d /tmp/ghost-demo-XXXXXX)
job_pid=""
trap '[ -n "$job_pid" ] && kill -KILL -- "-$job_pid" 2>/dev/null; rm -rf "$work"' EXIT
say() { printf '\n== %s\n' "$*"; }

# Starts "$@" in a session of its own, output to $work/$1.{out,err}; sets job_pid and job.
start_job() {
  local name=$1
  shift
  setsid "$@" >"$work/$name.out" 2>"$work/$name.err" &
  job_pid=$!
  job=""
  for _ in $(seq 300); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$name.err" | head -1)
    [ -n "$job" ] && break
    sleep 0.05
  done
  [ -n "$job" ] || { cat "$work/$name.err"; echo "no job id"; exit 1; }
  # Wait until every rank has registered with the job's coordinator.
  for _ in $(seq 600); do
    [ "$("$ghost" status "$job" 2>/dev/null | grep -c '^  rank ')" = "$np" ] && return 0
    sleep 0.05
  done
  echo "the ranks of job $job did not come up"
  exit 1
}

# Waits for the job started last; its exit status in $rc.
wait_job() {
  rc=0
  wait "$job_pid" || rc=$?
  job_pid=""
}

# The job must still be computing at the checkpoints below (2 s and 4 s after its start): on a fast,
# idle machine 12 repetitions take 3 s; scale them to about 12 s of computing.
compute_s=$(mpirun -np "$np" "$mgs" "${args[@]}" 2>&1 >/dev/null | sed -n 's/.* compute_s=\([0-9.]*\).*/\1/p')
repeat=$(python3 -c "import math, sys; c = float(sys.argv[1] or 0); print(max(12, math.ceil(12 * 12 / c)) if c > 0 else 48)" "$compute_s")
args=(--n 1000 --repeat "$repeat")

say "uninterrupted native run (reference): mpirun -np $np mgs_mpi ${args[*]}"
mpirun -np "$np" "$mgs" "${args[@]}" >"$work/reference" 2>/dev/null
cat "$work/reference"

say "the same job under ghostrun, checkpointed twice while it computes (the second time killed)"
start_job run1 "$ghostrun" --ckpt-dir "$work/ck" -np "$np" "$mgs" "${args[@]}"
sleep 2
"$ghost" checkpoint "$job"
sleep 2
"$ghost" checkpoint --kill "$job"
wait_job
[ "$rc" = 75 ] || { cat "$work/run1.err"; echo "ghostrun exited $rc, not 75 (checkpointed and stopped)"; exit 1; }
"$ghost" status "$job" 2>/dev/null || true
ls "$work/ck"

say "restart from the newest checkpoint, then checkpoint, kill and restart once more"
start_job run2 "$ghost" restart "$work/ck"
sleep 2
"$ghost" checkpoint --kill "$job"
wait_job
[ "$rc" = 75 ] || { cat "$work/run2.err"; echo "the restarted job exited $rc, not 75"; exit 1; }
start_job run3 "$ghost" restart "$work/ck"
wait_job
[ "$rc" = 0 ] || { cat "$work/run3.err"; echo "the restarted job exited $rc"; exit 1; }

say "result"
cat "$work"/run1.out "$work"/run2.out "$work"/run3.out >"$work/out"
cat "$work/out"
if cmp -s "$work/out" "$work/reference"; then
  echo "RESULT OK: the 4-rank job, checkpointed, killed and twice restarted, computed exactly the reference result"
else
  echo "RESULT MISMATCH"
  diff "$work/reference" "$work/out"
  exit 1
fi
