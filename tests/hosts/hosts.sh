#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Emulated hosts on this machine (README.md): a network namespace each, joined by veth pairs to a
# bridge in the root namespace, each with its own IPv4 address, hostname and private /tmp.
#
# As a library (source it; bash):
#   hosts_up N        brings a set of N hosts up; sets HOSTS_ID, HOSTS_DIR (the set's directory),
#                     HOSTS_SHARED (a directory every host sees, for images and checkpoints),
#                     HOSTS_IPS (array: host k is ${HOSTS_IPS[k-1]}), HOSTS_NAMES (h1..hN),
#                     HOSTS_ROOT_IP (the root namespace's address on the bridge), HOSTS_SUBNET
#                     (a.b.c.0/24), HOSTS_AGENT (the launcher agent); the set is removed on EXIT
#                     (trap) and by the next hosts_up if its owner was killed
#   hosts_down        removes the set (idempotent)
#   hosts_attach DIR  sets the variables of hosts_up for a set another process brought up
#   hosts_can         status 0 if this machine can make namespaces (root, ip, unshare)
#   hosts_slow K PCT  makes host K slow: the processes started on it from then on share PCT% of
#                     one CPU (a CPU cgroup with a quota: cgroup v2 cpu.max, or v1 cfs_quota_us)
#   hosts_hang K      host K's agent starts nothing from then on (it sleeps until killed)
#   hosts_vanish K    host K disappears: its link goes, its processes are killed, its namespace
#                     deleted (a host that crashed or left the network)
# As a command:
#   hosts.sh up N     brings a set up and prints its directory (removed by `down` or, once this
#                     shell's parent is gone, by the next `up`); hosts.sh down DIR; hosts.sh gc
# Environment: GHOST_HOSTS_ROOT (default /var/tmp/ghost-hosts) holds every set's directory.

HOSTS_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOSTS_BASE=${GHOST_HOSTS_ROOT:-/var/tmp/ghost-hosts}

hosts_can() {
  [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v unshare >/dev/null || return 1
  local probe=ghost-probe-$$
  ip netns add "$probe" 2>/dev/null || return 1
  ip netns del "$probe" 2>/dev/null
  return 0
}

# "pid starttime" of a process, to tell it from a later one with the same pid.
_hosts_proc_id() {
  local pid=$1 stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) } # the fields after "pid (comm) ": state is field 3, starttime field 22
  set -- $stat
  echo "$pid-${20}"
}

# Removes a set given its directory: its namespaces (and with them their veth ends), its bridge,
# its directories. Processes still running in a host are killed first (they would keep it alive).
_hosts_remove() {
  local dir=$1 id ns pids
  [ -f "$dir/id" ] || { rm -rf "$dir"; return 0; }
  id=$(cat "$dir/id")
  # A slow host's CPU cgroup (hosts_slow): emptied, then removed.
  for cg in "$dir"/h*/cgroup; do
    [ -f "$cg" ] || continue
    cg=$(cat "$cg")
    case $cg in /sys/fs/cgroup/*ghost-$id-h*) ;; *) continue ;; esac
    pids=$(cat "$cg/cgroup.procs" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    for _ in $(seq 1 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.05; done
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^ghost-$id-h[0-9]*$"); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  ip link del "${id}b" 2>/dev/null
  # Root-side veth ends go with their peers; one left by an interrupted `up` is removed here.
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^${id}v[0-9]*$"); do
    ip link del "$l" 2>/dev/null
  done
  rm -rf "$dir"
}

# Removes the sets whose owner is gone (a test killed before its trap ran).
hosts_gc() {
  local d owner
  for d in "$HOSTS_BASE"/*/; do
    [ -d "$d" ] || continue
    d=${d%/}
    owner=$(cat "$d/owner" 2>/dev/null)
    if [ -z "$owner" ] || [ "$(_hosts_proc_id "${owner%%-*}")" != "$owner" ]; then
      _hosts_remove "$d"
    fi
  done
}

