#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Native vs ghost OSU-style comparison in one run: rounds alternate native and ghost (order flipped
every round), medians per (test, size), checked against the issue's targets:
  8-byte ping-pong latency <= native + 30 ns;  >= 64 KiB latency and bandwidth within 1% of native.
Usage: run_bench.py --build BUILD_DIR --flavour openmpi|mpich [--rounds 7] [--out FILE] [-- MPIRUN ARGS]
Exit status 0 if every target holds."""
import argparse
import os
import statistics
import subprocess
import sys
import time


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit('benchmark run failed (%d): %s\n%s' % (p.returncode, ' '.join(cmd), p.stderr[-2000:]))
    vals = {}
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) == 3:
            vals[(f[0], int(f[1]))] = float(f[2])
    return vals


def fs_path_note(build):
    """Which FS switch the ghost column used: the layer takes wrfsbase when AT_HWCAP2 has FSGSBASE,
    arch_prctl otherwise; with fs_probe's measured cost of the mechanisms on this machine."""
    aux = subprocess.run(['/bin/true'], env={'LD_SHOW_AUXV': '1'}, capture_output=True, text=True).stdout
    hwcap2 = 0
    for line in aux.splitlines():
        if line.startswith('AT_HWCAP2:'):
            hwcap2 = int(line.split()[1], 16)
    note = 'AT_HWCAP2 %#x: ghost switches FS with %s' % (
        hwcap2, 'wrfsbase' if hwcap2 & 2 else 'arch_prctl (no user-space FSGSBASE)')
    probe = os.path.join(build, 'mpi-layer/bench/fs_probe')
    if os.access(probe, os.X_OK):
        out = subprocess.run([probe], capture_output=True, text=True).stdout.splitlines()
        note += ''.join('\n#   ' + l for l in out[1:])
    return note


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', required=True)
    ap.add_argument('--flavour', default='openmpi')
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--np', type=int, default=2)
    ap.add_argument('--out')
    ap.add_argument('--what', default='all')
    ap.add_argument('--aa', action='store_true',
                    help='A/A calibration: run native in both columns to measure the noise floor')
    ap.add_argument('--bind', action='store_true', help='bind ranks to cores (only on a quiet machine)')
    ap.add_argument('--both', action='store_true',
                    help='a third column: ghost with GHOST_MPI_FORCE_ARCH_PRCTL=1 (the path of a '
                         'kernel without user-space FSGSBASE); target: 8-byte latency within 2x native')
    ap.add_argument('rest', nargs='*')
    a = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
    prog = os.path.join(a.build, 'mpi-layer/bench/osu_like_' + a.flavour)
    ghostrun = os.path.join(a.build, 'launcher/ghostrun/ghostrun')
    mpirun = 'mpirun.openmpi' if a.flavour == 'openmpi' else 'mpirun.mpich'
    bind = ['--bind-to', 'core'] if a.flavour == 'openmpi' else ['-bind-to', 'core']
    bind = bind if a.bind else []
    launch = {'native': [mpirun], 'ghost': [mpirun] if a.aa else [ghostrun], 'ghost_ap': [ghostrun]}
    envs = {'native': env, 'ghost': env, 'ghost_ap': dict(env, GHOST_MPI_FORCE_ARCH_PRCTL='1')}
    modes = ['native', 'ghost'] + (['ghost_ap'] if a.both else [])
    samples = {m: [] for m in modes}
    whats = a.what.split(',')
    for r in range(a.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate: each mode leads in turn
        if r % 2: order.reverse()
        for which in order:
            vals = {}
            for w in whats:
                vals.update(run(launch[which] + ['-np', str(a.np)] + bind + a.rest + [prog, w],
                                envs[which]))
            if a.what == 'all' or 'calls' in whats:  # per-call costs with one rank
                vals.update(run(launch[which] + ['-np', '1'] + a.rest + [prog, 'calls'], envs[which]))
            samples[which].append(vals)
    keys = sorted(samples['native'][0].keys(), key=lambda k: (k[0], k[1]))
    lines = []
    ok = True
    lines.append('# ghost mpi-layer benchmark%s, %s, %d ranks, %d alternating rounds, %s' %
                 (' (A/A CALIBRATION: native in both columns)' if a.aa else '', a.flavour, a.np, a.rounds,
                  time.strftime('%Y-%m-%d %H:%M:%S')))
    lines.append('# extra mpirun args: %s; figures are best-of-batches per run, median over runs' %
                 (' '.join(a.rest) or '(none)'))
    try:
        lines.append('# load average at start: %s' % open('/proc/loadavg').read().split(' ')[0])
    except OSError:
        pass
    lines.append('# %s' % fs_path_note(a.build))
    if a.both:
        lines.append('# ghost: the automatic path (above); ghost-ap: GHOST_MPI_FORCE_ARCH_PRCTL=1 (arch_prctl)')
        lines.append('%-16s %9s %14s %14s %8s %14s %8s  %s' % ('test', 'bytes', 'native', 'ghost', 'ratio',
                                                                'ghost-ap', 'ratio', 'target'))
        for k in keys:
            n, g, p = (statistics.median(s[k] for s in samples[m] if k in s) for m in modes)
            test, size = k
            unit = 'MB' if test == 'bandwidth' else 'ns'
            target = ''
            if test == 'latency' and size == 8:
                good = g - n <= 30.0 and p <= 2 * n
                target = 'ghost <= native + 30 ns, ghost-ap <= 2x native: %s' % ('PASS' if good else 'FAIL')
                ok &= good
            lines.append('%-16s %9d %11.1f %-2s %11.1f %-2s %8.3f %11.1f %-2s %8.3f  %s' %
                         (test, size, n, unit, g, unit, g / n if n else 0, p, unit, p / n if n else 0, target))
        lines.append('# overall: %s' % ('PASS' if ok else 'FAIL'))
        text = '\n'.join(lines) + '\n'
        sys.stdout.write(text)
        if a.out:
            with open(a.out, 'a') as f:
                f.write(text + '\n')
        return 0 if ok else 1
    lines.append('%-10s %9s %14s %14s %10s %8s  %s' % ('test', 'bytes', 'native', 'ghost', 'delta', 'ratio', 'target'))
    for k in keys:
        n = statistics.median(s[k] for s in samples['native'])
        g = statistics.median(s[k] for s in samples['ghost'])
        test, size = k
        unit = 'MB/s' if test == 'bandwidth' else 'ns'
        target = 'per-call overhead' if test.startswith('calls:') else ''
        if test == 'latency' and size == 8:
            good = g - n <= 30.0
            target = 'ghost <= native + 30 ns: %s' % ('PASS' if good else 'FAIL')
            ok &= good
        elif test == 'latency' and size >= 65536:
            good = g <= n * 1.01
            target = 'within 1%%: %s' % ('PASS' if good else 'FAIL')
            ok &= good
        elif test == 'bandwidth' and size >= 65536:
            good = g >= n * 0.99
            target = 'within 1%%: %s' % ('PASS' if good else 'FAIL')
            ok &= good
        lines.append('%-10s %9d %11.1f %-2s %11.1f %-2s %+10.1f %8.4f  %s' %
                     (test, size, n, unit[:2], g, unit[:2], g - n, g / n if n else 0, target))
    lines.append('# overall: %s' % ('PASS' if ok else 'FAIL'))
    text = '\n'.join(lines) + '\n'
    sys.stdout.write(text)
    if a.out:
        with open(a.out, 'a') as f:
            f.write(text + '\n')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
