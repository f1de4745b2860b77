# SPDX-License-Identifier: Apache-2.0
# A private Slurm on this machine, for tests (sourced by bash scripts; see README.md):
#   slurm_fixture_start DIR [TIMEOUT_S]  munged with its own key and socket, slurmctld and slurmd
#                                        (-D, background children of this shell), one partition
#                                        with this host as its only node; returns once `sinfo`
#                                        shows the node idle. 0: running (SLURM_CONF exported);
#                                        77: Slurm cannot run here (not root, not installed);
#                                        1: it did not come up (the reason and logs on stderr).
#   slurm_fixture_stop                   cancels every job, waits for them to leave, stops the
#                                        daemons (TERM, then KILL), removes nothing: DIR is the
#                                        caller's
# Everything lives under DIR: slurm.conf, state, spool, logs, munge's key, socket and seed. Ports
# are picked free at start. Nothing of /etc/slurm or the system's munge is touched or used.
# With SLURM_FIXTURE_HOSTS=1 and a set of emulated hosts up (tests/hosts/hosts.sh: HOSTS_*), the
# nodes are the hosts, one CPU each, a slurmd inside each (DIR must then be in HOSTS_SHARED).

slurm_fixture_pids=()

slurm_fixture_log() { echo "slurm fixture: $*" >&2; }

# A TCP port nothing listens on (nor is bound to) now.
slurm_fixture_free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    ss -Htan "( sport = :$p )" 2>/dev/null | grep -q . || {
      echo "$p"
      return 0
    }
  done
  return 1
}

