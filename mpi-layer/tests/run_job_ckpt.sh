#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Job-level checkpoints (`ghost checkpoint JOB`, `ghost restart DIR`, ghostrun --interval and
# --auto-restart) of a real mpirun job, against the output of an uninterrupted native run.
#   run_job_ckpt.sh MODE FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]
# PROGRAM is programs/job_steps.c (prints only at its end: a job restarted from a checkpoint prints
# what an uninterrupted one prints). Modes:
#   resume   two checkpoints while the job runs; it goes on and prints the uninterrupted output;
#            `ghost status` names the last generation; gen-1 and gen-2 are complete
#   restart  checkpoint --kill (ghostrun exits 75), `ghost restart DIR` finishes the job
#   twice    as restart, then the restarted job is checkpointed --kill again (generation 2 in the
#            same directory) and restarted again
#   auto     ghostrun --interval 1 --auto-restart 3; a rank is SIGKILLed twice once a checkpoint
#            exists; the job still prints the uninterrupted output and exits 0
#   fallback ghostrun --interval 2 --auto-restart 3; once two generations exist, the newest one's
#            rank 1 image is corrupted and rank 1 killed: the restart from it is refused by rank
#            1's restorer (no rank runs on), the generation is set aside (gen-N.refused) and the
#            job restarts from the one before; it prints the uninterrupted output and exits 0
#   refuse   a restart with a wrong -np, a missing, a truncated or a corrupt rank image, or a
#            missing checkpoint is refused with one line, before launch (a corrupt image: by its
#            rank's restorer, before any rank runs on: no job id, no output); the intact one
#            restarts
#   rankdies a rank stopped and killed while a checkpoint waits for it: the checkpoint fails naming
#            it; the previous generation stays `latest`, no debris; the job is restarted from it
#   ended    a checkpoint of a job that has ended is refused with one line
#   writerdies a rank killed while the ranks write a checkpoint (its checkpointer running): the
#            checkpoint fails, mpirun ends the job, and nothing of the failed generation is left in
#            the directory (another rank's checkpointer, finishing after the coordinator removed
#            it, made it again)
#   migrate  `ghost migrate` of rank 1 (--via ucx, the default: no image on disk; a pre-copy, the
#            default), one whose receiver dies mid-transfer of the pre-copy (fails, the job goes
#            on), ranks 0 and 2 (ucx, --no-precopy), then of ranks 0 and 2 through --via fs:DIR,
#            to this host
#            (the emulated-host tests move them between hosts): each answers with its downtime
#            and the job goes on; requests that name no rank of the job, an impossible host or a
#            wrong --via are refused in one line (the job goes on); a migration to a host mpirun
#            cannot reach fails in one line and the job goes on where it was; the output is the
#            uninterrupted run's
#   replace  PROGRAM is programs/blocked_call.c (NP 2): rank 0 waits inside MPI_Sendrecv_replace
#            for rank 1, which waits outside MPI for DIR/go; the job is checkpointed there (goes
#            on), checkpointed --kill, DIR/go made, restarted: it finishes as the native run
#   winfree  PROGRAM is programs/blocked_call.c (NP 2): rank 0 waits inside MPI_Win_free for rank 1,
#            which waits outside MPI for DIR/go; the job is checkpointed --kill there, DIR/go
#            made a second later: the checkpoint succeeds, the restart finishes as the native run
#   windyn   as winfree, rank 0 inside MPI_Win_create_dynamic
#   disconnect  as winfree, rank 0 inside MPI_Comm_disconnect
#   concurrent  two `ghost checkpoint` at once: the second waits for the first (it failed with
#            "a quiesce or checkpoint is in progress"), both succeed, as generations 1 and 2
#   keeps    ghostrun --interval 1 --incremental; checkpoint --kill (it may meet a periodic one:
#            it waits); `ghost restart DIR` without options takes periodic, incremental
#            checkpoints again (the manifest's settings); the job ends as the native run; a
#            restart of DIR then is refused in one line (the job ran to its end: it would run its
#            end again), nothing runs
#   migkeep  `ghost migrate --keep`: the ranks that stay keep their processes (their pids do not
#            change, the moved rank's does), rank 1 (pre-copied, the default), then ranks 0 and 2
#            (rank 0 with 2 ranks; --no-precopy), then rank 1 again (--precopy); a keep whose
#            receiver dies mid-transfer of a whole image fails in one line, every rank where it
#            was (the same pids); --keep with --via fs is refused; the output is the native run's
#   migwrite `ghost migrate` of rank 1 (--keep, without, --keep), which holds 48 MiB and rewrites
#            pages all the time: its pre-copy goes in rounds (precopy_rounds >= 2); with
#            --precopy-rounds 1 in one; a receiver that dies in the second round fails the move in
#            one line (in its pre-copy); every page is as the rank last wrote it at the end, and
#            the output is the native run's
#   migkill  `ghost migrate` of rank 1 (ucx), and an old rank SIGKILLed once every image is in
#            its new process (all `sent`), before the switch: mpirun ends the other old ranks, and the
#            move still completes (it was abandoned, and the new ranks, already running, were
#            ended with their mpirun: the job ended with a rank's output cut short); tried on up
#            to 6 migrations until a kill lands in that window; the output is the native run's
#   lock     PROGRAM is programs/lock_steps.c (NP 4): the ranks contend for an exclusive
#            MPI_Win_lock on rank 0, each computing outside MPI while it holds the lock;
#            5 checkpoints the job goes on from, one right after the other, must each succeed
#            (a rank that held the lock went on into MPI_Win_unlock after its rank had
#            quiesced: MPICH hung in the agent's park for 15 s, then "did not answer"), then
#            checkpoint --kill and a restart: the job ends as the native run
#   usr1     SIGUSR1 to ghostrun (a batch system's warning): checkpoint, stop, exit 75; the same
#            command again resumes from it and ends the job; once more, it starts afresh (the job
#            ran to its end); stopped again by SIGUSR1, the same command with --fresh starts afresh;
#            a job that ends on a full disk (a small tmpfs) renames latest to ended, says so in one
#            line, and the same command starts afresh
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per run, default 120), TMPDIR
# (where the work directory goes, default /tmp; run_hosts.sh spread puts it where every host sees it),
# GHOSTRUN_OPTS (ghostrun options before the mpirun ones, e.g. --mpi openmpi; not for mpirun).
set -u
mode=$1 flavour=$2 np=$3 prog=$4
shift 4
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
read -r -a gopts <<<"${GHOSTRUN_OPTS:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$flavour" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
steps=150 sleep_ms=20
[ "$mode" = auto ] && steps=300
# (status polls and two checkpoints before the job's end: 3 s were too few on a loaded machine)
[ "$mode" = resume ] && steps=300
[ "$mode" = fallback ] && steps=300
[ "$mode" = migrate ] && steps=400
[ "$mode" = tombstones ] && steps=1500
[ "$mode" = retry ] && steps=600
[ "$mode" = lock ] && steps=100
# (The job holds before its last step until finish releases it: a mode whose actions outlast its
# steps on a loaded machine finds it waiting there. migwrite's moves need rank 1 writing.)
[ "$mode" = keeps ] && steps=200
[ "$mode" = migkill ] && steps=250
[ "$mode" = migkeep ] && steps=250
[ "$mode" = migwrite ] && steps=400
# A program whose steps are long asks for fewer (CMake sets JOB_STEPS: comm_threads makes dozens of
# communicators a step, about 50 ms of it under ghost on two cores).
steps=${JOB_STEPS:-$steps}
work=$(mktemp -d "${TMPDIR:-/tmp}/ghost-jobckpt.XXXXXX")
ck=$work/ck
gpid=""
started_at=$(date +%s.%N) started_up=$(cut -d' ' -f1 /proc/uptime)
# What `ghost migrate --via ucx` reports after via= (precopied() checks that every moved rank's
# pre-copy, the default, happened while the job ran); some bytes move while it is stopped.
precopied() { # precopied [OPTIONS]: unless --no-precopy or --via fs, the last move's ranks pre-copied
  case " $* " in
  *" --no-precopy "* | *" --via fs"*) ;;
  *)
    tail -1 "$work/mig.out" | grep -q " precopy_bytes=[1-9]" ||
      fail "no pre-copy happened: $(tail -1 "$work/mig.out")" ;;
  esac
}
LIVE_PHASES="bytes=[1-9][0-9]* precopy_bytes=[0-9]* precopy_rounds=[0-9]* prepare_s=[0-9.]* precopy_s=[0-9.]* quiesce_s=[0-9.]* transfer_s=[0-9.]* export_s=[0-9.]* reconnect_s=[0-9.]* downtime_s=[0-9.]* total_s=[0-9.]*"
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
  mountpoint -q "$work/full" 2>/dev/null && umount -l "$work/full"
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $mode: $*"
  # A job that is ending (mpirun reported a rank's exit) is given a moment to end, so that
  # mpirun's closing report (which rank, its exit code) is in what follows.
  if [ -n "$gpid" ]; then
    for _ in $(seq 1 30); do
      kill -0 "$gpid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  # Both clocks: a run whose wall and boot clocks disagree was disturbed from outside (a guest
  # paused or restored from a snapshot).
  awk -v now="$(date +%s.%N)" -v t0="$started_at" -v up="$(cut -d' ' -f1 /proc/uptime)" -v up0="$started_up" \
    'BEGIN { printf "elapsed: %.2f s by the wall clock, %.2f s by the boot clock\n", now - t0, up - up0 }'
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  ls -la "$ck" "$ck"/* 2>/dev/null | head -30
  for f in "$ck"/gen-*/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -c 1000 "$f"; }; done
  exit 1
}

