#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Evaluation driver of the MGS benchmark: reproduces the seed paper's Section 5 with ghost.
# Measures native MGS, references (dd, memcpy), ghost image sizes, checkpoint/restart to memory and
# to disk, and the runtime overhead of ghost; writes CSVs, report.md and PNG plots into --out.
# See benchmarks/mgs/README.md. Needs root for cold-cache reads (drop_caches).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY=/usr/bin/python3
ME=run-eval.sh

GHOST="$REPO/build/launcher/ghost"
BUILD="$REPO/build"
OUT="$HERE/results"
DISK_DIR=""
SIZES_FULL="500,750,1000,1250,1500,1750,2000,3000,4000,6000,8000"
SIZES=""
QUICK=0
NO_GHOST=0
REPORT_ONLY=0
REPS=""
HOLD_AT=end
DUP_VIA=mem
OVERHEAD_N=""
OVERHEAD_REPS=""
SEED=1

usage() {
    cat <<EOF
usage: $ME [options]
  --ghost PATH        ghost CLI (default: build/launcher/ghost in the repository)
  --build DIR         build directory (the root, or the one holding mgs and memcpy_bench;
                      default: build/ in the repository)
  --sizes LIST        comma-separated matrix orders (default: $SIZES_FULL,
                      sizes that do not fit in memory are skipped; explicit sizes must fit)
  --quick             few sizes (500,1000,2000), one repetition, short overhead runs
  --reps N            repetitions of each measurement (default 3, 1 with --quick; sizes > 2000: 1)
  --out DIR           results directory (default: benchmarks/mgs/results)
  --disk-dir DIR      where images and dd files are written (default: OUT/tmp)
  --hold-at end|start checkpoint after the computation (default) or before it
  --dup-via mem|pipe  resource for 'ghost duplicate' (default mem)
  --overhead-n N      matrix order of the overhead runs (default 2000, 1000 with --quick)
  --overhead-reps N   native/ghost pairs for the overhead (default 5, 3 with --quick)
  --seed S            MGS input seed (default 1)
  --no-ghost          skip everything that needs ghost (native runs, references and report only)
  --report-only       regenerate report.md and the plots from the CSVs in --out
  -h, --help          this help
EOF
}

err() {
    echo "$ME: error: $*" >&2
    exit 2
}

need_arg() { [[ $# -ge 2 && -n "$2" ]] || err "option $1 needs a value"; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 > 0)); }

while [[ $# -gt 0 ]]; do
    case "$1" in
    --ghost) need_arg "$@"; GHOST="$2"; shift 2 ;;
    --build) need_arg "$@"; BUILD="$2"; shift 2 ;;
    --sizes) need_arg "$@"; SIZES="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --reps) need_arg "$@"; REPS="$2"; shift 2 ;;
    --out) need_arg "$@"; OUT="$2"; shift 2 ;;
    --disk-dir) need_arg "$@"; DISK_DIR="$2"; shift 2 ;;
    --hold-at) need_arg "$@"; HOLD_AT="$2"; shift 2 ;;
    --dup-via) need_arg "$@"; DUP_VIA="$2"; shift 2 ;;
    --overhead-n) need_arg "$@"; OVERHEAD_N="$2"; shift 2 ;;
    --overhead-reps) need_arg "$@"; OVERHEAD_REPS="$2"; shift 2 ;;
    --seed) need_arg "$@"; SEED="$2"; shift 2 ;;
    --no-ghost) NO_GHOST=1; shift ;;
    --report-only) REPORT_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) err "unknown argument '$1' (try --help)" ;;
    esac
done

[[ -x "$PY" ]] || err "$PY not found (the evaluation needs the system python with matplotlib)"
"$PY" -c 'import matplotlib' 2>/dev/null || err "$PY has no matplotlib (apt-get install python3-matplotlib)"
mkdir -p "$OUT" || err "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"

if ((REPORT_ONLY)); then
    [[ -f "$OUT/native.csv" ]] || err "no results in $OUT (run without --report-only first)"
    exec "$PY" "$HERE/report.py" "$OUT"
fi

