#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Python MPI programs (mpi4py) under ghostrun, against the output of the same program under plain
# mpirun. The interpreter links no MPI library: ghostrun finds the MPI from mpi4py's extension
# module, and the layer starts when mpi4py's import calls MPI. `python3` is a shim on PATH (a shell
# script that execs the real interpreter, as pyenv's are): ghostrun must run the real one.
#   run_py.sh MODE NP PROGRAM.py [MPIRUN OPTIONS...]
# Modes:
#   compare  ghostrun -np NP python3 PROGRAM.py: same output as mpirun; the ranks run the real
#            interpreter (its path in ghostrun's mpirun command), not the shim
#   restart  ghost checkpoint --kill (ghostrun exits 75), ghost restart DIR finishes the job with
#            the uninterrupted output; the manifest names the real interpreter
#   refuse   one line, status 2, nothing launched: a Python without mpi4py (a venv without the
#            system's packages); --mpi naming another MPI than mpi4py's; --mpi with a bad value;
#            a shell script with neither (ghostrun cannot look into it)
#   named    --mpi openmpi runs a shell script that execs python3 PROGRAM.py: same output
# Environment: GHOSTRUN, GHOST (paths), GHOST_TEST_TIMEOUT (seconds per run, default 120).
set -u
mode=$1 np=$2 prog=$3
shift 3
extra=("$@")
timeout_s=${GHOST_TEST_TIMEOUT:-120}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
python=/usr/bin/python3
real_python=$($python -c 'import sys; print(sys.executable)')
$python -c 'import mpi4py, numpy' 2>/dev/null || { echo "FAIL: $python has no mpi4py or numpy (scripts/install-deps.sh)"; exit 1; }
steps=40 sleep_ms=25
work=$(mktemp -d /tmp/ghost-py.XXXXXX)
ck=$work/ck
gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $mode: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -c 3000 "$f"; }
  done
  for f in "$ck"/gen-*/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -c 1000 "$f"; }; done
  exit 1
}

# The shim: first on PATH, a script like pyenv's.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec %s "$@"\n' "$python" >"$work/bin/python3"
chmod +x "$work/bin/python3"
export PATH="$work/bin:$PATH"

start() { # start NAME COMMAND...: in the background, in a session of its own; sets gpid and job
  local name=$1
  shift
  setsid timeout -k 5 "$timeout_s" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  gpid=$!
  job=""
  for _ in $(seq 1 500); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$work/$name.err" | head -1)
    [ -n "$job" ] && break
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before it printed its job id"
    sleep 0.02
  done
  [ -n "$job" ] || fail "$name printed no job id"
  for _ in $(seq 1 1500); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] && return 0
    kill -0 "$gpid" 2>/dev/null || fail "$name ended before every rank registered"
    sleep 0.02
  done
  fail "$name: not every rank registered with the coordinator"
}

finish() { # finish EXPECTED_STATUS
  wait "$gpid"
  local rc=$?
  gpid=""
  [ "$rc" = "$1" ] || fail "the job exited $rc, expected $1"
}

same_as_native() { # same_as_native FILES...
  grep -h '^rank [0-9]*: ' "$work/native.out" | sort >"$work/ref.sorted"
  grep -h '^rank [0-9]*: ' "$@" | sort >"$work/got.sorted"
  [ "$(grep -c ' PASS$' "$work/ref.sorted")" = "$np" ] || fail "the native run did not pass"
  diff -u "$work/ref.sorted" "$work/got.sorted" >"$work/diff" || fail "outputs differ: $(cat "$work/diff")"
}