progress() { # progress TEXT: a timed line in progress.err (printed by fail)
  awk -v now="$(date +%s.%N)" -v t0="$started_at" -v text="$*" \
    'BEGIN { printf "%.2f s %s\n", now - t0, text }' >>"$work/progress.err"
}

# Runs a ghostrun (or ghost restart) command line in the background in a session of its own; sets
# gpid and job (once its coordinator runs and every rank has registered).
# The job (and a restarted one: its environment is in its image) holds before its last step until
# finish() releases it (programs/mpit.h, MPIT_HOLD_FILE): it cannot end under the test's feet.
start() { # start NAME COMMAND...
  local name=$1
  shift
  rm -f "$work/release"
  MPIT_HOLD_FILE=$work/release setsid timeout -k 5 "$timeout_s" "$@" >"$work/$name.out" 2>"$work/$name.err" &
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
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] && return 0
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before every rank registered"
    sleep 0.02
  done
  fail "$name: not every rank registered with the coordinator"
}

finish() { # finish EXPECTED_STATUS (0: the job is released to run to its end)
  [ "$1" = 0 ] && touch "$work/release"
  wait "$gpid"
  local rc=$?
  gpid=""
  [ "$rc" = "$1" ] || fail "the job exited $rc, expected $1"
}

checkpoint() { # checkpoint [OPTIONS]: must succeed
  timeout -k 5 120 "$GHOST" checkpoint "$@" "$job" >>"$work/ckpt.out" 2>>"$work/ckpt.err" ||
    fail "ghost checkpoint $* $job failed"
  tail -1 "$work/ckpt.out" | grep -q "^checkpoint job=$job generation=[0-9]* dir=$ck/gen-[0-9]* ranks=$np bytes=[0-9]* quiesce_s=[0-9.]* export_s=[0-9.]* sync_s=[0-9.]* total_s=[0-9.]*" ||
    fail "unexpected checkpoint line: $(tail -1 "$work/ckpt.out")"
}

until_ready() { # until_ready WHAT: waits (20 s at most) for $work/run/ready, which says WHAT
  for _ in $(seq 1 1000); do
    [ -e "$work/run/ready" ] && return 0
    kill -0 "$gpid" 2>/dev/null || fail "the job ended before $1"
    sleep 0.02
  done
  fail "no $work/run/ready after 20 s: not $1"
}

generation_after() { # generation_after N: prints the number of a generation after N once
  # $ck/latest names one (within 10 s), else fails
  local now
  for _ in $(seq 1 500); do
    now=$(sed -n 's/^gen-\([0-9]*\)$/\1/p' "$ck/latest" 2>/dev/null)
    [ -n "$now" ] && [ "$now" -gt "$1" ] && echo "$now" && return 0
    sleep 0.02
  done
  return 1
}

receiver_dies() { # receiver_dies PATTERN ARGS...: `ghost migrate $job ARGS`, whose receiver dies
  # (the test hook $work/die-at, which it must read), fails in one line: the job failed PATTERN
  # and goes on where it was
  local pat=$1
  shift
  timeout -k 5 240 "$GHOST" migrate "$job" "$@" >"$work/die.out" 2>"$work/die.err" &&
    fail "a migration whose receiver died succeeded"
  [ "$(wc -l <"$work/die.err")" = 1 ] || fail "the failed migration said more than one line: $(cat "$work/die.err")"
  grep -q "^ghost: migration of job $job failed: $pat; the job goes on where it was$" "$work/die.err" ||
    fail "unexpected failure: $(cat "$work/die.err")"
  # (A migration refused before any image moved matches the pattern too, but leaves the hook.)
  [ ! -e "$work/die-at" ] || fail "no receiver read the test hook; the migration failed before: $(cat "$work/die.err")"
}

same_as_native() { # same_as_native FILES...
  grep -h '^rank [0-9]*: ' "$work/native.out" | sort >"$work/ref.sorted"
  grep -h '^rank [0-9]*: ' "$@" | sort >"$work/got.sorted"
  [ "$(grep -c ' PASS$' "$work/got.sorted")" = "$np" ] || fail "not every rank passed"
  diff -u "$work/ref.sorted" "$work/got.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
}

# One line "ghost: ..." on stderr, non-zero, nothing launched (no job id, no rank output).
no_debris() { # only gen-1 and latest in $ck, and the failed checkpoint's log its failure names
  local f
  for f in $(ls -A "$ck"); do
    case $f in
    gen-1 | latest) ;;
    failed.*.log) grep -q "(see $ck/$f)" "$work/failed.err" || fail "$ck/$f is kept, but the failure does not name it" ;;
    *) fail "debris in $ck: $(ls -AR "$ck")" ;;
    esac
  done
}

refused() { # refused WHAT PATTERN COMMAND...
  local what=$1 pat=$2
  shift 2
  timeout -k 5 60 "$@" >"$work/refused.out" 2>"$work/refused.err"
  local rc=$?
  [ $rc != 0 ] || fail "$what: not refused"
  [ $rc != 124 ] && [ $rc != 137 ] || fail "$what: hung"
  [ "$(wc -l <"$work/refused.err")" = 1 ] || fail "$what: not one line: $(cat "$work/refused.err")"
  grep -q "^ghost: .*$pat" "$work/refused.err" || fail "$what: unexpected refusal: $(cat "$work/refused.err")"
  [ ! -s "$work/refused.out" ] || fail "$what: something ran: $(cat "$work/refused.out")"
}