# ---- validate options ----
[[ "$HOLD_AT" == end || "$HOLD_AT" == start ]] || err "--hold-at must be 'end' or 'start'"
[[ "$DUP_VIA" == mem || "$DUP_VIA" == pipe ]] || err "--dup-via must be 'mem' or 'pipe'"
[[ "$SEED" =~ ^[0-9]+$ ]] || err "invalid --seed '$SEED'"
SIZES_EXPLICIT=1
if [[ -z "$SIZES" ]]; then
    SIZES_EXPLICIT=0
    if ((QUICK)); then SIZES="500,1000,2000"; else SIZES="$SIZES_FULL"; fi
fi
IFS=, read -r -a size_list <<<"$SIZES"
((${#size_list[@]} > 0)) || err "--sizes is empty"
for s in "${size_list[@]}"; do
    is_uint "$s" || err "invalid size '$s' in --sizes (expected positive integers separated by commas)"
done
if [[ -z "$REPS" ]]; then if ((QUICK)); then REPS=1; else REPS=3; fi; fi
is_uint "$REPS" || err "invalid --reps '$REPS'"
if [[ -z "$OVERHEAD_N" ]]; then if ((QUICK)); then OVERHEAD_N=1000; else OVERHEAD_N=2000; fi; fi
if [[ -z "$OVERHEAD_REPS" ]]; then if ((QUICK)); then OVERHEAD_REPS=3; else OVERHEAD_REPS=5; fi; fi
is_uint "$OVERHEAD_N" || err "invalid --overhead-n '$OVERHEAD_N'"
is_uint "$OVERHEAD_REPS" || err "invalid --overhead-reps '$OVERHEAD_REPS'"

# ---- locate the binaries ----
[[ -d "$BUILD" ]] || err "build directory $BUILD not found (build first: cmake -S $REPO -B $REPO/build -G Ninja && ninja -C $REPO/build mgs memcpy_bench, or pass --build DIR)"
BIN=""
for d in "$BUILD" "$BUILD/benchmarks/mgs"; do
    if [[ -x "$d/mgs" && -x "$d/memcpy_bench" ]]; then BIN="$(cd "$d" && pwd)"; break; fi
done
[[ -n "$BIN" ]] || err "mgs and memcpy_bench not found in $BUILD (build them: ninja -C $BUILD mgs memcpy_bench)"

GHOST_ARGS=()
if ((NO_GHOST)); then
    echo "$ME: --no-ghost: ghost measurements skipped (native runs, references and report only)"
else
    [[ -x "$GHOST" && -f "$GHOST" ]] || err "ghost binary not found at $GHOST (build the launcher, pass --ghost PATH, or use --no-ghost for the native and reference parts only)"
    GHOST="$(cd "$(dirname "$GHOST")" && pwd)/$(basename "$GHOST")"
    GHOST_ARGS=(--ghost "$GHOST")
fi

[[ -n "$DISK_DIR" ]] || DISK_DIR="$OUT/tmp"
mkdir -p "$DISK_DIR" || err "cannot create $DISK_DIR"
DISK_DIR="$(cd "$DISK_DIR" && pwd)"
if [[ ! -w /proc/sys/vm/drop_caches ]]; then
    echo "$ME: warning: /proc/sys/vm/drop_caches is not writable (run as root for cold-cache reads)" >&2
fi

EXTRA=()
((SIZES_EXPLICIT)) && EXTRA+=(--sizes-explicit)
((QUICK)) && EXTRA+=(--quick --correct-n 500 --correct-repeat 4)

echo "$ME: results in $OUT, images in $DISK_DIR, sizes $SIZES"
"$PY" "$HERE/eval.py" --repo "$REPO" --mgs "$BIN/mgs" --memcpy "$BIN/memcpy_bench" "${GHOST_ARGS[@]}" \
    --out "$OUT" --disk-dir "$DISK_DIR" --sizes "$SIZES" --reps "$REPS" --seed "$SEED" \
    --hold-at "$HOLD_AT" --dup-via "$DUP_VIA" --overhead-n "$OVERHEAD_N" \
    --overhead-reps "$OVERHEAD_REPS" "${EXTRA[@]}"
"$PY" "$HERE/report.py" "$OUT"
echo "$ME: done: $OUT/report.md"
