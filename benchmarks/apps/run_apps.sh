#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Real MPI applications from Debian (nobody here wrote them) checkpointed mid-run and restarted
# under ghostrun; their deterministic output compared with an uninterrupted native mpirun run.
#   run_apps.sh [--install] [--build DIR] [--out FILE] [CASE...]
# CASE: hpcc lammps-melt lammps-crack netpipe-mpich mpi4py gromacs-water qe-si (default: these),
# scalapack-lu-openmpi scalapack-lu-mpich blacs-mpich (their native runs fail or hang here now and
# then). For each case, in a fresh directory per run (the programs write files in their working
# directory):
#   native   mpirun -np N PROGRAM                       -> the reference deterministic output
#   ghost    ghostrun -np N PROGRAM                     -> must equal native
#   goon     ghostrun, `ghost checkpoint JOB` at 30% of the plain ghostrun time (goes on)
#   restart  ghostrun, `ghost checkpoint --kill JOB` at ~25%, `ghost restart DIR`, the restarted
#            job checkpointed --kill again ~25% later and restarted again (restart of a restart)
#   migrate  ghostrun, `ghost migrate JOB --rank 1 --to THIS HOST` at ~15% (images over UCX, every
#            rank relaunched), `--rank 0 --keep` at ~35%, `--rank 1 --via fs` at ~55%
# Outcome per run: same | DIFFERENT | FAILED (exit status, hang = timeout) | refused (one line).
# Results: a markdown table, --out FILE (rows appended) or a new file in the work directory.
# Not CI: each case takes one to a few minutes. Needs root (Open MPI as root, apt-get).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$repo/build
out=""
install=0
cases=()
while [ $# -gt 0 ]; do
  case $1 in
  --install) install=1 ;;
  --build) build=$2; shift ;;
  --out) out=$2; shift ;;
  -h | --help) sed -n "3,17p" "$0"; exit 0 ;;
  *) cases+=("$1") ;;
  esac
  shift
