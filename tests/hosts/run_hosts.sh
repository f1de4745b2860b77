#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# MPI jobs with their ranks on 3 emulated hosts (hosts.sh; README.md).
#   run_hosts.sh spread FLAVOUR -- COMMAND...
#            brings 3 hosts up and runs COMMAND (a test script of mpi-layer/tests taking mpirun
#            options last, e.g. run_compare.sh or run_job_ckpt.sh) with TMPDIR in the shared
#            directory and the options that place one rank on each host appended
#   run_hosts.sh restart FLAVOUR PROGRAM [MPIRUN OPTIONS...]
#            PROGRAM (job_steps.c) under ghostrun with --hostfile h1,h2,h3 (a rank per host, as
#            `ghost status` must say), `ghost checkpoint --kill`; the manifest names each rank's
#            host; `ghost restart DIR --host h2,h3,h1` (Hydra: -hosts) places rank r on the next
#            host, as status says, and the job ends with the output of a native run over the hosts
#   run_hosts.sh migrate FLAVOUR PROGRAM [MPIRUN OPTIONS...]
#            PROGRAM (job_steps.c) under ghostrun, a rank per host; `ghost migrate` moves rank 1 to
#            h3 and back (GHOST_MIGRATIONS moves, default 2) through a shared directory (or live,
#            GHOST_MIGRATE_VIA=ucx; live with the other ranks kept in their processes,
#            GHOST_MIGRATE_VIA=keep); status
#            names the hosts after each move; the output is a native run's over the hosts
#   run_hosts.sh balance FLAVOUR PROGRAM [MPIRUN OPTIONS...]
#            h3 made slow (hosts_slow: its processes share 2% of one CPU); PROGRAM (job_steps.c
#            with CPU work per step), a rank per host, under ghostrun --balance --balance-interval
#            1: the balancer moves rank 2 away from h3 (its log lines; `ghost status --json`: rank 2
#            elsewhere, bound to one CPU, ranks 0 and 1 in the same processes, the balancer's move
#            counted) and the job ends with the
#            output of a native run over the hosts. The verdict is on the move and the output,
#            never on speed.
#   run_hosts.sh migfault FLAVOUR PROGRAM [MPIRUN OPTIONS...]
#            PROGRAM (job_steps.c) on h1 and h2; live migrations of rank 1 to h3 that fail, each
#            in one line, the job going on where it was: h3's agent starts nothing (no new
#            process ever connects: the failure comes within --start-timeout), h3's new rank
#            process stopped (SIGSTOP) as soon as it runs, h3 vanishing (its link deleted, its
#            processes killed, its namespace deleted) mid-transfer (its receiver frozen first);
#            the output is a native run's
#   run_hosts.sh scratch FLAVOUR
#            the hosts' /tmp is private: a file a rank writes in its /tmp is seen by no rank on
#            another host, nor in the root namespace's /tmp; each host has its own name and address
# FLAVOUR: openmpi, openmpi-ucx (pml ucx) or mpich. Exit 77 (skipped) when this machine cannot
# make namespaces (not root). Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds
# per run, default 60).
set -u
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
mode=${1:?mode} flavour=${2:?flavour}
shift 2
timeout_s=${GHOST_TEST_TIMEOUT:-60}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

