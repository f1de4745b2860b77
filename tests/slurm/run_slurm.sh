#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ghostrun under a real Slurm (a private one: slurm_fixture.sh), with the job script of the top
# README's "Running under Slurm" section, taken from README.md as written; only its --interval and
# the program's path and arguments are replaced.
#   run_slurm.sh MODE PROGRAM      PROGRAM: job_steps built for Open MPI (multi: or MPICH)
# Modes:
#   run    the job runs to its end: its ranks run inside the allocation (SLURM_JOB_ID in their
#          environment, in `scontrol listpids`), the output equals a native mpirun's, exit 0
#   usr1   the batch shell gets USR1 as `--signal=B:USR1@S` sends it (here through
#          `scancel --batch --signal=USR1`, at once): ghostrun checkpoints and exits 75, the
#          script requeues the job, the requeued job resumes from the checkpoint and ends right
#   auto   a rank is SIGKILLed once a periodic checkpoint exists: --auto-restart brings the job
#          back from it inside the allocation; it ends right, exit 0
#   multi  (3 emulated hosts, a node each) the job spans the 3 nodes: ghostrun on the first, a
#          rank on each (in the job, counted by Slurm there); a checkpoint names the 3 hosts; the
#          output equals a native run's. PROGRAM may be built for MPICH
#   node_lost  (3 emulated hosts) every process of the third is killed once a checkpoint exists:
#          --auto-restart leaves that node out (one line says so), the ranks come back on the two
#          nodes left, the job ends right although Slurm declares the node down
# Everything runs in a private PID namespace: whatever happens, no daemon, job or rank outlives
# the test. Exit 77 (skipped) when Slurm cannot run here (not root, slurm-wlm or munge missing, no
# PID namespace).
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per wait, default 120),
# GHOST_SLURM_LOGS (non-empty: the daemons' logs are printed on success too).
set -u
if [ -z "${GHOST_SLURM_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || {
    echo "SKIP: not root (slurmd must run as root)"
    exit 77
  }
  unshare --pid --fork --mount-proc --kill-child true 2>/dev/null || {
    echo "SKIP: no PID namespace can be made here (unshare --pid)"
    exit 77
  }
  case ${1:-} in
  multi | node_lost)
    # Three emulated hosts (tests/hosts), brought up here, before the PID and mount namespace:
    # `ip netns` keeps a host's network namespace as a mount under /run/netns, which the private
    # mount namespace copies but could not make visible to the root one. This shell removes them
    # when the test ends (hosts_up's EXIT trap), or the next hosts_up does if it is killed.
    source "$(dirname "$0")/../hosts/hosts.sh"
    hosts_can || {
      echo "SKIP: cannot make network namespaces here (needs root, ip and unshare)"
      exit 77
    }
    # The build tree stays visible on every host, even under /tmp.
    export GHOST_HOSTS_KEEP="$(cd "$(dirname "${GHOST:-.}")/.." && pwd)"
    hosts_up 3 || exit 1
    GHOST_SLURM_NS=1 GHOST_SLURM_HOSTS=$HOSTS_DIR unshare --pid --fork --mount-proc --kill-child \
      "$0" "$@"
    exit $?
    ;;
  esac
  GHOST_SLURM_NS=1 exec unshare --pid --fork --mount-proc --kill-child "$0" "$@"
fi
mode=$1 prog=$2
: "${GHOSTRUN:?GHOSTRUN names the ghostrun binary}" "${GHOST:?GHOST names the ghost binary}"
here=$(cd "$(dirname "$0")" && pwd)
readme=$here/../../README.md
timeout_s=${GHOST_TEST_TIMEOUT:-120}
np=3 steps=150 sleep_ms=20
[ "$mode" = run ] || steps=300
[ "$mode" = node_lost ] && steps=400
source "$here/slurm_fixture.sh"

if [ -n "${GHOST_SLURM_HOSTS:-}" ]; then
  # A node per emulated host; everything the hosts share (Slurm's files, munge's socket, the job's
  # directory, ghost's runtime directory) in the set's shared directory, never under /tmp.
  source "$here/../hosts/hosts.sh"
  hosts_attach "$GHOST_SLURM_HOSTS" || exit 1
  work=$(mktemp -d "$HOSTS_SHARED/ghost-slurm.XXXXXX")
  export SLURM_FIXTURE_HOSTS=1
  # What a cluster's site configuration says: mpirun's daemons and the ranks talk over the hosts'
  # network (the machine's other interfaces are not routed between the hosts).
  export OMPI_MCA_oob_tcp_if_include=$HOSTS_SUBNET OMPI_MCA_btl_tcp_if_include=$HOSTS_SUBNET
