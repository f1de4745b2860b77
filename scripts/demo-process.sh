#!/usr/bin/env bash
# The demo job: a Modified Gram-Schmidt run (benchmarks/mgs) under ghost is checkpointed twice while
# it computes, killed, restarted from its last image, killed and restarted again, and its result is
# checked against an uninterrupted native run. Installs and builds what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build ghost mgs >/dev/null

ghost=build/launcher/ghost
mgs=build/benchmarks/mgs/mgs
args=(--n 1000 --repeat 40)
work=$(mktemp -d /tmp/ghost-demo-XXXXXX)
trap 'kill -9 $(cat "$work"/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
say() { printf '\n== %s\n' "$*"; }

say "uninterrupted native run (reference)"
"$mgs" "${args[@]}" >"$work/reference" 2>/dev/null
cat "$work/reference"

say "the same job under ghost"
"$ghost" launch --ckpt-dir "$work/ckpt" --pid-file "$work/pid" -- "$mgs" "${args[@]}" \
  >"$work/out" 2>/dev/null &
launcher=$!
sleep 1.5
"$ghost" checkpoint "$(cat "$work/pid")"
sleep 1.5
"$ghost" checkpoint --kill "$(cat "$work/pid")"
wait "$launcher" || true
"$ghost" inspect "$work/ckpt" | head -6

say "restart from the image, then checkpoint, kill and restart once more"
rm -f "$work/pid"
"$ghost" restart --pid-file "$work/pid" "$work/ckpt" &
restarter=$!
for _ in $(seq 50); do [[ -s $work/pid ]] && break; sleep 0.1; done
sleep 1.5
"$ghost" checkpoint --kill "$(cat "$work/pid")" || true
wait "$restarter" || true
"$ghost" restart "$work/ckpt"

say "result"
cat "$work/out"
if cmp -s "$work/out" "$work/reference"; then
  echo "RESULT OK: the checkpointed, killed and twice restarted job computed exactly the reference result"
else
  echo "RESULT MISMATCH"; diff "$work/reference" "$work/out"; exit 1
fi