hosts_can || {
  echo "SKIP: cannot make network namespaces here (needs root, ip and unshare)"
  exit 77
}
# The build tree (GHOST is BUILD/launcher/ghost) stays visible on every host, even under /tmp.
export GHOST_HOSTS_KEEP="$(cd "$(dirname "${GHOST:-.}")/.." && pwd)"
hosts_up 3 || exit 1
fl=${flavour%-ucx}
if [ "$fl" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
host_list() { local IFS=,; echo "$*"; }
all=$(host_list "${HOSTS_IPS[@]}")
# How each mpirun reaches the hosts: its rsh agent (Open MPI; oob and btl on the bridge's subnet)
# or Hydra's ssh launcher.
if [ "$fl" = openmpi ]; then
  reach=(--mca plm_rsh_agent "$HOSTS_AGENT" --mca oob_tcp_if_include "$HOSTS_SUBNET"
    --mca btl_tcp_if_include "$HOSTS_SUBNET")
  [ "$flavour" = openmpi-ucx ] && reach+=(--mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any)
  place=(--host) # Open MPI: --host a,b,c
else
  reach=(-launcher ssh -launcher-exec "$HOSTS_AGENT")
  place=(-hosts) # Hydra's own spelling (ghost restart must pass it on)
fi
work=$HOSTS_SHARED/work
mkdir -p "$work"
hold_x=()
[ "$fl" = openmpi ] && hold_x=(-x MPIT_HOLD_FILE)
gpid=""
cleanup() {
  # ghostrun first, by itself: it ends its mpirun and any mpirun that still holds kept ranks
  # (Hydra's proxies are sessions of their own, out of the group's reach); then the group.
  if [ -n "$gpid" ] && kill -TERM "$gpid" 2>/dev/null; then
    for _ in $(seq 1 150); do
      kill -0 "$gpid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null
  hosts_down
}
trap cleanup EXIT

fail() {
  echo "FAIL: $mode $flavour: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  exit 1
}

# The ranks' lines of the run outputs FILES, sorted, must be the native run's, with NP PASS lines.
same_as_native() { # same_as_native NP FILES...
  local np=$1
  shift
  grep -h '^rank [0-9]*: ' "$work/native.out" | sort >"$work/ref.sorted"
  grep -h '^rank [0-9]*: ' "$@" | sort >"$work/got.sorted"
  [ "$(grep -c ' PASS$' "$work/got.sorted")" = "$np" ] || fail "not every rank passed"
  diff -u "$work/ref.sorted" "$work/got.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
}

# Starts a ghostrun or ghost restart in a session of its own; sets gpid and job once every rank
# (start_np of them, 3 unless set) has registered with the coordinator.
# With held=1, the job (and a restarted one: its environment is in its image) holds before its
# last step until finish 0 releases it (programs/mpit.h, MPIT_HOLD_FILE, in the directory every
# host sees): it cannot end under the test's feet, so its length need not cover what the test does
# to it on the slowest machine. Open MPI passes the variable to remote ranks with "${hold_x[@]}".
start() { # start NAME COMMAND...
  local name=$1 env=()
  shift
  rm -f "$work/release"
  [ "${held:-0}" = 1 ] && env=(MPIT_HOLD_FILE="$work/release")
  env "${env[@]}" setsid timeout -k 5 "$timeout_s" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  gpid=$!
  job=""
  for _ in $(seq 1 500); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$name.err" | head -1)
    [ -n "$job" ] && break
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before it printed its job id"
    sleep 0.02
  done
  [ -n "$job" ] || fail "$name printed no job id"
  for _ in $(seq 1 1000); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "${start_np:-3}" ] && return 0
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before every rank registered"
    sleep 0.02
  done
  fail "$name: not every rank registered with the coordinator"
}

finish() { # finish EXPECTED_STATUS (0: a held job is released to run to its end)
  [ "$1" = 0 ] && touch "$work/release"
  wait "$gpid"
  local rc=$?
  gpid=""
  [ "$rc" = "$1" ] || fail "the job exited $rc, expected $1"
}

# "h1 h2 h3": the host of rank 0, 1, 2 as `ghost status --json JOB` shows it.
rank_hosts() {
  "$GHOST" status --json "$job" | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
print(" ".join(r["host"] for r in sorted(j["ranks"], key=lambda r: r["rank"])))'
}

