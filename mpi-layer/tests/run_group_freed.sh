#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A job whose ranks disagree on an MPI_Comm_create_group communicator (programs/group_freed.c:
# rank 1 has freed it, the others have not). A restart replays its creation collectively over the
# group, so rank 1 must keep its record (a tombstone) and replay it too, or the others wait there
# for ever: `ghost checkpoint --kill` then, `ghost restart`, a live checkpoint of the restarted job
# (rank 1 replayed and freed it again), and the job ends as it should once the others free it.
# Usage: run_group_freed.sh FLAVOUR NP PROGRAM; GHOSTRUN, GHOST: paths.
set -u
flavour=$1 np=$2 prog=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d "${TMPDIR:-/tmp}/ghost-groupfreed.XXXXXX")
gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in run.out run.err run2.out run2.err ckpt.out ckpt.err; do
    [ -s "$work/$f" ] && { echo "--- $f"; cat "$work/$f"; }
  done
  exit 1
}
job_of() { # job_of NAME: the job id its ghostrun printed, once every rank has registered
  local job=""
  for _ in $(seq 1 600); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$1.err" | head -1)
    [ -n "$job" ] && [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] &&
      break
    kill -0 "$gpid" 2>/dev/null || fail "$1 ended early"
    sleep 0.05
  done
  [ -n "$job" ] || fail "$1 printed no job id"
  echo "$job"
}
setsid timeout -k 5 120 "$GHOSTRUN" --mpi "$flavour" --ckpt-dir "$work/ck" -np "$np" "$prog" "$work" \
  >"$work/run.out" 2>"$work/run.err" &
gpid=$!
for _ in $(seq 1 600); do
  [ -e "$work/freed" ] && break
  kill -0 "$gpid" 2>/dev/null || fail "the job ended early"
  sleep 0.05
done
[ -e "$work/freed" ] || fail "rank 1 never freed its communicator"
job=$(job_of run)
timeout -k 5 60 "$GHOST" checkpoint --kill "$job" >>"$work/ckpt.out" 2>>"$work/ckpt.err" ||
  fail "the checkpoint failed"
wait "$gpid"
rc=$?
[ $rc = 75 ] || fail "the checkpointed job exited $rc, expected 75"
setsid timeout -k 5 120 "$GHOST" restart "$work/ck" >"$work/run2.out" 2>"$work/run2.err" &
gpid=$!
job=$(job_of run2)
timeout -k 5 60 "$GHOST" checkpoint "$job" >>"$work/ckpt.out" 2>>"$work/ckpt.err" ||
  fail "the restarted job's checkpoint failed"
touch "$work/go"
wait "$gpid"
rc=$?
gpid=""
[ $rc = 0 ] || fail "the restarted job exited $rc"
[ "$(grep -c ' PASS$' "$work/run2.out")" = "$np" ] || fail "not every rank passed"
echo "OK: group_freed $flavour: checkpointed, restarted, checkpointed"
