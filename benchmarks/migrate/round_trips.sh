#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The issue's ten round trips (issue 11): rank 1 of a 3-rank job (job_steps.c, a rank per emulated
# host) moved from h2 to h3 and back 10 times in one run (GHOST_MIGRATIONS=20), through UCX (live)
# (every rank relaunched, and with --keep: the others keep their processes) and through a shared
# directory, each FLAVOUR; after every move `ghost status` must name the
# hosts, and the job's output must be a native run's (tests/hosts/run_hosts.sh migrate). Too long
# for the suite (about 2 minutes a run here), whose mpi.hosts.migrate.* make 2 moves.
#   benchmarks/migrate/round_trips.sh BUILD [FLAVOUR...]   (default: openmpi mpich)
# Results: results/round_trips.md (appended: machine, load, each run's line with its downtimes).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: round_trips.sh BUILD [FLAVOUR...]}" && pwd)
shift
flavours=${*:-openmpi mpich}
out=$here/results/round_trips.md
export GHOSTRUN=$build/launcher/ghostrun/ghostrun GHOST=$build/launcher/ghost GHOST_MIGRATIONS=20
{
  echo "## $(date -u '+%Y-%m-%d %H:%M UTC'): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores, kernel $(uname -r)"
  echo
} >>"$out"
rc=0
for fl in $flavours; do
  for via in ucx keep fs; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    t0=$SECONDS
    line=$(GHOST_MIGRATE_VIA=$via "$here/../../tests/hosts/run_hosts.sh" migrate "$fl" \
      "$build/mpi-layer/tests/mpit_job_steps_${fl%-ucx}" 2>&1 | grep -E '^(OK|FAIL|SKIP)' | head -1)
    [ "${line#OK}" != "$line" ] || rc=1
    echo "- $fl via $via (load $load at start, $((SECONDS - t0)) s): $line" | tee -a "$out"
  done
done
echo >>"$out"
exit $rc
