#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A job whose ranks disagree on an MPI_Comm_create_group communicator (programs/group_freed.c:
# rank 1 has freed it, the others have not): `ghost checkpoint` must be refused in one line naming
# the disagreement, before anything is written or killed; the job goes on and ends as it should.
# (A restart from such a checkpoint would wait for ever in the replay of its creation.)
# Usage: run_group_freed.sh FLAVOUR NP PROGRAM; GHOSTRUN, GHOST: paths.
set -u
flavour=$1 np=$2 prog=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d "${TMPDIR:-/tmp}/ghost-groupfreed.XXXXXX")
gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -KILL "$gpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in run.out run.err ckpt.out ckpt.err; do
    [ -s "$work/$f" ] && { echo "--- $f"; cat "$work/$f"; }
  done
  exit 1
}
timeout -k 5 120 "$GHOSTRUN" --mpi "$flavour" --ckpt-dir "$work/ck" -np "$np" "$prog" "$work" \
  >"$work/run.out" 2>"$work/run.err" &
gpid=$!
for _ in $(seq 1 600); do
  [ -e "$work/freed" ] && break
  kill -0 "$gpid" 2>/dev/null || fail "the job ended early"
  sleep 0.05
done
[ -e "$work/freed" ] || fail "rank 1 never freed its communicator"
job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/run.err" | head -1)
[ -n "$job" ] || fail "no job id"
timeout -k 5 60 "$GHOST" checkpoint "$job" >"$work/ckpt.out" 2>"$work/ckpt.err" &&
  fail "the checkpoint was not refused"
[ "$(wc -l <"$work/ckpt.err")" = 1 ] || fail "the refusal is not one line"
grep -q "^ghost: checkpoint of job $job failed: rank 0 and [0-9]* other(s) of the $np ranks .* a restart could not rebuild it; the job resumed$" \
  "$work/ckpt.err" || fail "unexpected refusal: $(cat "$work/ckpt.err")"
[ -z "$(ls -A "$work/ck" 2>/dev/null)" ] || fail "debris in the checkpoint directory: $(ls -A "$work/ck")"
touch "$work/go"
wait "$gpid"
rc=$?
gpid=""
[ $rc = 0 ] || fail "the job exited $rc"
[ "$(grep -c ' PASS$' "$work/run.out")" = "$np" ] || fail "not every rank passed"
echo "OK: group_freed $flavour: $(cat "$work/ckpt.err")"