done
[ ${#cases[@]} = 0 ] && cases=(mpi4py netpipe-mpich lammps-melt hpcc lammps-crack gromacs-water qe-si)
GHOST=$build/launcher/ghost
GHOSTRUN=$build/launcher/ghostrun/ghostrun
[ -x "$GHOST" ] && [ -x "$GHOSTRUN" ] || { echo "run_apps: build ghost first ($build)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
timeout_s=${APPS_TIMEOUT:-600}

if [ $install = 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    hpcc lammps lammps-examples scalapack-mpi-test netpipe-mpich2 python3-mpi4py \
    gromacs quantum-espresso quantum-espresso-data >/dev/null || exit 2
fi

root=$(mktemp -d /tmp/ghost-apps.XXXXXX)
[ -n "$out" ] || out=$root/results.md
log=$root/log.txt
echo "run_apps: work in $root, table in $out" >&2
SCA_MPICH=/usr/lib/x86_64-linux-gnu/scalapack/mpich-tests
SCA_OMPI=/usr/lib/x86_64-linux-gnu/scalapack/openmpi-tests

# ---- the cases: setup_CASE DIR (input files), cmd_CASE (program and arguments), det_CASE DIR
# (deterministic output of a finished run, from DIR/stdout and the files it wrote), flavour, np.
hpcc_input() { # N
  sed -e 's/^2            Ps/1            Ps/' -e "s/^1000         Ns/$1         Ns/" \
    /usr/share/doc/hpcc/examples/_hpccinf.txt >"$2/hpccinf.txt"
}
setup_hpcc() { hpcc_input 3000 "$1"; }
cmd_hpcc() { echo hpcc; }
det_hpcc() { # the summary without times and rates (HPL residuals, sizes, error counts, Success)
  # MPIRandomAccess_ExeUpdates is a time too: HPCC times a sample of the updates and cuts their
  # count to fit its 60 s bound (a checkpoint's pause in the sample cut it to 0.8x once).
  sed -n '/Begin of Summary/,/End of Summary/p' "$1/hpccoutf.txt" |
    grep -Ev '_time|Time=|Gflops|GUPs|GBs|GBytes|usec|STREAM_|Tflops|MPI_Wtick|ExeUpdates'
}

lammps_input() { # EXAMPLE STEPS THERMO DIR
  sed -e "s/^thermo[ \t].*/thermo $3/" -e "s/^run[ \t].*/run $2/" \
    "/usr/share/lammps/examples/$1/in.$1" >"$4/in.lmp"
}
setup_lammps-melt() { lammps_input melt 2500 250 "$1"; }
cmd_lammps-melt() { echo lmp -in in.lmp -log log.lmp; }
det_lammps-melt() { # thermo rows (step, temperature, energies, pressure)
  grep -E '^ +[0-9]+ +-?[0-9.]+(e[-+][0-9]+)? ' "$1/log.lmp"
}
setup_lammps-crack() { lammps_input crack 20000 2000 "$1"; }
cmd_lammps-crack() { echo lmp -in in.lmp -log log.lmp; }
det_lammps-crack() { det_lammps-melt "$@"; }

lu_input() { # DIR: 56 small LU problems (the tests' workspace is ~4 MB; more than 7 sizes or
  # NRHS > 1 makes the test read past its tables and hang, natively too), grids 1x2 and 2x1
  cat >"$1/LU.dat" <<'EOF'
'SCALAPACK, LU factorization input file'
'MPI Machine'
'LU.out'		output file name (if any)
6			device out
7			number of problems sizes
200 250 300 350 400 450 500	values of M
200 250 300 350 400 450 500	values of N
4			number of NB's
8 16 32 64 		values of NB
1			number of NRHS
1		values of NRHS
1			Number of NBRHS
1			values of NBRHS
2			number of process grids (ordered pairs of P & Q)
1 2		values of P
2 1 		values of Q
1.0			threshold
T			(T or F) Test Cond. Est. and Iter. Ref. Routines
EOF
}
setup_scalapack-lu-mpich() { lu_input "$1"; }
cmd_scalapack-lu-mpich() { echo $SCA_MPICH/xdlu; }
det_lu() { # per test: sizes, grid, PASSED/FAILED (no times), and the summary counts
  awk '$1 == "WALL" { print $2, $3, $4, $5, $6, $7, $8, $NF } /tests completed|tests skipped|^Finished/' "$1/stdout"
}
det_scalapack-lu-mpich() { det_lu "$@"; }
setup_scalapack-lu-openmpi() { lu_input "$1"; }
cmd_scalapack-lu-openmpi() { echo $SCA_OMPI/xdlu; }
det_scalapack-lu-openmpi() { det_lu "$@"; }

setup_blacs-mpich() { cp "$SCA_MPICH"/BLACS/*.dat "$1/"; } # 4 ranks: a 2 x 2 grid
cmd_blacs-mpich() { echo $SCA_MPICH/xCbtest; }
det_blacs-mpich() { grep -Ei 'pass|fail|error|tests' "$1/stdout" | grep -v -i 'time'; }

setup_mpi4py() { :; }
cmd_mpi4py() { echo /usr/bin/python3 -m mpi4py.bench ringtest -n 4096 -l 1000000; } # mpi4py's own ring
det_mpi4py() { sed -n 's/^time for \([0-9]*\) loops = .* seconds (\(.*\))$/\1 loops (\2)/p' "$1/stdout"; }

setup_netpipe-mpich() { :; }
cmd_netpipe-mpich() { echo NPmpich2 -u 1048576 -n 200 -o np.out; } # fixed repeats, not timed ones
det_netpipe-mpich() { cat "$1"/*.err | awk '/ bytes .* times / { print $1, $2, $3, $4, $5 }'; } # on stderr

# GROMACS (package gromacs: gmx_mpi is built with Open MPI): 884 SPC/E waters in a 3 nm box
# (gmx solvate), minimised, 5000 MD steps of 2 fs with PME, v-rescale at 300 K, fixed seeds. The
# run input is made once per work directory with the serial gmx; mdrun on 2 ranks (domain
# decomposition 2x1x1), one OpenMP thread each, -reprod, no dynamic load balancing, no PME tuning.
gromacs_tpr() { # -> $root/gromacs-input/topol.tpr
  local g=$root/gromacs-input
  [ -s "$g/topol.tpr" ] && return
  mkdir -p "$g"
  (
    cd "$g" || exit 1
    printf '#include "oplsaa.ff/forcefield.itp"\n#include "oplsaa.ff/spce.itp"\n\n[ system ]\nwater\n\n[ molecules ]\n' >topol.top
    printf '%s\n' 'integrator = steep' 'nsteps = 500' 'emtol = 1000' 'cutoff-scheme = Verlet' \
      'coulombtype = PME' 'rcoulomb = 1.0' 'rvdw = 1.0' >em.mdp
    printf '%s\n' 'integrator = md' 'dt = 0.002' 'nsteps = 5000' 'nstcalcenergy = 100' \
      'nstenergy = 500' 'nstlog = 500' 'cutoff-scheme = Verlet' 'coulombtype = PME' 'rcoulomb = 1.0' \
      'rvdw = 1.0' 'tcoupl = v-rescale' 'tc-grps = System' 'tau_t = 0.1' 'ref_t = 300' \
      'gen_vel = yes' 'gen_temp = 300' 'gen_seed = 12345' 'ld_seed = 54321' >md.mdp
    gmx -quiet solvate -cs spc216.gro -box 3 3 3 -o conf.gro -p topol.top &&
      gmx -quiet grompp -f em.mdp -c conf.gro -p topol.top -o em.tpr &&
      gmx -quiet mdrun -nt 1 -s em.tpr -deffnm em &&
      gmx -quiet grompp -f md.mdp -c em.gro -p topol.top -o topol.tpr
  ) >"$g/setup.log" 2>&1
}
setup_gromacs-water() { gromacs_tpr && cp "$root/gromacs-input/topol.tpr" "$1/"; }
cmd_gromacs-water() { echo gmx_mpi mdrun -s topol.tpr -ntomp 1 -reprod -dlb no -notunepme -nb cpu -g md.log -e ener.edr -c out.gro; }
det_gromacs-water() { # the energy rows of md.log every 500 steps and their averages, final coordinates
  awk '/^ +Step +Time$/ { getline; print "step", $1; next } /Energies \(kJ\/mol\)/ { e = 1; next }
    e && /^ *$/ { e = 0 } e' "$1/md.log"
  cat "$1/out.gro"
}

# Quantum ESPRESSO (pw.x): SCF of bulk Si (fcc, 2 atoms, one moved off its site so that forces
# and stress are not zero), LDA, the von Barth-Car pseudopotential from quantum-espresso-data's
# examples, ecutwfc 40 Ry, 10x10x10 k-points (282), 8 bands, conv_thr 1e-12; forces and stress;
# verbosity high: the bands of every k-point are printed (more than 100 k-points hide them).
setup_qe-si() {
  zcat /usr/share/doc/quantum-espresso/examples/EPW/sic/pp/Si.pz-vbc.UPF.gz >"$1/Si.pz-vbc.UPF"
  cat >"$1/pw.in" <<'EOF'
&control
  calculation = 'scf', prefix = 'si', outdir = './tmp', pseudo_dir = './'
  verbosity = 'high', tprnfor = .true., tstress = .true.
/
&system
  ibrav = 2, celldm(1) = 10.20, nat = 2, ntyp = 1, ecutwfc = 40.0, nbnd = 8
/
&electrons
  conv_thr = 1.0d-12, mixing_beta = 0.3
/
ATOMIC_SPECIES
  Si 28.086 Si.pz-vbc.UPF
ATOMIC_POSITIONS alat
  Si 0.00 0.00 0.00
  Si 0.26 0.24 0.25
K_POINTS automatic
  10 10 10 0 0 0
EOF
}
cmd_qe-si() { echo pw.x -in pw.in; }
det_qe-si() { # every SCF iteration's energy and accuracy, then all of the end: bands, energy terms,
  # forces, stress (no times)
  awk '/End of self-consistent calculation/ { f = 1 } /Writing output data/ { f = 0 }
    f || /iteration #|total energy|estimated scf accuracy|ethr =/' "$1/stdout"
}

flavour_of() {
  case $1 in *mpich*) echo mpich ;; *) echo openmpi ;; esac
}
np_of() { case $1 in blacs-*) echo 4 ;; *) echo 2 ;; esac; }

# ---- running
ms() { echo $(($(date +%s%N) / 1000000)); }
gpid=""
cleanup() { [ -n "$gpid" ] && kill -KILL -- "-$gpid" 2>/dev/null; }
trap cleanup EXIT

# start DIR NAME COMMAND...: in DIR, in a session of its own; sets gpid, job, t_up (ms from the
# command to every rank connected).
start() {
  local dir=$1 name=$2 t0
  shift 2
  t0=$(ms)
  (cd "$dir" && exec setsid timeout -k 5 "$timeout_s" "$@" >>"$dir/stdout" 2>>"$dir/$name.err") &
  gpid=$!
  job=""
  for _ in $(seq 1 3000); do
    job=$(sed -n 's/^ghostrun: job \([0-9]*\)$/\1/p' "$dir/$name.err" | head -1)
    [ -n "$job" ] && break
    kill -0 "$gpid" 2>/dev/null || return 1
    sleep 0.02
  done
  for _ in $(seq 1 3000); do
    [ "$("$GHOST" status "$job" 2>/dev/null | grep -c '^  rank .* running$')" = "$np" ] && break
    kill -0 "$gpid" 2>/dev/null || return 1
    sleep 0.02
  done
  t_up=$(($(ms) - t0))
}

# checkpoint DIR [--kill]: sets ck_line (the checkpoint line or the error), ck_rc
checkpoint() {
  local dir=$1
  shift
  ck_line=$(timeout -k 5 300 "$GHOST" checkpoint "$job" --dir "$dir/ck" "$@" 2>&1)
  ck_rc=$?
  echo "  checkpoint $* job $job: $ck_line" >>"$log"
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }

# compare CASE DIR: outcome word
compare() {
  "det_$1" "$2" >"$2/det.txt" 2>/dev/null
  if [ ! -s "$2/det.txt" ]; then
    echo "no-output"
  elif cmp -s "$root/$1/native/det.txt" "$2/det.txt"; then
    echo same
  else
    echo DIFFERENT
  fi
}

# end_run CASE DIR T0: waits for the job started last; sets rc, t (ms since T0) and o (its outcome)
end_run() {
  wait "$gpid"
  rc=$?
  gpid=""
  t=$(($(ms) - $3))
  o=$(compare "$1" "$2")
  [ $rc = 0 ] || o="FAILED (exit $rc)"
}

row() { echo "| $* |" >>"$out"; }

[ -s "$out" ] || {
  cpu=$(sed -n 's/^model name[ \t]*: //p' /proc/cpuinfo | head -1)
  fsgs=no
  grep -qw fsgsbase /proc/cpuinfo && [ "$(($(LD_SHOW_AUXV=1 /bin/true | sed -n 's/^AT_HWCAP2: *//p' | head -1) & 2))" != 0 ] 2>/dev/null && fsgs=yes
  {
    echo "Machine: $cpu, $(nproc) CPUs, kernel $(uname -r), FSGSBASE in use: $fsgs, load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ghost: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)"
    echo
    echo "| app | ranks | MPI | run | outcome | image bytes | checkpoint s | restart s | wall s | notes |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
  } >"$out"
}

for c in "${cases[@]}"; do
  declare -F "cmd_$c" >/dev/null || { echo "run_apps: no case $c" >&2; continue; }
  fl=$(flavour_of "$c")
  np=$(np_of "$c")
  if [ "$fl" = openmpi ]; then mpirun=mpirun.openmpi; else mpirun=mpirun.mpich; fi
  read -r -a cmd <<<"$(cmd_$c)"
  echo "== $c ($fl, np $np): ${cmd[*]}" | tee -a "$log" >&2
  base=$root/$c
  mkdir -p "$base"

  # native
  d=$base/native
  mkdir -p "$d"
  "setup_$c" "$d"
  t0=$(ms)
  (cd "$d" && timeout -k 5 "$timeout_s" $mpirun -np "$np" "${cmd[@]}" >stdout 2>native.err)
  rc=$?
  tn=$(($(ms) - t0))
  "det_$c" "$d" >"$d/det.txt" 2>/dev/null
  if [ $rc != 0 ] || [ ! -s "$d/det.txt" ]; then
    row "$c | $np | $fl | native | FAILED (exit $rc) | | | | $((tn / 1000)) | the native run fails here"
    continue
  fi
  row "$c | $np | $fl | native | reference ($(wc -l <"$d/det.txt") lines) | | | | $((tn / 1000)).$(((tn % 1000) / 100)) |"

  # ghostrun, no checkpoint
  d=$base/ghost
  mkdir -p "$d"
  "setup_$c" "$d"
  t0=$(ms)
  start "$d" run "$GHOSTRUN" --ckpt-dir "$d/ck" -np "$np" "${cmd[@]}"
  end_run "$c" "$d" "$t0"
  tg=$t
  row "$c | $np | $fl | ghostrun | $o | | | | $((tg / 1000)).$(((tg % 1000) / 100)) | $(grep "^ghost" "$d/run.err" | grep -v "^ghostrun: job [0-9]*$" | tail -1 | cut -c1-120)"

  # a checkpoint the job goes on from
  d=$base/goon
  mkdir -p "$d"
  "setup_$c" "$d"
  t0=$(ms)
  notes=""
  if start "$d" run "$GHOSTRUN" --ckpt-dir "$d/ck" -np "$np" "${cmd[@]}"; then
    sleep "$(awk -v t="$tg" 'BEGIN { printf "%.2f", t * 0.3 / 1000 }')"
    checkpoint "$d"
    [ $ck_rc = 0 ] || notes="checkpoint: $ck_line"
  fi
  end_run "$c" "$d" "$t0"
  [ $ck_rc = 0 ] || o="$o, refused"
  row "$c | $np | $fl | checkpoint, goes on | $o | $(field bytes "$ck_line") | $(field total_s "$ck_line") | | $((t / 1000)).$(((t % 1000) / 100)) | $(echo "$notes" | cut -c1-200)"

  # checkpoint --kill, restart, checkpoint --kill the restarted job, restart again
  d=$base/restart
  mkdir -p "$d"
  "setup_$c" "$d"
  t0=$(ms)
  notes="" bytes="" cks="" rss="" o=""
  start "$d" seg1 "$GHOSTRUN" --ckpt-dir "$d/ck" -np "$np" "${cmd[@]}"
  for seg in 2 3; do
    sleep "$(awk -v t="$tg" 'BEGIN { printf "%.2f", t * 0.25 / 1000 }')"
    checkpoint "$d" --kill
    if [ $ck_rc != 0 ]; then
      notes="$notes checkpoint $((seg - 1)): $ck_line;"
      break
    fi
    wait "$gpid"
    rc=$?
    gpid=""
    [ $rc = 75 ] || { notes="$notes killed job exited $rc;"; break; }
    bytes="$bytes$(field bytes "$ck_line") "
    cks="$cks$(field total_s "$ck_line") "
    if ! start "$d" seg$seg "$GHOST" restart "$d/ck"; then
      notes="$notes restart $((seg - 1)) ended at once: $(tail -2 "$d/seg$seg.err" | tr '\n' ' ');"
      break
    fi
    rss="$rss$(awk -v t="$t_up" 'BEGIN { printf "%.2f", t / 1000 }') "
  done
  if [ -n "$gpid" ]; then
    wait "$gpid"
    rc=$?
    gpid=""
  fi
  t=$(($(ms) - t0))
  o=$(compare "$c" "$d")
  [ "$rc" = 0 ] || o="FAILED (exit $rc)"
  [ -z "$notes" ] || notes="$notes $(tail -3 "$d"/seg*.err 2>/dev/null | grep -v '^ghostrun\|^==>\|^$' | tail -2 | tr '\n' ' ')"
  row "$c | $np | $fl | ckpt --kill, restart, ckpt --kill, restart | $o | $bytes | $cks | $rss | $((t / 1000)).$(((t % 1000) / 100)) | $(echo "$notes" | cut -c1-300)"

  # live migrations on this host: rank 1 at ~15% (every rank relaunched, images over UCX), rank 0
  # at ~35% (--keep: rank 1 keeps its process), rank 1 at ~55% through the job's directory
  d=$base/migrate
  mkdir -p "$d"
  "setup_$c" "$d"
  t0=$(ms)
  notes="" bytes="" downs=""
  if start "$d" run "$GHOSTRUN" --ckpt-dir "$d/ck" -np "$np" "${cmd[@]}"; then
    for at_how in "15 1" "35 0 --keep" "55 1 --via fs"; do
      read -r -a m <<<"$at_how"
      how=${at_how#* }
      # (at that share of the plain ghostrun's time from the start: a move's pre-copy and
      # downtime lengthen the run)
      sleep "$(awk -v t="$tg" -v p="${m[0]}" -v now="$(($(ms) - t0))" \
        'BEGIN { s = (t * p / 100 - now) / 1000; printf "%.2f", (s > 0 ? s : 0) }')"
      m=("${m[@]:1}")
      mig_line=$(timeout -k 5 300 "$GHOST" migrate "$job" --rank "${m[@]:0:1}" --to "$(hostname)" "${m[@]:1}" 2>&1)
      mig_rc=$?
      echo "  migrate --rank $how job $job: $mig_line" >>"$log"
      if [ $mig_rc != 0 ]; then
        notes="$notes migrate --rank $how: $mig_line;"
        kill -0 "$gpid" 2>/dev/null || break
        continue
      fi
      bytes="$bytes$(field bytes "$mig_line") "
      downs="$downs$(field downtime_s "$mig_line") "
    done
  fi
  end_run "$c" "$d" "$t0"
  row "$c | $np | $fl | migrate rank 1, rank 0 --keep, rank 1 --via fs | $o | $bytes | | $downs | $((t / 1000)).$(((t % 1000) / 100)) | $(echo "$notes" | cut -c1-300)"
done
echo "run_apps: done; table in $out, details in $log and $root" >&2
cat "$out"