else
  work=$(mktemp -d /tmp/ghost-slurm.XXXXXX)
fi
chmod 755 "$work"
cleanup() {
  slurm_fixture_stop
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: slurm $mode: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  [ -n "${jobid:-}" ] && timeout 5 scontrol show job "$jobid"
  slurm_fixture_dump
  exit 1
}

# The ranks' environment as under the test (mpirun as root), no oversubscription: mpirun must get
# its slots (3 on this 2-CPU machine) from the Slurm allocation.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMPI_MCA_rmaps_base_oversubscribe
# Private runtime and temporary directories: the job ids (ghostrun's pids) and Open MPI's session
# directories of this PID namespace must not meet those of processes outside it.
export XDG_RUNTIME_DIR=$work/run TMPDIR=$work/tmp
mkdir -m 700 "$XDG_RUNTIME_DIR" "$TMPDIR"
export PATH=$(dirname "$GHOSTRUN"):$(dirname "$GHOST"):$PATH

case $(basename "$prog") in
*mpich*) native_mpirun=mpirun.mpich ;; # Hydra oversubscribes as it is
*) native_mpirun="mpirun.openmpi --oversubscribe" ;;
esac
# (the reference output: the sleep between steps changes nothing the program prints)
timeout -k 5 "$timeout_s" $native_mpirun -np $np "$prog" $steps 0 \
  >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"

slurm_fixture_start "$work/slurm" 60
rc=$?
[ $rc = 77 ] && {
  echo "SKIP: Slurm cannot run here"
  exit 77
}
[ $rc = 0 ] || fail "the private Slurm did not start"

# The README's job script: the indented block after "## Running under Slurm" that starts with
# "#!/bin/bash".
awk '/^## Running under Slurm/ {s = 1} s == 1 && /^    #!\/bin\/bash/ {s = 2}
     s == 2 && !/^    / {exit} s == 2 {print substr($0, 5)}' "$readme" >"$work/readme.sbatch"
grep -q '^ghostrun --ckpt-dir ckpt --interval 600 .* \./job_steps 3000 20 &$' "$work/readme.sbatch" ||
  fail "no job script in README.md's 'Running under Slurm' (or its ghostrun line changed)"
sed -e 's/--interval 600/--interval 1/' -e "s| \./job_steps 3000 20 &$| ./job_steps $steps $sleep_ms \&|" \
  "$work/readme.sbatch" >"$work/job.sh"
ln -s "$prog" "$work/job_steps"

# --overcommit: 3 tasks on this 2-CPU node. The emulated hosts have one CPU each: 3 tasks, 3 nodes.
over=--overcommit
[ -n "${GHOST_SLURM_HOSTS:-}" ] && over=""
jobid=$(cd "$work" && timeout 20 sbatch --parsable $over job.sh 2>"$work/sbatch.err") ||
  fail "sbatch failed: $(cat "$work/sbatch.err")"
out=$work/steps-$jobid.out

job_state() { timeout 10 scontrol show job "$jobid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }

# Waits for the job's state to match REGEX; fails at once in another final state, or after the
# timeout.
wait_state() { # wait_state REGEX WHAT
  local st=""
  for _ in $(seq 1 $((timeout_s * 5))); do
    st=$(job_state)
    [[ $st =~ ^($1)$ ]] && return 0
    [[ $st =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|PREEMPTED|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)$ ]] &&
      break
    sleep 0.2
  done
  fail "$2: the job is ${st:-gone}"
}