case $mode in
spread)
  [ "${1:-}" = -- ] && shift
  [ $# -ge 1 ] || fail "no command"
  export TMPDIR=$work
  "$@" "${reach[@]}" "${place[@]}" "$all"
  rc=$?
  [ $rc = 0 ] || fail "$(basename "$1") exited $rc"
  echo "OK: spread over ${HOSTS_IPS[*]}: $(basename "$1")"
  ;;
restart)
  prog=${1:?program}
  shift
  extra=("$@")
  cd "$work" || exit 1
  ck=$HOSTS_SHARED/ck
  hf=$work/hostfile
  # One slot per host (Open MPI counts a host's cores without slots=; Hydra: HOST:N).
  for ip in "${HOSTS_IPS[@]}"; do
    if [ "$fl" = openmpi ]; then echo "$ip slots=1"; else echo "$ip:1"; fi
  done >"$hf"
  steps=300 sleep_ms=20 # 6 s: the placement check and the checkpoint come first, also under load
  t0=$SECONDS
  # (the reference output: its sleep between steps changes nothing it prints)
  timeout -k 5 "$timeout_s" $mpirun -np 3 "${reach[@]}" "${place[@]}" "$all" "${extra[@]}" \
    "$prog" $steps 0 >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"
  t1=$SECONDS
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np 3 --hostfile "$hf" "${reach[@]}" "${extra[@]}" \
    "$prog" $steps $sleep_ms
  [ "$(rank_hosts)" = "${HOSTS_NAMES[*]}" ] || fail "ranks not on ${HOSTS_NAMES[*]} (--hostfile): $(rank_hosts)"
  timeout -k 5 60 "$GHOST" checkpoint --kill "$job" >"$work/ckpt.out" 2>"$work/ckpt.err" ||
    fail "ghost checkpoint --kill failed"
  finish 75
  t2=$SECONDS
  hosts=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(" ".join(r["host"] for r in sorted(m["ranks"], key=lambda r: r["rank"])))' "$ck/gen-1/manifest.json")
  [ "$hosts" = "${HOSTS_NAMES[*]}" ] || fail "the manifest's hosts are '$hosts', not '${HOSTS_NAMES[*]}'"
  # Each rank on the next host: the placement given to ghost restart replaces the manifest's.
  start run2 "$GHOST" restart "$ck" "${place[@]}" "$(host_list "${HOSTS_IPS[1]}" "${HOSTS_IPS[2]}" "${HOSTS_IPS[0]}")"
  [ "$(rank_hosts)" = "${HOSTS_NAMES[1]} ${HOSTS_NAMES[2]} ${HOSTS_NAMES[0]}" ] || fail "restarted ranks not on the next hosts: $(rank_hosts)"
  finish 0
  same_as_native 3 "$work/run.out" "$work/run2.out"
  echo "OK: restart $flavour: ranks on h1 h2 h3, restarted on h2 h3 h1, output as native" \
    "(native $((t1 - t0)) s, run and checkpoint $((t2 - t1)) s, restart $((SECONDS - t2)) s)"
  ;;