if [ "$mode" = replace ] || [ "$mode" = winfree ] || [ "$mode" = windyn ] || [ "$mode" = disconnect ]; then
  mkdir -p "$work/nat" "$work/run"
  touch "$work/nat/go"
  timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" "$work/nat" "$mode" >"$work/native.out" 2>"$work/native.err" ||
    fail "the native run failed"
else
  # The reference output: the step programs print nothing that depends on their sleep, which only
  # gives a harness time to act, so the native run sleeps 0.
  timeout -k 5 "$timeout_s" $mpirun -np "$np" "${extra[@]}" "$prog" $steps 0 >"$work/native.out" 2>"$work/native.err" ||
    fail "the native run failed"
fi

case $mode in
retry)
  # epoch_steps holds a post/start/complete/wait epoch open for its first half (about 6 s), which
  # a checkpoint refuses: the periodic checkpoint 4 s in fails, and the next try must come a
  # second later (1, 2, 4 ... s after each refusal), not an interval later.
  start run "$GHOSTRUN" "${gopts[@]}" --ghost-verbose --ckpt-dir "$ck" --interval 4 -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  for _ in $(seq 1 600); do
    [ -s "$ck/latest" ] && break
    sleep 0.1
  done
  [ -s "$ck/latest" ] || fail "no periodic checkpoint landed"
  python3 - "$work/run.err" >"$work/retry.err" 2>&1 <<'PY' || fail "retry: $(cat "$work/retry.err")"
import re, sys
events = [(float(m.group(1)), m.group(2)) for m in re.finditer(
    r"\[([0-9.]+)\] (periodic checkpoint failed: .*|checkpoint generation=.*)", open(sys.argv[1]).read())]
fails = [e for e in events if e[1].startswith("periodic checkpoint failed")]
assert fails, "no periodic checkpoint was refused: %s" % events
first = fails[0]
assert "post/start/complete/wait epoch is open" in first[1], first[1]
assert first[1].endswith("next try in 1 s"), first[1]
after = events[events.index(first) + 1]  # the next try's outcome (refused again, or landed)
assert after[0] - first[0] < 2.5, "the next try came %.1f s after the refusal: %s" % (
    after[0] - first[0], after[1])
PY
  finish 0
  same_as_native "$work/run.out"
  ;;
lock)
  # Checkpoints while ranks wait inside MPI_Win_lock for a rank that holds the lock outside MPI
  # (in its critical section): the quiesce must let that epoch close (the unlock needs rank 0's
  # progress) before the ranks hold, or the holder enters MPI_Win_unlock while the ranks are
  # saved. Each checkpoint must land, and soon (a park that hung took 15 s, then failed).
  export MPIT_PROGRESS_FILE=$work/progress
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  for _ in $(seq 1 1000); do [ "$(cat "$work/progress" 2>/dev/null || echo 0)" -ge 3 ] 2>/dev/null && break; sleep 0.01; done
  # (A checkpoint that hung failed after 15 s: `checkpoint` fails the test then. The time each
  # took is logged, not judged: a loaded machine is slower.)
  for k in 1 2 3 4 5; do
    t0=$(date +%s%N)
    checkpoint
    ms=$((($(date +%s%N) - t0) / 1000000))
    progress "checkpoint $k: $ms ms, at step $(cat "$work/progress" 2>/dev/null)"
    sleep 0.1
  done
  at=$(cat "$work/progress" 2>/dev/null)
  [ "${at:-0}" -lt $((steps - 1)) ] || fail "the job reached its last step before the checkpoints ended"
  checkpoint --kill
  finish 75
  start restart "$GHOST" restart "$ck" "${extra[@]}"
  finish 0
  same_as_native "$work/run.out" "$work/restart.out"
  ;;
tombstones)
  # A program that makes and frees communicators in every step (comms: 4 creations a step over
  # communicators with a clock), never checkpointed until the end: without the coordinator's
  # tombstone rounds every rank would keep about 6000 records by the last step. A checkpoint while
  # the rounds prune (the job goes on), then --kill and a restart: the job still ends right.
  export MPIT_PROGRESS_FILE=$work/progress
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  step() { # rank 0's step (0 while it rewrites the file)
    local at
    at=$(cat "$work/progress" 2>/dev/null)
    echo "${at:-0}"
  }
  for _ in $(seq 1 3000); do [ "$(step)" -ge $((steps / 2)) ] && break; sleep 0.01; done
  checkpoint
  for _ in $(seq 1 3000); do [ "$(step)" = $((steps - 1)) ] && break; sleep 0.01; done
  [ "$(step)" = $((steps - 1)) ] || fail "the job did not reach its last step"
  most=""
  deadline=$((SECONDS + 30)) # a round follows a growth within a second (and its cascade, a second each)
  while [ $SECONDS -lt $deadline ]; do
    "$GHOST" status --json "$job" >"$work/status.json" 2>&1
    most=$(python3 -c 'import json, sys
ranks = json.load(open(sys.argv[1]))["jobs"][0]["ranks"]
print(max(r.get("mpi_records", 1 << 30) for r in ranks) if ranks else 1 << 30)' "$work/status.json") ||
      fail "no status: $(cat "$work/status.json")"
    [ "$most" -lt 1000 ] && break
    sleep 0.1
  done
  [ "$most" -lt 1000 ] || fail "a rank keeps $most records after $steps steps that freed what they made"
  progress "records at the last step: at most $most per rank"
  checkpoint --kill
  finish 75
  start restart "$GHOST" restart "$ck" "${extra[@]}"
  finish 0
  same_as_native "$work/run.out" "$work/restart.out"
  ;;
resume)
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  # What a load balancer reads: each rank's CPU time, memory, and messages and bytes sent to every
  # rank (job_steps sends one MPI_LONG_LONG per message; bytes are read after the messages, so a
  # message the sample saw has its 8 bytes in it).
  figures=0
  for _ in $(seq 1 150); do
    "$GHOST" status --json "$job" >"$work/status.json" 2>&1
    python3 - "$work/status.json" "$np" <<'PY' && figures=1 && break
import json, sys
ranks = json.load(open(sys.argv[1]))["jobs"][0]["ranks"]
n = int(sys.argv[2])
ok = len(ranks) == n and all(
    r["cpu_s"] > 0 and r["rss_bytes"] > 1 << 20 and len(r["messages_sent_to"]) == n and
    len(r["bytes_sent_to"]) == n and
    all(b % 8 == 0 and b >= 8 * m for m, b in zip(r["messages_sent_to"], r["bytes_sent_to"]))
    for r in ranks)
sys.exit(0 if ok and sum(sum(r["messages_sent_to"]) for r in ranks) > 0 else 1)
PY
    sleep 0.05
  done
  [ $figures = 1 ] || fail "status --json has no right per-rank figures: $(cat "$work/status.json")"
  checkpoint
  sleep 0.3
  checkpoint
  "$GHOST" status "$job" | grep -q "^  last checkpoint: generation 2, [0-9]* s ago, $ck/gen-2$" ||
    fail "status does not show generation 2: $("$GHOST" status "$job")"
  "$GHOST" status --json "$job" | grep -q "\"last_checkpoint\": {\"generation\": 2, \"dir\": \"$ck/gen-2\"" ||
    fail "status --json does not show generation 2"
  finish 0
  same_as_native "$work/run.out"
  [ "$(cat "$ck/latest")" = gen-2 ] || fail "latest is not gen-2"
  for g in 1 2; do
    [ -s "$ck/gen-$g/manifest.json" ] || fail "gen-$g has no manifest"
    for ((r = 0; r < np; r++)); do
      "$GHOST" inspect "$ck/gen-$g/rank$r.ghost" >/dev/null 2>&1 || fail "gen-$g rank $r does not verify"
    done
  done
  # ghostrun --incremental: generation 2's images take what the ranks did not write since from
  # generation 1's.
  if [[ " ${gopts[*]} " == *" --incremental "* ]]; then
    for ((r = 0; r < np; r++)); do
      "$GHOST" inspect "$ck/gen-2/rank$r.ghost" 2>&1 | grep -q "taken from 1 older images:" ||
        fail "gen-2 rank $r is not incremental: $("$GHOST" inspect "$ck/gen-2/rank$r.ghost" 2>&1 | sed -n 6,8p)"
      "$GHOST" inspect "$ck/gen-2/rank$r.ghost" 2>&1 | grep -q "^  ../gen-1/rank$r.ghost " ||
        fail "gen-2 rank $r does not take pages from gen-1"
    done
  fi
  ;;