# Sets job (ghostrun's job id) once the Nth "ghostrun: job" line is there and every rank of that
# job has registered with its coordinator.
ranks_up() { # ranks_up N
  job=""
  for _ in $(seq 1 $((timeout_s * 50))); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$out" 2>/dev/null | sed -n "$1p")
    [ -n "$job" ] && [ "$(ghost status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = $np ] &&
      return 0
    sleep 0.02
  done
  fail "not every rank of run $1 registered with ghostrun (job '$job')"
}

rank_pids() { ghost status "$job" | awk '$1 == "rank" {print $4}'; }

same_as_native() {
  grep -h '^rank [0-9]*: ' "$work/native.out" | sort >"$work/ref.sorted"
  grep -h '^rank [0-9]*: ' "$out" | sort >"$work/got.sorted"
  [ "$(grep -c ' PASS$' "$work/got.sorted")" = $np ] || fail "not every rank passed"
  diff -u "$work/ref.sorted" "$work/got.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
}

wait_state RUNNING "the job did not start"
# Waits for the job's first periodic checkpoint.
wait_checkpoint() {
  for _ in $(seq 1 $((timeout_s * 50))); do
    [ -s "$work/ckpt/latest" ] && return 0
    sleep 0.02
  done
  fail "no periodic checkpoint"
}

case $mode in
run)
  ranks_up 1
  pids=$(rank_pids)
  [ "$(echo "$pids" | wc -w)" = $np ] || fail "ghost status names no $np ranks: $pids"
  listed=$(timeout 10 scontrol listpids "$jobid" 2>&1)
  for p in $pids; do
    tr '\0' '\n' <"/proc/$p/environ" | grep -qx "SLURM_JOB_ID=$jobid" ||
      fail "rank pid $p does not run in job $jobid"
    echo "$listed" | awk '{print $1}' | grep -qx "$p" ||
      fail "Slurm does not count rank pid $p in job $jobid: $listed"
  done
  wait_state COMPLETED "the job did not complete"
  grep -q "^job $jobid: ghostrun exited 0$" "$out" || fail "ghostrun did not exit 0"
  ! grep -q resuming "$out" || fail "a fresh job resumed"
  ;;
usr1)
  ranks_up 1
  # What --signal=B:USR1@S does at S seconds before the time limit, now: USR1 to the batch shell.
  timeout 10 scancel --batch --signal=USR1 "$jobid" || fail "scancel --batch --signal=USR1 failed"
  wait_state PENDING "the job was not requeued"
  grep -q "^ghostrun: job $job: stopped after its checkpoint $work/ckpt/gen-[0-9]* " "$out" ||
    fail "ghostrun did not stop after a checkpoint"
  grep -q "^job $jobid: ghostrun exited 75$" "$out" || fail "ghostrun did not exit 75"
  gen=$(cat "$work/ckpt/latest")
  timeout 10 scontrol show job "$jobid" | grep -q 'Restarts=1 ' || fail "Slurm does not count a restart"
  # Slurm delays a requeued job by about two minutes; start it now, but not within the second of
  # the requeue: slurmd revoked the job's credential when the requeue killed it and refuses a new
  # one made in that same second ("Job credential revoked": the job FAILED at once). A start time
  # in the future instead waits for the scheduler's next periodic pass.
  sleep 1.1
  timeout 10 scontrol update jobid="$jobid" starttime=now || fail "scontrol update starttime failed"
  wait_state COMPLETED "the requeued job did not complete"
  grep -q "^ghostrun: resuming from $work/ckpt/$gen (--fresh starts afresh)$" "$out" ||
    fail "the requeued job did not resume from $gen"
  grep -q "^job $jobid: ghostrun exited 0$" "$out" || fail "the resumed ghostrun did not exit 0"
  [ -e "$work/ckpt/ended" ] || fail "no ckpt/ended after the job's end"
  ;;
auto)
  ranks_up 1
  wait_checkpoint
  sleep 0.5
  victim=$(ghost status "$job" | awk '$1 == "rank" && $2 == 1 {print $4}')
  [ -n "$victim" ] || fail "no rank 1"
  kill -KILL "$victim"
  wait_state COMPLETED "the job did not complete after a rank was killed"
  grep -q "automatic restart 1 of 3" "$out" || fail "no automatic restart"
  grep -q "^job $jobid: ghostrun exited 0$" "$out" || fail "ghostrun did not exit 0"
  ;;