slurm_fixture_start() {
  local dir=$1 limit=${2:-60}
  if [ "$(id -u)" != 0 ]; then
    slurm_fixture_log "not root: slurmd must run as root to start jobs"
    return 77
  fi
  local b
  for b in munged munge slurmctld slurmd sbatch sinfo squeue scontrol scancel; do
    command -v "$b" >/dev/null || {
      slurm_fixture_log "$b is not installed (scripts/install-deps.sh installs slurm-wlm and munge)"
      return 77
    }
  done
  mkdir -p "$dir"/{munge,state,spool,log} || return 1
  chmod 755 "$dir" "$dir/munge" || return 1
  # munged refuses a key others may read and a socket directory others cannot enter.
  head -c 1024 /dev/urandom >"$dir/munge/munge.key" && chmod 400 "$dir/munge/munge.key" || return 1
  munged -F --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" \
    >"$dir/log/munged.log" 2>&1 &
  slurm_fixture_pids+=($!)

  # The nodes: this host as Slurm sees it (its name, CPUs, memory), or, when a set of emulated hosts
  # is up (SLURM_FIXTURE_HOSTS=1, tests/hosts/hosts.sh's HOSTS_* variables), one node per host,
  # named as the host calls itself (a rank's hostname is its node's name), at the host's address,
  # with one CPU each (a task per node: --ntasks=3 spans 3 nodes). slurmctld stays here, reached by
  # the hosts at this machine's address on their bridge.
  local node name ctl nodes=() names=() k
  node=$(slurmd -C 2>/dev/null | head -1)
  case $node in
  NodeName=*) ;;
  *)
    slurm_fixture_log "slurmd -C says nothing usable: $node"
    return 1
    ;;
  esac
  name=${node%% *}
  name=${name#NodeName=}
  ctl=$name
  local extra=""
  if [ -n "${SLURM_FIXTURE_HOSTS:-}" ]; then
    ctl="$(hostname)($HOSTS_ROOT_IP)"
    # A node whose slurmd stops answering is declared DOWN after 5 s, not 5 minutes: a job that
    # lost a node meets it while it runs (and is ended by it, unless submitted with --no-kill).
    extra="SlurmdTimeout=5"
    for ((k = 0; k < ${#HOSTS_IPS[@]}; k++)); do
      names+=("${HOSTS_NAMES[k]}")
      nodes+=("NodeName=${HOSTS_NAMES[k]} NodeAddr=${HOSTS_IPS[k]} CPUs=1 RealMemory=1000")
    done
  else
    names=("$name")
    nodes=("$node")
  fi
  for name in "${names[@]}"; do mkdir -p "$dir/spool/$name" || return 1; done
  local cport dport
  cport=$(slurm_fixture_free_port) && dport=$(slurm_fixture_free_port) || {
    slurm_fixture_log "no free port"
    return 1
  }
  [ "$cport" != "$dport" ] || dport=$((cport + 1))
  cat >"$dir/slurm.conf" <<EOF
ClusterName=ghosttest
SlurmctldHost=$ctl
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=300
$extra
KillWait=5
InactiveLimit=0
$(printf '%s\n' "${nodes[@]}")
PartitionName=test Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  export SLURM_CONF=$dir/slurm.conf
  # Wait for munged's socket before the daemons authenticate with it.
  local i
  for i in $(seq 1 100); do
    [ -S "$dir/munge/munge.sock" ] && break
    sleep 0.1
  done
  [ -S "$dir/munge/munge.sock" ] || {
    slurm_fixture_log "munged did not start: $(tail -3 "$dir/log/munged.log")"
    return 1
  }
  # -i: a fresh cluster (no state to recover).
  slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  slurm_fixture_pids+=($!)
  # Each slurmd in its host (hosts_run: the host's network, hostname and /tmp; a fresh environment,
  # hence -f), or here.
  for name in "${names[@]}"; do
    if [ -n "${SLURM_FIXTURE_HOSTS:-}" ]; then
      k=${name##*-h}
      # The agent itself (as hosts_run runs it, not through a function in a subshell): its pid
      # becomes the slurmd's, which slurm_fixture_stop signals. `ip netns exec` mounts the host's
      # own /sys, without /sys/fs/cgroup, and slurmd 22.05 does not start without a cgroup plugin
      # (autodetected from what /sys/fs/cgroup holds): a tmpfs with systemd's named hierarchy
      # gives it cgroup/v1, which this configuration (proctrack/linuxproc, task/none) never uses.
      cat >"$dir/slurmd-in-host.sh" <<'EOS'
mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/systemd &&
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd &&
  exec slurmd -D -f "$1" -N "$2"
EOS
      "$HOSTS_AGENT" "${HOSTS_IPS[k - 1]}" exec /bin/sh "$dir/slurmd-in-host.sh" "$SLURM_CONF" "$name" \
        >"$dir/log/slurmd-$name.out" 2>&1 &
    else
      slurmd -D -f "$SLURM_CONF" -N "$name" >"$dir/log/slurmd.out" 2>&1 &
    fi
    slurm_fixture_pids+=($!)
  done
  slurm_fixture_nodes=("${names[@]}")
  slurm_fixture_dir=$dir
  local state=""
  for i in $(seq 1 $((limit * 5))); do
    state=$(timeout 10 sinfo -h -N -o %t 2>/dev/null | sort -u | tr '\n' ' ')
    [ "$state" = "idle " ] && [ "$(timeout 10 sinfo -h -N -t idle -o %N | wc -l)" = ${#names[@]} ] &&
      return 0
    for b in "${slurm_fixture_pids[@]}"; do
      kill -0 "$b" 2>/dev/null || {
        slurm_fixture_log "a daemon ended at start-up (pid $b)"
        slurm_fixture_dump
        return 1
      }
    done
    sleep 0.2
  done
  slurm_fixture_log "the nodes ${names[*]} are not all idle after ${limit} s (sinfo: '$state')"
  slurm_fixture_dump
  return 1
}

slurm_fixture_dump() {
  local f
  [ -n "${slurm_fixture_dir:-}" ] || return 0
  for f in "$slurm_fixture_dir"/log/*; do
    [ -s "$f" ] && {
      echo "--- $f" >&2
      tail -15 "$f" >&2
    }
  done
}

slurm_fixture_stop() {
  local p
  ((${#slurm_fixture_pids[@]})) || return 0
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${slurm_fixture_dir:-}" ]; then
    timeout 10 scancel --full --signal=KILL --user=root >/dev/null 2>&1
    timeout 10 scancel --user=root >/dev/null 2>&1
    for _ in $(seq 1 50); do
      [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null | head -1)" ] && break
      sleep 0.2
    done
  fi
  for p in "${slurm_fixture_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${slurm_fixture_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${slurm_fixture_pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${slurm_fixture_pids[@]}"; do wait "$p" 2>/dev/null; done
  slurm_fixture_pids=()
}