restart | twice | refuse | rankdies)
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  if [ "$mode" = refuse ]; then
    # A second job given the running job's checkpoint directory (its rotation would delete the
    # first one's generations): refused in one line, nothing runs.
    timeout -k 5 60 "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" 1 1 \
      >"$work/second.out" 2>"$work/second.err" && fail "a second job took the checkpoint directory"
    [ "$(wc -l <"$work/second.err")" = 1 ] &&
      grep -q "^ghostrun: $ck is the checkpoint directory of another job that is still running" "$work/second.err" ||
      fail "a second job in the same checkpoint directory: $(cat "$work/second.err")"
    [ ! -s "$work/second.out" ] || fail "a second job in the same checkpoint directory ran"
  fi
  if [ "$mode" = rankdies ]; then
    checkpoint
    victim=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 == 1 {print $4}')
    kill -STOP "$victim"
    timeout -k 5 60 "$GHOST" checkpoint --timeout 20000 "$job" >"$work/failed.out" 2>"$work/failed.err" &
    cpid=$!
    sleep 1
    # The coordinator is held stopped while the rank dies and the MPI launcher takes the others
    # down with it: their ends all wait for it at once, as on a busy machine, and the failure
    # must still name the rank the checkpoint waited for, not the first by number.
    others=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 != 1 {print $4}')
    coordinator=$(pgrep -P "$gpid" -x ghostrun) || fail "no ghostrun process under $gpid"
    kill -STOP "$coordinator"
    kill -KILL "$victim"
    for _ in $(seq 1 250); do
      alive=0
      for p in $others; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.02
    done
    kill -CONT "$coordinator"
    wait $cpid && fail "the checkpoint succeeded without rank 1"
    [ "$(wc -l <"$work/failed.err")" = 1 ] || fail "the failure is not one line"
    grep -q "^ghost: checkpoint of job $job failed: rank 1 (pid $victim on .*) disconnected" "$work/failed.err" ||
      fail "the failure does not name rank 1: $(cat "$work/failed.err")"
    wait "$gpid" # mpirun ends the job: one of its ranks died
    gpid=""
    [ "$(cat "$ck/latest")" = gen-1 ] || fail "latest changed"
    no_debris
  else
    checkpoint --kill
    finish 75
    grep -q "^ghostrun: job $job: stopped after its checkpoint $ck/gen-1 .*; go on with: ghost restart $ck$" "$work/run.err" ||
      fail "ghostrun did not say that the job was stopped after its checkpoint"
    ! grep -q "BAD TERMINATION" "$work/run.out" "$work/run.err" ||
      fail "the MPI launcher's crash banner came with the job's stop: $(grep -m1 "BAD TERMINATION" "$work/run.out" "$work/run.err")"
  fi
  if [ "$mode" = refuse ]; then
    mkdir -p "$work/empty"
    refused "not a checkpoint" "is not one" "$GHOST" restart "$work/empty" --oversubscribe
    refused "a rank's image alone" "it is one rank's image of an MPI job's checkpoint" \
      "$GHOST" restart "$ck/gen-1/rank0.ghost"
    "$GHOST" inspect "$ck/gen-1/rank0.ghost" | grep -q "^job rank   yes" ||
      fail "ghost inspect does not show a rank's image as such"
    # An interval past the clock's range: refused, not taken as "checkpoint at once, always".
    timeout -k 5 60 "$GHOSTRUN" --interval 1e10 -np "$np" "$prog" 1 1 >"$work/interval.out" 2>"$work/interval.err" &&
      fail "--interval 1e10 was accepted"
    grep -q "^ghostrun: --interval needs a number of seconds (up to 31536000" "$work/interval.err" ||
      fail "--interval 1e10: $(cat "$work/interval.err")"
    [ ! -s "$work/interval.out" ] || fail "--interval 1e10: something ran"
    refused "wrong -np" "the checkpoint is of $np ranks, -np asks for $((np + 1))" \
      "$GHOST" restart "$ck" -np $((np + 1)) "${extra[@]}"
    refused "--dir with --image" "excludes --" "$GHOST" checkpoint --dir "$work/d" --image "$work/i.ghost" 1
    # A manifest edited to name the other MPI: its mpirun could not start these ranks.
    cp "$ck/gen-1/manifest.json" "$work/manifest.json"
    other=mpich
    [ "$flavour" = mpich ] && other=openmpi
    python3 -c 'import json, sys; p = sys.argv[1]; m = json.load(open(p)); m["mpi"] = sys.argv[2]; json.dump(m, open(p, "w"))' \
      "$ck/gen-1/manifest.json" "$other"
    refused "edited manifest" "its manifest names MPI '$other', but $prog loads libmpi" "$GHOST" restart "$ck" "${extra[@]}"
    cp "$work/manifest.json" "$ck/gen-1/manifest.json"
    # A restart that loses a rank before every rank runs again (its restorer killed as soon as it
    # shows; the restore and MPI's start take far longer): one line says the restart failed and
    # the checkpoint is unchanged; the restart below then runs from it.
    timeout -k 5 120 "$GHOST" restart "$ck" "${extra[@]}" >"$work/gone.out" 2>"$work/gone.err" &
    rpid=$!
    victim=""
    for _ in $(seq 1 5000); do
      victim=$(pgrep -f "restart-rank $ck" | head -1)
      [ -n "$victim" ] && break
      sleep 0.002
    done
    [ -n "$victim" ] || fail "no rank's restorer showed"
    kill -KILL "$victim"
    wait $rpid && fail "a restart that lost a rank succeeded"
    grep -q "^ghostrun: job [0-9]*: the restart from $ck/gen-1 failed: mpirun exited with status [1-9][0-9]* before every rank ran again; the checkpoint is unchanged (ghost restart $ck tries again)$" \
      "$work/gone.err" || fail "a failed restart did not say so: $(grep -v '^ghostrun: this kernel' "$work/gone.err" | tail -3)"
    img=$ck/gen-1/rank1.ghost
    cp "$img" "$work/saved.ghost"
    rm "$img"
    refused "missing image" "rank 1's image $img: No such file" "$GHOST" restart "$ck" "${extra[@]}"
    head -c $(($(stat -c %s "$work/saved.ghost") - 100)) "$work/saved.ghost" >"$img"
    refused "truncated image" "rank 1's image $img is truncated" "$GHOST" restart "$ck" "${extra[@]}"
    cp "$work/saved.ghost" "$img"
    printf '\xff\xfe\xfd\xfc' | dd of="$img" bs=1 seek=$(($(stat -c %s "$img") / 2)) conv=notrunc status=none
    refused "corrupt image" "rank 1's image $img: the image is corrupt" "$GHOST" restart "$ck" "${extra[@]}"
    # Two ranks refuse (whichever is first is reported): the other ends as quietly.
    img2=$ck/gen-1/rank2.ghost
    cp "$img2" "$work/saved2.ghost"
    printf '\xff\xfe\xfd\xfc' | dd of="$img2" bs=1 seek=$(($(stat -c %s "$img2") / 3)) conv=notrunc status=none
    refused "two corrupt images" "rank [12]'s image $ck/gen-1/rank[12].ghost: the image is corrupt" "$GHOST" restart "$ck" "${extra[@]}"
    cp "$work/saved.ghost" "$img"
    cp "$work/saved2.ghost" "$img2"
  fi
  start run2 "$GHOST" restart "$ck" "${extra[@]}"
  "$GHOST" status "$job" | grep -q "^  last checkpoint: generation 1, .*, $ck/gen-1$" ||
    fail "the restarted job's status does not show generation 1"
  outs=("$work/run.out" "$work/run2.out")
  if [ "$mode" = twice ]; then
    checkpoint --kill
    finish 75
    [ "$(cat "$ck/latest")" = gen-2 ] || fail "the restarted job's checkpoint is not generation 2"
    start run3 "$GHOST" restart "$ck" "${extra[@]}"
    outs+=("$work/run3.out")
  fi
  finish 0
  same_as_native "${outs[@]}"
  ;;
