#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Image streaming over UCX (resources/ucx) against `ucx_perftest -t tag_bw` on the same transport and
message size, measured alternately in one run (issue 11: the stream should reach >= 80% of it).

For each repetition, transport and message size: ucx_perftest tag_bw (server and client on this
host, --volume-mib worth of messages), then image_ucx_stream (a synthetic image of --volume-mib MiB of
random pages in 256 KiB records, sent through the ucx sink to a receiver that verifies every record
and copies it into a memfd; with --null also a receiver that verifies and drops it), whose piece size
is the message size (GHOST_UCX_CHUNK). Transports (loopback): tcp (UCX_TLS=tcp, UCX_NET_DEVICES=lo)
and shm (ucx_perftest: UCX_TLS=shm,self; the stream: UCX_TLS=shm,self,tcp, since its connection is
made by UCX's TCP connection manager; the data goes over shared memory).

    benchmarks/image_ucx/run.py [--build build] [--reps 5] [--sizes 1,4] [--volume-mib 512] [--null]
                                [--transports tcp,shm,veth]

Writes benchmarks/image_ucx/results/{results.csv,report.md} with the machine noted. Needs
ucx_perftest (ucx-utils)."""

import argparse
import csv
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "mpi_ckpt"))
from common import write_report  # noqa: E402

TRANSPORTS = {
    # name: (perftest env, stream env)
    "tcp": ({"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"}, {"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"}),
    "shm": ({"UCX_TLS": "shm,self"}, {"UCX_TLS": "shm,self,tcp", "UCX_NET_DEVICES": "lo"}),
    # between two emulated hosts (tests/hosts: a network namespace each, veth to a bridge)
    "veth": ({"UCX_TLS": "tcp", "UCX_NET_DEVICES": "eth0"}, {"UCX_TLS": "tcp", "UCX_NET_DEVICES": "eth0"}),
}


class Hosts:
    """Two emulated hosts for the veth rows: the receiving side (perftest's server, the stream's
    receiver) on h1, the sending side on h2."""

    def __init__(self):
        self.dir = subprocess.run(["bash", os.path.join(ROOT, "tests", "hosts", "hosts.sh"), "up", "2"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        hid = open(os.path.join(self.dir, "id")).read().strip()
        self.ns = [f"ghost-{hid}-h1", f"ghost-{hid}-h2"]
        self.ips = open(os.path.join(self.dir, "hostfile")).read().split()

    def on(self, k):
        """Command prefix that runs in host k (0 or 1)."""
        return ["ip", "netns", "exec", self.ns[k]]

    def down(self):
        subprocess.run(["bash", os.path.join(ROOT, "tests", "hosts", "hosts.sh"), "down", self.dir])


def die(msg):
    print(f"image_ucx: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def perftest(env, size, volume_mib, hosts=None):
    """GB/s (10^9 bytes/s) of ucx_perftest tag_bw, overall, or None. With `hosts`: the server on
    its first host, the client on its second."""
    iters = max(200, (volume_mib << 20) // size)
    e = dict(os.environ, **env)
    for attempt in range(3):
        port = free_port()
        common = ["-t", "tag_bw", "-s", str(size), "-n", str(iters), "-p", str(port)]
        server = subprocess.Popen([*(hosts.on(0) if hosts else []), "ucx_perftest", *common], env=e,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            out = subprocess.run([*(hosts.on(1) if hosts else []), "ucx_perftest",
                                  hosts.ips[0] if hosts else "127.0.0.1", *common],
                                 env=e, capture_output=True, text=True, timeout=300).stdout
        except subprocess.TimeoutExpired:
            out = ""
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        m = re.search(r"^Final:\s+(.*)$", out, re.M)
        if m:
            cols = m.group(1).split()
            # iterations, latency 50%, avg, overall (usec), bandwidth avg, overall (MB/s = 2^20 B/s), msg rate
            return float(cols[5]) * (1 << 20) / 1e9
    return None


def stream(build, env, size, volume_mib, out, hosts=None):
    e = dict(os.environ, **env, GHOST_UCX_CHUNK=str(size))
    exe = os.path.join(build, "benchmarks", "image_ucx", "image_ucx_stream")
    where = []
    if hosts:
        where = ["--receiver-netns", f"/var/run/netns/{hosts.ns[0]}", "--receiver-addr", hosts.ips[0]]
    try:
        p = subprocess.run([*(hosts.on(1) if hosts else []), exe, "--mib", str(volume_mib), "--out", out, *where],
                           env=e, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"gb_per_s=([\d.]+)", p.stdout)
    if p.returncode != 0 or not m:
        print(f"  stream failed ({p.returncode}): {p.stderr.strip()[:300]}", flush=True)
        return None
    return float(m.group(1))


def machine():
    model = "?"
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    ucx = subprocess.run(["ucx_info", "-v"], capture_output=True, text=True).stdout
    ver = re.search(r"(?:Library version:|# Version) (\S+)", ucx)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "fsgsbase": "yes" if " fsgsbase" in flags else "no",
        "kernel": platform.release(),
        "ucx": ver.group(1) if ver else "?",
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sizes", default="1,4", help="message (piece) sizes in MiB")
    ap.add_argument("--volume-mib", type=int, default=512)
    ap.add_argument("--transports", default="tcp,shm,veth")
    ap.add_argument("--null", action="store_true", help="also a receiver that drops the verified image")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    if not shutil.which("ucx_perftest"):
        die("ucx_perftest not found (apt-get install ucx-utils)")
    m0 = machine()
    sizes = [int(float(s) * (1 << 20)) for s in a.sizes.split(",")]
    kinds = ["mem"] + (["null"] if a.null else [])
    rows = []
    hosts = Hosts() if "veth" in a.transports.split(",") else None
    try:
        measure(a, sizes, kinds, rows, hosts)
    finally:
        if hosts:
            hosts.down()
    report(a, m0, sizes, rows)


def measure(a, sizes, kinds, rows, hosts):
    for rep in range(a.reps):
        for t in a.transports.split(","):
            penv, senv = TRANSPORTS[t]
            for size in sizes:
                on = hosts if t == "veth" else None
                pt = perftest(penv, size, a.volume_mib, on)
                rows.append({"rep": rep, "transport": t, "size": size, "what": "ucx_perftest", "gb_per_s": pt})
                line = f"rep {rep} {t:4} {size >> 20} MiB: perftest {pt if pt else float('nan'):.3f}"
                for k in kinds:
                    st = stream(a.build, senv, size, a.volume_mib, k, on)
                    rows.append({"rep": rep, "transport": t, "size": size, "what": f"stream_{k}", "gb_per_s": st})
                    line += f"  stream({k}) {st if st else float('nan'):.3f}"
                print(line + " GB/s", flush=True)


def report(a, m0, sizes, rows):
    m1 = machine()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rep", "transport", "size", "what", "gb_per_s"])
        w.writeheader()
        w.writerows(rows)
    lines = ["# Image streaming over UCX vs ucx_perftest tag_bw", "",
             f"Machine: {m0['cpu']}, {m0['cores']} cores, FSGSBASE {m0['fsgsbase']}, kernel {m0['kernel']}, "
             f"UCX {m0['ucx']}; load average at start {m0['load']}, at end {m1['load']}.", "",
             f"{a.reps} repetitions, alternating; {a.volume_mib} MiB per measurement; medians (GB/s = 10^9 B/s). "
             "ratio = stream / perftest, median of the per-repetition ratios.", "",
             "| transport | message | ucx_perftest | stream (memfd) | ratio |" + (" stream (drop) | ratio |" if a.null else ""),
             "|---|---|---|---|---|" + ("---|---|" if a.null else "")]
    for t in a.transports.split(","):
        for size in sizes:
            def vals(what):
                return [r["gb_per_s"] for r in rows if r["transport"] == t and r["size"] == size and r["what"] == what]

            def med(v):
                v = [x for x in v if x]
                return statistics.median(v) if v else float("nan")

            def ratio(what):
                rs = [s / p for s, p in zip(vals(what), vals("ucx_perftest")) if s and p]
                return statistics.median(rs) if rs else float("nan")

            row = f"| {t} | {size >> 20} MiB | {med(vals('ucx_perftest')):.3f} | {med(vals('stream_mem')):.3f} | " \
                  f"{ratio('stream_mem'):.2f} |"
            if a.null:
                row += f" {med(vals('stream_null')):.3f} | {ratio('stream_null'):.2f} |"
            lines.append(row)
    write_report(os.path.join(a.out, "report.md"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