refused() { # refused WHAT PATTERN COMMAND...: one line "ghostrun: ...", status 2, nothing ran
  local what=$1 pat=$2
  shift 2
  timeout -k 5 60 "$@" >"$work/refused.out" 2>"$work/refused.err"
  local rc=$?
  [ $rc = 2 ] || fail "$what: status $rc, expected 2: $(cat "$work/refused.err")"
  [ "$(wc -l <"$work/refused.err")" = 1 ] || fail "$what: not one line: $(cat "$work/refused.err")"
  grep -q "^ghostrun: .*$pat" "$work/refused.err" || fail "$what: unexpected refusal: $(cat "$work/refused.err")"
  [ ! -s "$work/refused.out" ] || fail "$what: something ran: $(cat "$work/refused.out")"
}

if [ "$mode" != refuse ]; then
  timeout -k 5 "$timeout_s" mpirun.openmpi -np "$np" "${extra[@]}" $python "$prog" $steps $sleep_ms \
    >"$work/native.out" 2>"$work/native.err" || fail "the native run failed"
fi

case $mode in
compare)
  timeout -k 5 "$timeout_s" "$GHOSTRUN" --ghost-verbose -np "$np" "${extra[@]}" python3 "$prog" $steps $sleep_ms \
    >"$work/run.out" 2>"$work/run.err" || fail "ghostrun failed"
  grep -q "^ghostrun: job [0-9]*: coordinator at .* $real_python $prog $steps $sleep_ms\$" "$work/run.err" ||
    fail "the ranks do not run the real interpreter $real_python"
  same_as_native "$work/run.out"
  ;;
restart)
  start run "$GHOSTRUN" --ckpt-dir "$ck" -np "$np" "${extra[@]}" python3 "$prog" $steps $sleep_ms
  sleep 0.3
  timeout -k 5 120 "$GHOST" checkpoint --kill "$job" >"$work/ckpt.out" 2>"$work/ckpt.err" ||
    fail "ghost checkpoint --kill $job failed"
  finish 75
  [ "$($python -c 'import json, sys; print(*json.load(open(sys.argv[1]))["argv"][:2])' "$ck/gen-1/manifest.json")" = "$real_python $prog" ] ||
    fail "the manifest does not name the real interpreter: $(cat "$ck/gen-1/manifest.json")"
  start run2 "$GHOST" restart "$ck" "${extra[@]}"
  finish 0
  same_as_native "$work/run.out" "$work/run2.out"
  ;;
refuse)
  $python -m venv --without-pip "$work/venv" || fail "cannot make a venv"
  refused "no mpi4py" "is not an MPI program .*$work/venv/bin/python3 has no mpi4py); name its MPI with --mpi openmpi|mpich" \
    "$GHOSTRUN" -np "$np" "$work/venv/bin/python3" "$prog"
  refused "another MPI" "--mpi mpich names libmpich.so.12, but python3 loads libmpi.so.40" \
    "$GHOSTRUN" --mpi mpich -np "$np" python3 "$prog"
  refused "bad --mpi" "--mpi takes openmpi or mpich, got 'lam'" "$GHOSTRUN" --mpi lam -np "$np" python3 "$prog"
  printf '#!/bin/sh\nexec python3 "$@"\n' >"$work/wrapper.sh"
  chmod +x "$work/wrapper.sh"
  refused "a shell script" "wrapper.sh is a script run by /bin/sh, which ghostrun cannot look into); name its MPI with --mpi" \
    "$GHOSTRUN" -np "$np" "$work/wrapper.sh" "$prog"
  ;;
named)
  printf '#!/bin/sh\nexec python3 "$@"\n' >"$work/wrapper.sh"
  chmod +x "$work/wrapper.sh"
  timeout -k 5 "$timeout_s" "$GHOSTRUN" --mpi openmpi -np "$np" "${extra[@]}" "$work/wrapper.sh" "$prog" $steps $sleep_ms \
    >"$work/run.out" 2>"$work/run.err" || fail "ghostrun failed"
  same_as_native "$work/run.out"
  ;;
*)
  echo "usage: $0 compare|restart|refuse|named NP PROGRAM.py [MPIRUN OPTIONS...]" >&2
  exit 2
  ;;
esac
echo "OK: $mode np=$np ${extra[*]}"