fallback)
  start run "$GHOSTRUN" "${gopts[@]}" --ghost-verbose --ckpt-dir "$ck" --interval 2 --auto-restart 3 -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  # Right after a generation >= 2 lands (the next one comes 2 s later): both kept, the newest
  # damaged in its pages (its trailer, which the check before launch reads, is intact).
  gen=0
  for _ in $(seq 1 1000); do
    now=$(sed -n 's/^gen-\([0-9]*\)$/\1/p' "$ck/latest" 2>/dev/null)
    [ -n "$now" ] && [ "$now" -ge 2 ] && [ "$now" != "$gen" ] && [ "$gen" != 0 ] && break
    [ -n "$now" ] && gen=$now
    sleep 0.01
  done
  [ -n "$now" ] && [ "$now" -ge 2 ] && [ "$now" != "$gen" ] || fail "no second periodic checkpoint"
  gen=$now
  [ -d "$ck/gen-$((gen - 1))" ] || fail "gen-$((gen - 1)) is not kept beside gen-$gen"
  img=$ck/gen-$gen/rank1.ghost
  printf '\xff\xfe\xfd\xfc' | dd of="$img" bs=1 seek=$(($(stat -c %s "$img") / 2)) conv=notrunc status=none
  victim=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 == 1 {print $4}')
  [ -n "$victim" ] || fail "no rank 1"
  kill -KILL "$victim"
  for _ in $(seq 1 1500); do
    grep -q "restarting from $ck/gen-$((gen - 1)) (automatic restart 2 of 3)" "$work/run.err" && break
    sleep 0.02
  done
  grep -q "rank 1's image $img: the image is corrupt.*; $ck/gen-$gen set aside as $ck/gen-$gen.refused$" "$work/run.err" ||
    fail "the refused generation was not set aside"
  grep -q "restarting from $ck/gen-$((gen - 1)) (automatic restart 2 of 3)" "$work/run.err" ||
    fail "no restart from gen-$((gen - 1))"
  [ -d "$ck/gen-$gen.refused" ] && [ ! -e "$ck/gen-$gen" ] || fail "gen-$gen is not set aside"
  for _ in $(seq 1 1000); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] && break
    sleep 0.02
  done
  finish 0
  same_as_native "$work/run.out"
  ;;
auto)
  # --ghost-verbose: the coordinator's timed notes go to run.err; progress.err has the test's
  # own steps (seconds since the test started, ghostrun's own clock starts a moment later): a
  # failure prints both.
  start run "$GHOSTRUN" "${gopts[@]}" --ghost-verbose --ckpt-dir "$ck" --interval 1 --auto-restart 3 -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  progress "job $job started"
  for k in 1 2; do
    # Wait for a checkpoint of this (possibly relaunched) job, then kill a rank.
    before=$(cat "$ck/latest" 2>/dev/null)
    for _ in $(seq 1 500); do
      now=$(cat "$ck/latest" 2>/dev/null)
      [ -n "$now" ] && [ "$now" != "$before" ] && break
      sleep 0.02
    done
    [ -n "$now" ] && [ "$now" != "$before" ] || fail "no periodic checkpoint (round $k)"
    progress "round $k: checkpoint $now is latest"
    sleep 0.5
    victim=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 == 1 {print $4}')
    [ -n "$victim" ] || fail "no rank 1 (round $k)"
    kill -KILL "$victim"
    progress "round $k: rank 1 (pid $victim) killed"
    for _ in $(seq 1 1000); do
      grep -q "automatic restart $k of 3" "$work/run.err" && break
      sleep 0.02
    done
    grep -q "automatic restart $k of 3" "$work/run.err" || fail "no automatic restart $k"
    progress "round $k: automatic restart seen"
    for _ in $(seq 1 1000); do
      [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] && break
      sleep 0.02
    done
    progress "round $k: $("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$') of $np ranks running"
  done
  progress "released"
  finish 0
  same_as_native "$work/run.out"
  # Periodic checkpoints come an interval (1 s) after the previous one ended, not after it began
  # (else a checkpoint as long as the interval leaves the job no time to run between two).
  python3 - "$work/run.err" >"$work/gaps.err" 2>&1 <<'PY' || fail "interval: $(cat "$work/gaps.err")"
import re, sys
prev = None
for line in open(sys.argv[1]):
    if "restarting from" in line:
        prev = None  # a relaunch starts its own interval
        continue
    m = re.search(r"\[([0-9.]+)\] checkpoint generation=(\d+) .* total_s=([0-9.]+)", line)
    if not m:
        continue
    end, total = float(m.group(1)), float(m.group(3))
    if prev is not None:
        gap = end - total - prev[1]
        assert gap >= 1.0 - 0.02, "generation %s began %.3f s after generation %s ended" % (
            m.group(2), gap, prev[0])
    prev = (m.group(2), end)
PY
  ;;
writerdies)
  # Rank 1's checkpointer stops itself once its rank is parked (GHOST_TEST_CHECKPOINTER_STOP, a
  # test hook of `ghost checkpoint --image`), so that the kill surely lands while the image is
  # being written (a small image is written in 10 ms: a kill aimed at that window missed it in a
  # loaded suite); it goes on after the kill.
  export GHOST_TEST_CHECKPOINTER_STOP=$work/stop-writer
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  checkpoint
  victim=$("$GHOST" status "$job" | awk '$1 == "rank" && $2 == 1 {print $4}')
  echo "/rank1.ghost" >"$work/stop-writer"
  timeout -k 5 60 "$GHOST" checkpoint "$job" >"$work/failed.out" 2>"$work/failed.err" &
  cpid=$!
  writer=""
  for _ in $(seq 1 3000); do
    if [ ! -e "$work/stop-writer" ]; then
      writer=$(pgrep -f "checkpoint --image .*/rank1.ghost" | head -1)
      [ -n "$writer" ] && grep -q "^State:[[:space:]]*T" "/proc/$writer/status" 2>/dev/null && break
    fi
    writer=""
    sleep 0.01
  done
  [ -n "$writer" ] || fail "rank 1's checkpointer did not stop at the test's request"
  kill -KILL "$victim"
  kill -CONT "$writer"
  wait $cpid && fail "the checkpoint succeeded without rank 1"
  wait "$gpid" # mpirun ends the job: one of its ranks died
  gpid=""
  sleep 2 # (the other ranks' checkpointers end after the job)
  [ "$(cat "$ck/latest")" = gen-1 ] || fail "latest changed"
  no_debris
  ;;