migrate)
  # Rank 1 moves from h2 to h3 and back, GHOST_MIGRATIONS times in all (default 2;
  # the issue's ten round trips: GHOST_MIGRATIONS=20, a soak: benchmarks/migrate/round_trips.sh),
  # while the job
  # runs (ranks inside Sendrecv/Waitall/collectives or sleeping between steps); ghost status says
  # where every rank is after each move; the output is the native run's over the same hosts.
  prog=${1:?program}
  shift
  extra=("$@")
  cd "$work" || exit 1
  ck=$HOSTS_SHARED/ck
  hf=$work/hostfile
  for ip in "${HOSTS_IPS[@]}"; do
    if [ "$fl" = openmpi ]; then echo "$ip slots=1"; else echo "$ip:1"; fi
  done >"$hf"
  moves=${GHOST_MIGRATIONS:-2}
  # GHOST_MIGRATE_VIA=ucx: live migrations (no image on disk) instead of the shared directory.
  via=fs:$HOSTS_SHARED/mig
  [ "${GHOST_MIGRATE_VIA:-fs}" = ucx ] && via=ucx
  # GHOST_MIGRATE_VIA=keep: live, the ranks that stay keep their processes (--keep); the pids of
  # ranks 0 and 2 must not change.
  keep=()
  [ "${GHOST_MIGRATE_VIA:-fs}" = keep ] && via=ucx keep=(--keep)
  # About 3 s of steps a move (held: a slower move finds the job waiting before its last step).
  steps=$((100 + 100 * moves)) sleep_ms=20
  timeout_s=$((timeout_s + 30 * moves))
  timeout -k 5 "$timeout_s" $mpirun -np 3 "${reach[@]}" "${place[@]}" "$all" "${extra[@]}" \
    "$prog" $steps 0 >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"
  held=1 start run "$GHOSTRUN" --ckpt-dir "$ck" -np 3 --hostfile "$hf" "${reach[@]}" "${hold_x[@]}" \
    "${extra[@]}" "$prog" $steps $sleep_ms
  [ "$(rank_hosts)" = "${HOSTS_NAMES[*]}" ] || fail "ranks not on ${HOSTS_NAMES[*]}: $(rank_hosts)"
  for ((k = 1; k <= moves; k++)); do
    if ((k % 2)); then to=2; else to=1; fi
    stay=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 != 1 {print $2 ":" $4}' | tr '\n' ' ')
    timeout -k 5 120 "$GHOST" migrate "$job" --rank 1 --to "${HOSTS_NAMES[to]}" --via "$via" "${keep[@]}" \
      >>"$work/mig.out" 2>>"$work/mig.err" || fail "migration $k failed: $(tail -1 "$work/mig.err")"
    want="${HOSTS_NAMES[0]} ${HOSTS_NAMES[to]} ${HOSTS_NAMES[2]}"
    [ "$(rank_hosts)" = "$want" ] || fail "after migration $k ranks are on $(rank_hosts), not $want"
    if [ ${#keep[@]} -gt 0 ]; then
      now=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 != 1 {print $2 ":" $4}' | tr '\n' ' ')
      [ "$now" = "$stay" ] || fail "migration $k with --keep changed the staying ranks' processes: $stay-> $now"
      tail -1 "$work/mig.out" | grep -q ' via=ucx+keep ' || fail "migration $k: $(tail -1 "$work/mig.out")"
    fi
    kill -0 "$gpid" 2>/dev/null || fail "the job ended during migration $k (too short for this machine?)"
  done
  finish 0
  same_as_native 3 "$work/run.out"
  echo "OK: migrate $flavour: rank 1 moved $moves times between ${HOSTS_NAMES[1]} and ${HOSTS_NAMES[2]};" \
    "downtimes: $(sed -n 's/.*downtime_s=\([0-9.]*\).*/\1/p' "$work/mig.out" | tr '\n' ' ')"
  ;;
balance)
  prog=${1:?program}
  shift
  extra=("$@")
  cd "$work" || exit 1
  hf=$work/hostfile
  for ip in "${HOSTS_IPS[@]}"; do
    if [ "$fl" = openmpi ]; then echo "$ip slots=1"; else echo "$ip:1"; fi
  done >"$hf"
  # About 5e8 rounds of arithmetic per rank (about 1 s of one CPU): at 2% of a CPU, rank 2 would
  # need some 50 s on h3 alone, so the job cannot end before the balancer has had its windows.
  steps=200 rounds=2500
  timeout_s=$((timeout_s + 60)) # a loaded machine
  timeout -k 5 "$timeout_s" $mpirun -np 3 "${reach[@]}" "${place[@]}" "$all" "${extra[@]}" \
    "$prog" $steps 0 $rounds >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"
  hosts_slow 3 2 || { echo "SKIP: no CPU cgroup controller to slow a host with"; exit 77; }
  start run "$GHOSTRUN" --balance --balance-interval 1 --ckpt-dir "$HOSTS_SHARED/ck" -np 3 \
    --hostfile "$hf" "${reach[@]}" "${extra[@]}" "$prog" $steps 0 $rounds
  [ "$(rank_hosts)" = "${HOSTS_NAMES[*]}" ] || fail "ranks not on ${HOSTS_NAMES[*]}: $(rank_hosts)"
  # While the job runs: once the balancer counts a move, rank 2 is elsewhere, bound to one CPU,
  # and ranks 0 and 1 run on in the processes they had (the balancer's moves keep them).
  others() { python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(",".join(str(r["pid"]) for r in sorted(j["ranks"], key=lambda r: r["rank"]) if r["rank"] != 2))' "$1"; }
  "$GHOST" status --json "$job" >"$work/status0.json" || fail "ghost status --json $job failed"
  others_before=$(others "$work/status0.json")
  seen=""
  while kill -0 "$gpid" 2>/dev/null; do
    "$GHOST" status --json "$job" >"$work/status.json" 2>/dev/null || break
    seen=$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
b = j.get("balancer")
if b is None:
    print("nobalancer")
elif b["moves"] >= 1:
    r2 = [r for r in j["ranks"] if r["rank"] == 2][0]
    bound = r2.get("bound_cpus", "?")
    print("moved %s %s" % (r2["host"], bound) if "-" not in bound and "," not in bound
          else "unbound %s %s" % (r2["host"], bound))' "$work/status.json" 2>/dev/null)
    if [ -n "$seen" ]; then
      [ "$seen" = nobalancer ] || others_after=$(others "$work/status.json")
      break
    fi
    sleep 0.2
  done
  [ "$seen" != nobalancer ] || fail "ghost status --json shows no balancer"
  [ -z "$seen" ] || [ "$others_after" = "$others_before" ] ||
    fail "ranks 0 and 1 did not keep their processes: pids $others_before before the move, $others_after after"
  finish 0
  grep -q "balancer: moving rank 2 from ${HOSTS_NAMES[2]} to " "$work/run.err" ||
    fail "the balancer did not move rank 2 away from the slow host ${HOSTS_NAMES[2]}"
  grep -q "balancer: rank 2 runs on " "$work/run.err" || fail "rank 2's move did not complete"
  case $seen in
  "moved ${HOSTS_NAMES[2]} "*) fail "status after the move still has rank 2 on ${HOSTS_NAMES[2]}" ;;
  moved*) ;;
  "") echo "note: the job ended before status showed the move" ;;
  *) fail "status after the move: rank 2 $seen (not bound to one CPU)" ;;
  esac
  same_as_native 3 "$work/run.out"
  echo "OK: balance $flavour: $(grep -h 'balancer: moving rank' "$work/run.err" | head -1 | sed 's/^ghostrun: job [0-9]*: //');" \
    "status: rank 2 ${seen#moved }; output as native"
  ;;