multi)
  ranks_up 1
  # The batch script (ghostrun, mpirun) runs on the allocation's first node; mpirun started its
  # daemons on the two others through srun: a rank on each node, each in the job.
  nodes=$(timeout 10 scontrol show hostnames "$(timeout 10 squeue -h -j "$jobid" -o %N)")
  [ "$(echo "$nodes" | wc -l)" = 3 ] || fail "the job has not 3 nodes: $nodes"
  first=$(echo "$nodes" | head -1)
  timeout 10 scontrol show job "$jobid" | grep -q " BatchHost=$first$" ||
    fail "the batch script does not run on the first node $first"
  [ "$(ip netns identify "$job")" = "ghost-$HOSTS_ID-h1" ] || fail "ghostrun does not run on $first"
  placed=$(ghost status "$job" | awk '$1 == "rank" {print $4, $6}')
  [ "$(echo "$placed" | awk '{print $2}' | sort -u | wc -l)" = $np ] ||
    fail "the ranks are not on $np different hosts: $placed"
  while read -r p h; do
    echo "$nodes" | grep -qx "$h" || fail "rank pid $p runs on $h, not a node of the job"
    tr '\0' '\n' <"/proc/$p/environ" | grep -qx "SLURM_JOB_ID=$jobid" ||
      fail "rank pid $p does not run in job $jobid"
    timeout 10 scontrol listpids "$jobid" "$h" 2>&1 | awk '{print $1}' | grep -qx "$p" ||
      fail "Slurm does not count rank pid $p in job $jobid on $h"
  done <<<"$placed"
  # A periodic checkpoint names the 3 hosts.
  wait_checkpoint
  gen=$(cat "$work/ckpt/latest")
  [ "$(grep -o '"host": *"[^"]*"' "$work/ckpt/$gen/manifest.json" | sort -u | wc -l)" = $np ] ||
    fail "the manifest of $gen does not name $np hosts: $(cat "$work/ckpt/$gen/manifest.json")"
  wait_state COMPLETED "the job did not complete"
  grep -q "^job $jobid: ghostrun exited 0$" "$out" || fail "ghostrun did not exit 0"
  ;;
node_lost)
  ranks_up 1
  wait_checkpoint
  sleep 0.5
  # The third node is lost: every process in it (its slurmd, mpirun's daemon, the rank) killed.
  lost=${HOSTS_NAMES[2]}
  ghost status "$job" | awk '$1 == "rank" {print $6}' | grep -qx "$lost" || fail "no rank on $lost"
  pids=$(ip netns pids "ghost-$HOSTS_ID-h3")
  [ -n "$pids" ] || fail "nothing runs on $lost"
  kill -KILL $pids
  # The restarted ranks run on the two nodes left.
  end=$((SECONDS + timeout_s))
  while [ $SECONDS -lt $end ]; do
    grep -q "automatic restart 1 of 3" "$out" &&
      [ "$(ghost status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = $np ] && break
    sleep 0.02
  done
  placed=$(ghost status "$job" | awk '$1 == "rank" {print $6}')
  [ "$(echo "$placed" | wc -l)" = $np ] || fail "the ranks did not come back: $placed"
  ! echo "$placed" | grep -qx "$lost" || fail "a rank restarted on the lost node: $placed"
  wait_state COMPLETED "the job did not complete after the node $lost was lost"
  grep -q "automatic restart 1 of 3" "$out" || fail "no automatic restart"
  grep -q "^ghostrun: job $job: left out the lost Slurm node(s) $lost (slurmd at ${HOSTS_IPS[2]}:[0-9]*: " "$out" ||
    fail "ghostrun did not say it left out $lost"
  grep -q "^job $jobid: ghostrun exited 0$" "$out" || fail "ghostrun did not exit 0"
  # Slurm itself declares the node down (SlurmdTimeout): the job, submitted with --no-kill, was
  # not ended by it (wait_state fails on NODE_FAIL).
  end=$((SECONDS + timeout_s))
  while [ $SECONDS -lt $end ]; do
    timeout 10 sinfo -h -n "$lost" -o %t | grep -q '^down' && break
    sleep 0.2
  done
  timeout 10 sinfo -h -n "$lost" -o %t | grep -q '^down' || fail "Slurm never declared $lost down"
  ;;
*)
  echo "usage: $0 run|usr1|auto|multi|node_lost PROGRAM" >&2
  exit 2
  ;;
esac
same_as_native

[ -n "${GHOST_SLURM_LOGS:-}" ] && slurm_fixture_dump # the daemons' logs, also on success

# Nothing is left once the fixture has stopped: no daemon, job, mpirun or rank in this namespace.
slurm_fixture_stop
for _ in $(seq 1 50); do
  left=$(ps -e -o pid=,comm= | awk -v me="$(basename "$0")" '$1 != 1 && $2 != "ps" && $2 != me && $2 != "awk"')
  [ -z "$left" ] && break
  sleep 0.1
done
[ -z "$left" ] || fail "processes left after the fixture stopped: $left"
echo "OK: slurm $mode (job $jobid)"