usr1)
  run=("$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms)
  start run "${run[@]}"
  kill -USR1 "$job" # ghostrun's pid
  finish 75
  grep -q "^ghostrun: job $job: stopped after its checkpoint $ck/gen-1 " "$work/run.err" ||
    fail "ghostrun did not stop after a checkpoint"
  start run2 "${run[@]}"
  grep -q "^ghostrun: resuming from $ck/gen-1 (--fresh starts afresh)$" "$work/run2.err" ||
    fail "the same command did not resume from gen-1"
  finish 0
  same_as_native "$work/run.out" "$work/run2.out"
  [ "$(cat "$ck/ended")" = gen-1 ] || fail "no ended marker for gen-1"
  # The job ran to its end: the same command again is a new job.
  timeout -k 5 "$timeout_s" "${run[@]}" >"$work/run3.out" 2>"$work/run3.err" || fail "the third run failed"
  grep -q resuming "$work/run3.err" && fail "the third run resumed a job that had ended"
  same_as_native "$work/run3.out"
  start run4 "${run[@]}"
  kill -USR1 "$job"
  finish 75
  [ "$(cat "$ck/latest")" = gen-2 ] || fail "the fourth run's checkpoint is not gen-2"
  timeout -k 5 "$timeout_s" "$GHOSTRUN" --fresh --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms \
    >"$work/run5.out" 2>"$work/run5.err" || fail "the --fresh run failed"
  grep -q resuming "$work/run5.err" && fail "--fresh resumed"
  same_as_native "$work/run5.out"
  # A job that ends on a full disk: DIR/ended cannot be written. ghostrun says so in one line and
  # renames DIR/latest to DIR/ended (no room needed): the same command starts afresh, it does not
  # run the finished job's tail again.
  full=$work/full
  mkdir -p "$full"
  if mount -t tmpfs -o size=16m,mode=0700 tmpfs "$full" 2>/dev/null; then
    run=("$GHOSTRUN" --ckpt-dir "$full" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms)
    start run6 "${run[@]}"
    ck=$full checkpoint
    dd if=/dev/zero of="$full/filler" bs=64k status=none 2>/dev/null
    finish 0
    same_as_native "$work/run6.out"
    grep -q "^ghostrun: job $job: cannot write $full/ended: .*; $full/latest was renamed to it, so that the same command starts afresh$" \
      "$work/run6.err" || fail "a job that ended on a full disk: $(grep -v "^ghostrun: this kernel" "$work/run6.err")"
    [ ! -e "$full/latest" ] && [ "$(cat "$full/ended")" = gen-1 ] || fail "no ended marker on a full disk"
    rm "$full/filler"
    timeout -k 5 "$timeout_s" "${run[@]}" >"$work/run7.out" 2>"$work/run7.err" || fail "the run after the full disk failed"
    grep -q resuming "$work/run7.err" && fail "a job that ended on a full disk was resumed"
    same_as_native "$work/run7.out"
    umount "$full"
  else
    echo "usr1: no tmpfs could be mounted: the full-disk end is not tried"
  fi
  ;;
migkeep)
  export GHOST_TEST_RECEIVE_DIE=$work/die-at
  [ "$flavour" = openmpi ] && extra+=(-x GHOST_TEST_RECEIVE_DIE)
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  here=$(hostname)
  refused "keep through files" "--keep is for --via ucx" "$GHOST" migrate "$job" --rank 1 --to "$here" --keep --via fs
  pids() { "$GHOST" status "$job" | sed -n 's/^  rank \([0-9]*\) *pid \([0-9]*\) .*running$/\1:\2/p' | tr '\n' ' '; }
  kept() { # kept RANKS [OPTIONS]: migrate them with --keep; every other rank keeps its pid, they do not
    local ranks=$1 before after r
    shift
    before=$(pids)
    timeout -k 5 240 "$GHOST" migrate "$job" --rank "$ranks" --to "$here" --keep "$@" >>"$work/mig.out" 2>>"$work/mig.err" ||
      fail "ghost migrate $job --rank $ranks --keep failed: $(tail -1 "$work/mig.err")"
    tail -1 "$work/mig.out" | grep -q "^migrate job=$job ranks=$ranks to=$here via=ucx+keep $LIVE_PHASES$" ||
      fail "unexpected migrate line: $(tail -1 "$work/mig.out")"
    precopied "$@"
    after=$(pids)
    [ "$(echo "$after" | wc -w)" = "$np" ] || fail "not every rank runs after the migration: $("$GHOST" status "$job")"
    for ((r = 0; r < np; r++)); do
      local b a
      b=$(echo " $before" | grep -o " $r:[0-9]*")
      a=$(echo " $after" | grep -o " $r:[0-9]*")
      if [[ ",$ranks," == *",$r,"* ]]; then
        [ "$a" != "$b" ] || fail "rank $r was to move but kept its process ($a)"
      else
        [ "$a" = "$b" ] || fail "rank $r was to keep its process: before$b, after$a"
      fi
    done
  }
  kept 1
  if [ "$np" -gt 2 ]; then kept 0,2 --no-precopy; else kept 0 --no-precopy; fi
  # A receiver that dies mid-transfer (of a whole image): one line, every rank goes on where it
  # was (same pids).
  before=$(pids)
  echo 200000 >"$work/die-at"
  receiver_dies "the ranks could not move to $here (.*)" --rank 1 --to "$here" --keep --no-precopy
  sleep 1
  [ "$(pids)" = "$before" ] || fail "the failed keep changed the ranks' processes: $before -> $(pids)"
  kept 1 --precopy
  # A move without --keep after moves with it: every rank gets a new process, and the mpiruns
  # that held the kept ones end with them, quietly (one used to print that it aborted the job).
  timeout -k 5 240 "$GHOST" migrate "$job" --rank 1 --to "$here" >>"$work/mig.out" 2>>"$work/mig.err" ||
    fail "ghost migrate $job --rank 1 after the --keep moves failed: $(tail -1 "$work/mig.err")"
  [ "$(pids | wc -w)" = "$np" ] || fail "not every rank runs after the migration: $("$GHOST" status "$job")"
  finish 0
  ! grep -qE "has been aborted|BAD TERMINATION" "$work/run.err" "$work/run.out" ||
    fail "an mpirun said the job failed: $(grep -hE -m1 "has been aborted|BAD TERMINATION" "$work/run.err" "$work/run.out")"
  same_as_native "$work/run.out"
  ;;