hosts_up() {
  local n=${1:-3} owner_pid=${2:-$$} k
  mkdir -p "$HOSTS_BASE" || return 1
  chmod 0755 "$HOSTS_BASE"
  exec {HOSTS_LOCK_FD}>"$HOSTS_BASE/.lock"
  flock "$HOSTS_LOCK_FD"
  hosts_gc
  # A unique id (interface names are at most 15 characters) and a /24 no interface or route uses.
  while :; do
    HOSTS_ID=$(printf 'g%05x' $(((RANDOM << 5 ^ $$ ^ RANDOM) & 0xfffff)))
    [ -e "$HOSTS_BASE/$HOSTS_ID" ] || ip link show "${HOSTS_ID}b" >/dev/null 2>&1 || break
  done
  local net="" c
  for c in $(seq 0 255); do
    if ! ip -4 route show table all 2>/dev/null | grep -q "10\.231\.$c\." &&
      ! ip -4 addr show 2>/dev/null | grep -q "inet 10\.231\.$c\."; then
      net=10.231.$c
      break
    fi
  done
  if [ -z "$net" ]; then
    flock -u "$HOSTS_LOCK_FD"
    echo "hosts: no free 10.231.x.0/24 subnet" >&2
    return 1
  fi
  HOSTS_DIR=$HOSTS_BASE/$HOSTS_ID
  mkdir -p "$HOSTS_DIR/shared"
  chmod 1777 "$HOSTS_DIR/shared"
  echo "$HOSTS_ID" >"$HOSTS_DIR/id"
  # Paths every host must see although they lie under /tmp, which is private on each host: the
  # project's tree (this library, the agent) and GHOST_HOSTS_KEEP's (colon-separated: the build
  # tree). The agent binds them into the host's /tmp (a checkout in /tmp stays usable).
  {
    (cd "$HOSTS_LIB_DIR/../.." && pwd)
    tr ':' '\n' <<<"${GHOST_HOSTS_KEEP:-}"
  } | grep '^/tmp/.' >"$HOSTS_DIR/keep"
  _hosts_proc_id "$owner_pid" >"$HOSTS_DIR/owner"
  HOSTS_SHARED=$HOSTS_DIR/shared
  HOSTS_SUBNET=$net.0/24
  HOSTS_ROOT_IP=$net.1
  HOSTS_AGENT=$HOSTS_LIB_DIR/agent.sh
  HOSTS_IPS=()
  HOSTS_NAMES=()
  local br=${HOSTS_ID}b ok=1 hex=${HOSTS_ID#g}
  # The bridge's own address is set, not left to the kernel: a bridge without one takes its
  # lowest port's, and takes another when that port goes (hosts_vanish), so that every host's
  # ARP entry for the root namespace went stale and its packets to ghostrun and mpirun were lost
  # for up to a minute (a "vanished host" then seemed to take the job's coordinator with it).
  {
    ip link add "$br" address "02:67:68:0${hex:0:1}:${hex:1:2}:${hex:3:2}" type bridge &&
      ip addr add "$HOSTS_ROOT_IP/24" dev "$br" &&
      ip link set "$br" up
  } || ok=0
  for ((k = 1; k <= n && ok; k++)); do
    local ns=ghost-$HOSTS_ID-h$k ip=$net.$((10 + k)) hdir=$HOSTS_DIR/h$k
    mkdir -p "$hdir/tmp"
    chmod 1777 "$hdir/tmp"
    {
      ip netns add "$ns" &&
        ip link add "${HOSTS_ID}v$k" type veth peer name "${HOSTS_ID}p$k" &&
        ip link set "${HOSTS_ID}p$k" netns "$ns" &&
        ip link set "${HOSTS_ID}v$k" master "$br" &&
        ip link set "${HOSTS_ID}v$k" up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" link set "${HOSTS_ID}p$k" name eth0 &&
        ip -n "$ns" addr add "$ip/24" dev eth0 &&
        ip -n "$ns" link set eth0 up &&
        ip -n "$ns" route add default via "$HOSTS_ROOT_IP"
    } || ok=0
    # Read by the agent: address or name -> host. The name carries the set's id: two sets up at
    # once (tests side by side) never share a host name, and a rank's hostname (what the
    # coordinator hears and a migration's relaunch gives mpirun) names its host.
    printf '%s %s %s\n' "$ns" "$HOSTS_ID-h$k" "$hdir/tmp" >"$HOSTS_DIR/host-$ip"
    cp "$HOSTS_DIR/host-$ip" "$HOSTS_DIR/host-$HOSTS_ID-h$k"
    HOSTS_IPS+=("$ip")
    HOSTS_NAMES+=("$HOSTS_ID-h$k")
  done
  flock -u "$HOSTS_LOCK_FD"
  exec {HOSTS_LOCK_FD}>&-
  if [ "$ok" != 1 ]; then
    echo "hosts: cannot set up the emulated hosts" >&2
    _hosts_remove "$HOSTS_DIR"
    return 1
  fi
  # Every address answers (a bridge port takes a moment to forward).
  for ip in "${HOSTS_IPS[@]}"; do
    for _ in $(seq 1 100); do
      ip netns exec "ghost-$HOSTS_ID-h1" bash -c "exec 3<>/dev/tcp/$ip/1" 2>&1 | grep -q refused && break
      sleep 0.05
    done
  done
  printf '%s\n' "${HOSTS_IPS[@]}" >"$HOSTS_DIR/hostfile"
  # The hosts' /etc/hosts: the launching node's name is its address on the bridge (Hydra's proxies
  # connect back to it by name), the hosts by name.
  {
    printf '127.0.0.1 localhost\n%s %s\n' "$HOSTS_ROOT_IP" "$(hostname)"
    for ((k = 1; k <= n; k++)); do printf "%s %s\n" "${HOSTS_IPS[k - 1]}" "${HOSTS_NAMES[k - 1]}"; done
  } >"$HOSTS_DIR/etc-hosts"
  trap hosts_down EXIT
  return 0
}

# Takes up a set brought up by another process (hosts_up there, e.g. before entering a PID
# namespace): sets the same variables as hosts_up from its directory; installs no trap (the set
# stays its owner's to remove).
hosts_attach() { # hosts_attach DIR
  local dir=$1 f ns name tmp
  [ -f "$dir/id" ] && [ -f "$dir/hostfile" ] || {
    echo "hosts: $dir is no set of hosts" >&2
    return 1
  }
  HOSTS_DIR=$dir
  HOSTS_ID=$(cat "$dir/id")
  HOSTS_SHARED=$dir/shared
  HOSTS_AGENT=$HOSTS_LIB_DIR/agent.sh
  mapfile -t HOSTS_IPS <"$dir/hostfile"
  HOSTS_NAMES=()
  for f in "${HOSTS_IPS[@]}"; do
    read -r ns name tmp <"$dir/host-$f"
    HOSTS_NAMES+=("$name")
  done
  HOSTS_SUBNET=${HOSTS_IPS[0]%.*}.0/24
  HOSTS_ROOT_IP=${HOSTS_IPS[0]%.*}.1
}

# hosts_slow K PCT: the processes the agent starts on host K from now on (mpirun's daemons, and
# their ranks) share PCT percent of one CPU, through a CPU cgroup with a quota. A rank that leaves
# the host (a migration) leaves the cgroup with it. Status 1 if this machine has no CPU controller
# to use (cgroup v2 with cpu enabled at the root, or v1's cpu hierarchy).
hosts_slow() {
  local k=$1 pct=$2 cg quota=$(($2 * 1000))
  [ "$quota" -ge 1000 ] || { echo "hosts: hosts_slow needs a percentage >= 1" >&2; return 1; }
  if grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    cg=/sys/fs/cgroup/ghost-$HOSTS_ID-h$k
    mkdir -p "$cg" && echo "$quota 100000" >"$cg/cpu.max" || return 1
  elif [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
    cg=/sys/fs/cgroup/cpu/ghost-$HOSTS_ID-h$k
    mkdir -p "$cg" && echo 100000 >"$cg/cpu.cfs_period_us" && echo "$quota" >"$cg/cpu.cfs_quota_us" ||
      return 1
  else
    echo "hosts: no CPU cgroup controller to slow a host with" >&2
    return 1
  fi
  echo "$cg" >"$HOSTS_DIR/h$k/cgroup"
}

# hosts_hang K: what mpirun starts on host K from now on never runs (the agent sleeps instead, as an
# sshd that accepts and then hangs).
hosts_hang() {
  : >"$HOSTS_DIR/h$1/hang"
}

# hosts_vanish K: host K is gone, as a crashed machine: its network first (its peers see no FIN nor
# RST, only silence), then its processes, then its namespace.
hosts_vanish() {
  local k=$1 ns=ghost-$HOSTS_ID-h$1 pids
  ip link del "${HOSTS_ID}v$k" 2>/dev/null
  pids=$(ip netns pids "$ns" 2>/dev/null)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -f "$HOSTS_DIR/host-${HOSTS_IPS[k - 1]}" "$HOSTS_DIR/host-${HOSTS_NAMES[k - 1]}"
}

hosts_down() {
  [ -n "${HOSTS_DIR:-}" ] && _hosts_remove "$HOSTS_DIR"
  HOSTS_DIR=""
}

# Runs a command on host K (1-based) as the agent would.
hosts_run() { # hosts_run K COMMAND...
  local k=$1
  shift
  "$HOSTS_AGENT" "${HOSTS_IPS[k - 1]}" "$(printf '%q ' "$@")"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  case ${1:-} in
  up)
    hosts_up "${2:-3}" "$PPID" || exit 1
    trap - EXIT
    echo "$HOSTS_DIR"
    ;;
  down) _hosts_remove "${2:?usage: hosts.sh down DIR}" ;;
  gc) hosts_gc ;;
  *)
    echo "usage: hosts.sh up N | down DIR | gc" >&2
    exit 2
    ;;
  esac
fi