migfault)
  prog=${1:?program}
  shift
  extra=("$@")
  cd "$work" || exit 1
  hf=$work/hostfile
  for ip in "${HOSTS_IPS[0]}" "${HOSTS_IPS[1]}"; do
    if [ "$fl" = openmpi ]; then echo "$ip slots=1"; else echo "$ip:1"; fi
  done >"$hf"
  two=$(host_list "${HOSTS_IPS[0]}" "${HOSTS_IPS[1]}")
  # Held until the three failures are over (14-33 s: each new mpirun that lost a host takes its
  # 5 s between SIGTERM and SIGKILL to go, and the answer waits for it).
  steps=300 sleep_ms=20
  # A receiver stopped after the image's last byte holds the sender for the verdict's bound
  # (resources/ucx: the idle timeout, 30 s, for a small image) while the job stays quiescent.
  timeout_s=$((timeout_s + 150))
  timeout -k 5 "$timeout_s" $mpirun -np 2 "${reach[@]}" "${place[@]}" "$two" "${extra[@]}" \
    "$prog" $steps 0 >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"
  # The receivers' test hook (launcher/commands.cpp), read from each host's own /tmp.
  export GHOST_TEST_RECEIVE_DIE=/tmp/ghost-receive-stop
  [ "$fl" = openmpi ] && extra+=(-x GHOST_TEST_RECEIVE_DIE)
  # --ghost-verbose: the coordinator's timed notes are in run.err, which a failure prints.
  held=1 start_np=2 start run "$GHOSTRUN" --ghost-verbose --ckpt-dir "$HOSTS_SHARED/ck" -np 2 --hostfile "$hf" \
    "${reach[@]}" "${hold_x[@]}" "${extra[@]}" "$prog" $steps $sleep_ms
  where="${HOSTS_NAMES[0]} ${HOSTS_NAMES[1]}"
  [ "$(rank_hosts)" = "$where" ] || fail "ranks not on $where: $(rank_hosts)"
  # failed_move NAME START_MS: a migration of rank 1 to h3 that must fail in one line within
  # START_MS + 60 s (a stopped receiver's verdict wait, 30 s, then the new mpirun's end: SIGTERM,
  # SIGKILL 5 s later; 33 s seen with a build running alongside), every rank where it was. The bound is there to catch a failure that waits
  # for the default start timeout (60 s) or forever, not to time the failure.
  failed_move() {
    local name=$1 start_ms=$2 t0=$SECONDS
    timeout -k 5 120 "$GHOST" migrate "$job" --rank 1 --to "${HOSTS_NAMES[2]}" --start-timeout "$start_ms" \
      >"$work/$name.out" 2>"$work/$name.err" && fail "$name: the migration succeeded"
    local took=$((SECONDS - t0))
    [ "$(wc -l <"$work/$name.err")" = 1 ] || fail "$name: more than one line: $(cat "$work/$name.err")"
    grep -q "^ghost: migration of job $job failed: the ranks could not move to ${HOSTS_NAMES[2]} (.*); the job goes on where it was$" \
      "$work/$name.err" || fail "$name: unexpected failure: $(cat "$work/$name.err")"
    [ "$took" -le $((start_ms / 1000 + 60)) ] || fail "$name: the failure took $took s (--start-timeout $((start_ms / 1000)) s)"
    kill -0 "$gpid" 2>/dev/null || fail "$name: the job ended"
    [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = 2 ] ||
      fail "$name: not every rank runs: $("$GHOST" status "$job")"
    [ "$(rank_hosts)" = "$where" ] || fail "$name: ranks not where they were: $(rank_hosts)"
    echo "$name: $(sed 's/.*(\(.*\)); the job goes on.*/\1/' "$work/$name.err") ($took s)" >>"$work/faults"
  }
  faults=${GHOST_MIGFAULTS:-hang stopped vanished} # (a subset, to look into one)
  # 1. h3's agent starts nothing: no process of the migration ever connects from there.
  if [[ " $faults " = *" hang "* ]]; then
    hosts_hang 3
    failed_move hang 5000
    rm -f "$HOSTS_DIR/h3/hang"
  fi
  # 2. The new rank process on h3 is stopped as soon as it runs (it never connects again): the
  # test hook freezes it before it reaches anyone (a stopper polling for it from here lost the
  # race to a fast migration on a loaded machine: the migration succeeded).
  ns3=ghost-$HOSTS_ID-h3
  if [[ " $faults " = *" stopped "* ]]; then
    echo "start stop" >"$HOSTS_DIR/h3/tmp/ghost-receive-stop"
    failed_move stopped 5000
    [ ! -e "$HOSTS_DIR/h3/tmp/ghost-receive-stop" ] || fail "stopped: no process of the migration ran on ${HOSTS_NAMES[2]}"
    for p in $(ip netns pids "$ns3" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  fi
  # 3. h3 vanishes mid-transfer: its receiver freezes after 200000 bytes of rank 1's image (the
  # test hook, in h3's private /tmp: no other host's receiver sees it), then the host goes.
  if [[ " $faults " = *" vanished "* ]]; then
    echo "200000 stop" >"$HOSTS_DIR/h3/tmp/ghost-receive-stop"
    ( for _ in $(seq 1 3000); do
        for p in $(ip netns pids "$ns3" 2>/dev/null); do
          if [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = T ]; then
            hosts_vanish 3
            exit 0
          fi
        done
        sleep 0.01
      done
      exit 1 ) &
    vanisher=$!
    failed_move vanished 10000
    wait "$vanisher" || fail "vanished: h3's receiver never froze mid-transfer"
    ip netns list | grep -q "^$ns3\b" && fail "vanished: ${HOSTS_NAMES[2]}'s namespace is still there"
  fi
  t_faults=$SECONDS
  finish 0
  same_as_native 2 "$work/run.out"
  echo "OK: migfault $flavour: $(tr '\n' ';' <"$work/faults") output as native (the job ended" \
    "$((SECONDS - t_faults)) s after the faults)"
  ;;
scratch)
  mark=ghost-scratch-$HOSTS_ID
  # Rank 0 (h1) writes in its /tmp; after a barrier-free second job every rank looks for it.
  timeout -k 5 "$timeout_s" $mpirun -np 1 "${reach[@]}" "${place[@]}" "${HOSTS_IPS[0]}" \
    /bin/sh -c "echo from-h1 >/tmp/$mark" >"$work/write.out" 2>"$work/write.err" ||
    fail "writing on h1 failed"
  timeout -k 5 "$timeout_s" $mpirun -np 3 "${reach[@]}" "${place[@]}" "$all" /bin/sh -c \
    "echo \"\$(hostname) \$(ip -4 -o addr show eth0 | awk '{print \$4}') \$(cat /tmp/$mark 2>/dev/null || echo none)\"" \
    >"$work/look.out" 2>"$work/look.err" || fail "looking on every host failed"
  sort "$work/look.out" >"$work/look.sorted"
  printf '%s\n' "${HOSTS_NAMES[0]} ${HOSTS_IPS[0]}/24 from-h1" "${HOSTS_NAMES[1]} ${HOSTS_IPS[1]}/24 none" \
    "${HOSTS_NAMES[2]} ${HOSTS_IPS[2]}/24 none" \
    >"$work/expected"
  diff -u "$work/expected" "$work/look.sorted" >"$work/diff" || fail "hosts' views differ: $(cat "$work/diff")"
  [ ! -e "/tmp/$mark" ] || fail "h1's file is in the root namespace's /tmp"
  [ "$(cat "$HOSTS_DIR/h1/tmp/$mark")" = from-h1 ] || fail "h1's file is not in h1's directory"
  echo "OK: scratch $flavour: h1's /tmp file seen on h1 only"
  ;;
*)
  echo "usage: $0 spread|restart|migrate|balance|scratch FLAVOUR ..." >&2
  exit 2
  ;;
esac