migrate)
  export GHOST_TEST_RECEIVE_DIE=$work/die-at
  # (stands for /sys/class/infiniband: a host with an RDMA device once made, below)
  export GHOST_TEST_INFINIBAND_DIR=$work/infiniband
  [ "$flavour" = openmpi ] && extra+=(-x GHOST_TEST_RECEIVE_DIE -x GHOST_TEST_INFINIBAND_DIR)
  # Open MPI's PML selection, told in each rank's stderr (checked after the first move).
  [ "$flavour" = openmpi ] && export OMPI_MCA_pml_base_verbose=100 && extra+=(-x OMPI_MCA_pml_base_verbose)
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  here=$(hostname)
  refused "unknown rank" "'$np' is not a rank of this job" "$GHOST" migrate "$job" --rank $np --to "$here"
  refused "rank twice" "rank 1 is named twice" "$GHOST" migrate "$job" --rank 1,1 --to "$here"
  refused "bad host" "'a b' is not a host name" "$GHOST" migrate "$job" --rank 1 --to "a b"
  refused "bad --via" "--via takes ucx, fs or fs:DIR, got 'ucx:x'" "$GHOST" migrate "$job" --rank 1 --to "$here" --via ucx:x
  refused "no job" "no job 1 of this user is running" "$GHOST" migrate 1 --rank 1 --to "$here"
  migrated() { # migrated RANKS [OPTIONS]: must succeed, then every rank runs again
    local ranks=$1
    shift
    timeout -k 5 240 "$GHOST" migrate "$job" --rank "$ranks" --to "$here" "$@" >>"$work/mig.out" 2>>"$work/mig.err" ||
      fail "ghost migrate $job --rank $ranks failed: $(tail -1 "$work/mig.err")"
    local want="generation=[0-9]* quiesce_s=[0-9.]* export_s=[0-9.]* relaunch_s=[0-9.]* downtime_s=[0-9.]*"
    case "$*" in *fs:*) ;; *) want="via=ucx $LIVE_PHASES" ;; esac
    tail -1 "$work/mig.out" | grep -q "^migrate job=$job ranks=$ranks to=$here $want$" ||
      fail "unexpected migrate line: $(tail -1 "$work/mig.out")"
    [ -n "${whole:-}" ] || precopied "$@"
    [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = "$np" ] ||
      fail "not every rank runs after the migration: $("$GHOST" status "$job")"
  }
  touch "$work/marker"
  migrated 1 # --via ucx, the default: nothing on disk (nor for the pre-copy)
  if [ "$flavour" = openmpi ]; then
    # Every fresh lower half asks for the PML the job's first MPI_Init chose (runtime.cpp,
    # note_transport_choice): it opens no other (pml cm is only there at the first one).
    opened=$(grep -c "components_register: found loaded component cm$" "$work/run.err")
    chosen=$(grep -c "select: component ob1 selected$" "$work/run.err")
    [ "$opened" = "$np" ] && [ "$chosen" = $((2 * np)) ] ||
      fail "the fresh lower halves chose their PML again: pml cm opened $opened times, ob1 chosen $chosen times ($np ranks, one move)"
  fi
  [ -z "$(ls -A "$ck" 2>/dev/null)" ] || fail "--via ucx wrote into the checkpoint directory: $(ls -A "$ck")"
  # (/tmp and /dev/shm as a whole are shared with other tests that run side by side: the job's
  # own places, and the ranks' private runtime directory, where a sender keeps its report.)
  rtdir=${GHOST_RUNTIME_DIR:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/ghost}}
  found=$(find "$work" "${rtdir:-/tmp/ghost-$(id -u)}" -xdev -newer "$work/marker" \( -name '*.ghost' -o -name 'send-*' \) 2>/dev/null | head -3)
  [ -z "$found" ] || fail "--via ucx left images: $found"
  # On a host with an RDMA device (whose writes into memory no tracking sees) the rank cannot be
  # pre-copied: it sends a whole image instead, and says why.
  mkdir -p "$work/infiniband/mlx5_test"
  whole=1 migrated 1
  tail -1 "$work/mig.out" | grep -q " precopy_bytes=0 " || fail "pre-copied beside an RDMA device: $(tail -1 "$work/mig.out")"
  grep -q "migration: rank 1 sends a whole image (no pre-copy: .*RDMA device (mlx5_test)" "$work/run.err" ||
    fail "no note of the whole image: $(grep migration: "$work/run.err")"
  rm -r "$work/infiniband"
  # A receiver that dies mid-transfer (of the pre-copy): the migration fails in one line, the job
  # goes on where it was (nothing was killed). GHOST_TEST_RECEIVE_DIE is in the job's environment
  # (below).
  echo 200000 >"$work/die-at" # (each rank's image is about 500 kB)
  # (given up in its pre-copy, before the job stopped: a whole image would fail there too)
  receiver_dies "the ranks could not move to $here (rank [0-9]*: pre-copy of pid [0-9]* failed: .*)" --rank 1 --to "$here"
  [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = "$np" ] ||
    fail "not every rank runs after the failed migration: $("$GHOST" status "$job")"
  migrated 0,2 --no-precopy # again after the failure
  mkdir -p "$work/shared"
  migrated 0,2 --via "fs:$work/shared"
  [ -s "$work/shared/gen-1/manifest.json" ] || fail "--via fs: wrote no images into its directory"
  timeout -k 5 240 "$GHOST" migrate "$job" --rank 1 --to no-such-host.invalid --start-timeout 5000 >"$work/bad.out" 2>"$work/bad.err" &&
    fail "a live migration to an unknown host succeeded"
  [ "$(wc -l <"$work/bad.err")" = 1 ] || fail "the failed migration said more than one line: $(cat "$work/bad.err")"
  grep -q "^ghost: migration of job $job failed: the ranks could not move to no-such-host.invalid (.*); the job goes on where it was$" "$work/bad.err" ||
    fail "unexpected failure: $(cat "$work/bad.err")"
  timeout -k 5 240 "$GHOST" migrate "$job" --rank 1 --to no-such-host.invalid --via fs --start-timeout 5000 >"$work/bad.out" 2>"$work/bad.err" &&
    fail "a migration to an unknown host succeeded"
  [ "$(wc -l <"$work/bad.err")" = 1 ] || fail "the failed migration said more than one line: $(cat "$work/bad.err")"
  grep -q "^ghost: migration of job $job failed: the ranks could not start on no-such-host.invalid (.*); the job goes on where it was, from generation [0-9]*$" "$work/bad.err" ||
    fail "unexpected failure: $(cat "$work/bad.err")"
  [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = "$np" ] ||
    fail "not every rank runs after the failed migration"
  finish 0
  # (No mpirun, old or given up, said the job failed.)
  ! grep -qE "has been aborted|BAD TERMINATION" "$work/run.err" "$work/run.out" ||
    fail "an mpirun said the job failed: $(grep -hE -m1 "has been aborted|BAD TERMINATION" "$work/run.err" "$work/run.out")"
  same_as_native "$work/run.out"
  # Nothing of the abandoned relaunch or of the moved ranks' old processes is left.
  sleep 1
  left=$(pgrep -f "^$prog " | tr '\n' ' ')
  [ -z "$left" ] || fail "processes of the job are left: $left"
  ;;
migwrite)
  # Every rank holds 48 MiB; rank 1 rewrites 32 random pages a millisecond between steps
  # (programs/job_steps.c HOLD_MIB) and checks every page at the end. Its pre-copy goes in rounds
  # (a round follows any write: GHOST_TEST_PRECOPY_SMALL=0, so that how much the rank writes
  # during a round, which depends on the machine's load, does not decide): moved with --keep,
  # without, and with --keep again; then with --precopy-rounds 1 (one round); a move whose
  # receiver dies as the second round comes fails in one line, the job going on.
  export GHOST_TEST_RECEIVE_DIE=$work/die-at GHOST_TEST_PRECOPY_SMALL=0
  [ "$flavour" = openmpi ] && extra+=(-x GHOST_TEST_RECEIVE_DIE -x GHOST_TEST_PRECOPY_SMALL)
  start run "$GHOSTRUN" "${gopts[@]}" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms 0 48
  here=$(hostname)
  for opts in --keep "" --keep; do
    # shellcheck disable=SC2086 # (no option: none)
    timeout -k 5 240 "$GHOST" migrate "$job" --rank 1 --to "$here" $opts >>"$work/mig.out" 2>>"$work/mig.err" ||
      fail "ghost migrate $job --rank 1 $opts failed: $(tail -1 "$work/mig.err")"
    via=ucx
    [ -n "$opts" ] && via=ucx+keep
    tail -1 "$work/mig.out" | grep -q "^migrate job=$job ranks=1 to=$here via=$via $LIVE_PHASES$" ||
      fail "unexpected migrate line: $(tail -1 "$work/mig.out")"
    rounds=$(tail -1 "$work/mig.out" | sed -n 's/.* precopy_rounds=\([0-9]*\) .*/\1/p')
    [ "${rounds:-0}" -ge 2 ] || fail "the pre-copy of a writing rank went in one round: $(tail -1 "$work/mig.out")"
    [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = "$np" ] ||
      fail "not every rank runs after the migration: $("$GHOST" status "$job")"
  done
  timeout -k 5 240 "$GHOST" migrate "$job" --rank 1 --to "$here" --keep --precopy-rounds 1 >>"$work/mig.out" 2>>"$work/mig.err" ||
    fail "ghost migrate $job --rank 1 --keep --precopy-rounds 1 failed: $(tail -1 "$work/mig.err")"
  tail -1 "$work/mig.out" | grep -q " precopy_rounds=1 " ||
    fail "--precopy-rounds 1 made more: $(tail -1 "$work/mig.out")"
  echo "round 2" >"$work/die-at"
  receiver_dies "the ranks could not move to $here (rank 1: pre-copy of pid [0-9]* failed: .*)" --rank 1 --to "$here" --keep
  [ "$("$GHOST" status "$job" | grep -c '^  rank .* running$')" = "$np" ] ||
    fail "not every rank runs after the failed migration: $("$GHOST" status "$job")"
  finish 0
  same_as_native "$work/run.out"
  ;;
replace)
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" "$work/run" replace
  until_ready "rank 1 saw rank 0's message"
  # rank 0 is inside MPI_Sendrecv_replace now (its message has arrived), and stays there
  checkpoint
  checkpoint --kill
  finish 75
  touch "$work/run/go"
  timeout -k 5 "$timeout_s" "$GHOST" restart "$ck" "${extra[@]}" >"$work/run2.out" 2>"$work/run2.err" ||
    fail "the restarted job exited $?"
  same_as_native "$work/run.out" "$work/run2.out"
  ;;
concurrent)
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  timeout -k 5 120 "$GHOST" checkpoint "$job" >"$work/first.out" 2>"$work/first.err" &
  first=$!
  timeout -k 5 120 "$GHOST" checkpoint "$job" >"$work/second.out" 2>"$work/second.err" &
  second=$!
  wait $first || fail "the first of two checkpoints at once failed"
  wait $second || fail "the second of two checkpoints at once failed"
  [ "$(cat "$work/first.out" "$work/second.out" | grep -o ' generation=[0-9]*' | sort | tr -d '\n')" = \
    " generation=1 generation=2" ] || fail "two checkpoints at once: $(cat "$work/first.out" "$work/second.out")"
  finish 0
  same_as_native "$work/run.out"
  ;;
keeps)
  start run "$GHOSTRUN" --ckpt-dir "$ck" --interval 1 --incremental -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  for _ in $(seq 1 500); do
    [ -s "$ck/latest" ] && break
    sleep 0.02
  done
  [ -s "$ck/latest" ] || fail "no periodic checkpoint"
  checkpoint --kill
  finish 75
  killed=$(sed -n 's/^gen-\([0-9]*\)$/\1/p' "$ck/latest")
  [ -n "$killed" ] || fail "latest names no generation: $(cat "$ck/latest")"
  start run2 "$GHOST" restart "$ck" "${extra[@]}"
  newer=$(generation_after "$killed") || fail "the restarted job took no periodic checkpoint in 10 s"
  python3 - "$ck/gen-$newer/manifest.json" <<'PY' || fail "gen-$newer's settings: $(cat "$ck/gen-$newer/manifest.json")"
import json, sys
s = json.load(open(sys.argv[1]))["settings"]
sys.exit(0 if s["interval_s"] == 1 and s["incremental"] is True else 1)
PY
  # The first image after a restart is whole; the next builds on it.
  next=$(generation_after "$newer") || fail "the restarted job took one periodic checkpoint, not two"
  "$GHOST" inspect "$ck/gen-$next/rank0.ghost" 2>&1 | grep -q "gen-$newer/rank0.ghost" ||
    fail "gen-$next's rank 0 image is not incremental on gen-$newer: $("$GHOST" inspect "$ck/gen-$next/rank0.ghost" 2>&1 | head -20)"
  finish 0
  same_as_native "$work/run.out" "$work/run2.out"
  refused "a restart of a job that ran to its end" "the job ran to its end after gen-[0-9]*" "$GHOST" restart "$ck" "${extra[@]}"
  ;;
migkill)
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" $steps $sleep_ms
  here=$(hostname)
  landed=""
  for attempt in 1 2 3 4 5 6; do
    timeout -k 5 120 "$GHOST" migrate "$job" --rank 1 --to "$here" >"$work/mig.out" 2>"$work/mig.err" &
    mig=$!
    victim=""
    for _ in $(seq 1 1000); do
      victim=$("$GHOST" status "$job" 2>/dev/null |
        awk -v np="$np" '$1 == "rank" && $7 == "sent" { n++; if (!p) p = $4 } END { if (n == np) print p }')
      [ -n "$victim" ] && break
      kill -0 $mig 2>/dev/null || break
    done
    [ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null && landed=$attempt
    wait $mig || fail "migration $attempt (old rank pid ${victim:-none} killed) failed: $(cat "$work/mig.err")"
    grep -q "^migrate job=$job ranks=1 to=$here via=ucx " "$work/mig.out" || fail "migration $attempt: $(cat "$work/mig.out")"
    [ -n "$landed" ] && break
  done
  [ -n "$landed" ] || fail "no old rank was seen with its image sent in 6 migrations"
  progress "an old rank was killed with its image sent, in migration $landed"
  finish 0
  same_as_native "$work/run.out"
  ;;
winfree | windyn | disconnect)
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" "$work/run" "$mode"
  until_ready "rank 0 wrote ready"
  # rank 0 is inside MPI_Win_free (MPI_Win_create_dynamic, MPI_Comm_disconnect) now, waiting
  # for rank 1, which waits for go
  sleep 0.3
  timeout -k 5 120 "$GHOST" checkpoint --kill "$job" >>"$work/ckpt.out" 2>>"$work/ckpt.err" &
  cpid=$!
  # The checkpoint runs rank 1 forward into the call once it goes on: both leave it, and the
  # checkpoint succeeds. (It waited until its quiescence timed out for rank 0, held inside.)
  sleep 1
  touch "$work/run/go"
  wait $cpid || fail "ghost checkpoint --kill $job failed"
  finish 75
  timeout -k 5 "$timeout_s" "$GHOST" restart "$ck" "${extra[@]}" >"$work/run2.out" 2>"$work/run2.err" ||
    fail "the restarted job exited $?"
  same_as_native "$work/run.out" "$work/run2.out"
  ;;
ended)
  timeout -k 5 "$timeout_s" "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" "$prog" 5 0 >"$work/run.out" 2>"$work/run.err" ||
    fail "the job failed"
  job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/run.err" | head -1)
  refused "ended job" "no job or process $job" "$GHOST" checkpoint "$job"
  ;;
*)
  echo "usage: $0 resume|restart|twice|auto|fallback|refuse|rankdies|ended|usr1|migrate|migwrite|replace|winfree|windyn|disconnect|concurrent|keeps|migkill FLAVOUR NP PROGRAM [MPIRUN OPTIONS...]" >&2
  exit 2
  ;;
esac
echo "OK: $mode $flavour np=$np ${extra[*]}"
