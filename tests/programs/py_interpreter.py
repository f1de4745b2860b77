#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A real interpreter under ghost: a deterministic, self-checking computation in CPython.

Every step advances a big-integer Fibonacci pair, a SHA-256 chain, a dict that grows and shrinks,
a long-lived generator, a float accumulation and a sort. Every 50 steps the Fibonacci pair is
checked against fast doubling and the dict against an independently kept count and sum. A second
Python thread computes the same SHA-256 chain on its own (sleeping now and then, so that it is
often blocked in a system call); both chains must agree at the end. Output: one line every tenth
of the run and PASS/FAIL, flushed line by line.
"""
import argparse
import hashlib
import math
import os
import sys
import threading
import time

NAME = "py_interpreter"


def fail(why):
    sys.stdout.write(f"FAIL {NAME}: {why}\n")
    sys.stdout.flush()
    sys.stderr.write(f"FAIL {NAME}: {why}\n")
    sys.exit(1)


def gate():
    """Under ckpt_harness.py: waits for its gate file before the PASS line (common.h's t_gate)."""
    path = os.environ.get("GHOST_TEST_GATE")
    if not path or os.path.exists(path):
        return
    open(path + ".reached", "w").close()
    for _ in range(60000):
        if os.path.exists(path):
            return
        time.sleep(0.01)
    fail(f"the harness's gate {path} did not open within 600 s")


def fib_pair(n):
    """(F(n), F(n+1)) by fast doubling."""
    if n == 0:
        return 0, 1
    a, b = fib_pair(n >> 1)
    c = a * (2 * b - a)
    d = a * a + b * b
    return (d, c + d) if n & 1 else (c, d)


def lcg(seed):
    x = seed
    while True:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield x >> 11


def chain_step(h, i):
    return hashlib.sha256(h + i.to_bytes(8, "little")).digest()


class Worker(threading.Thread):
    def __init__(self, steps):
        super().__init__(name="chain")
        self.steps = steps
        self.result = None
        self.error = None

    def run(self):
        import time

        try:
            h = b"ghost"
            for i in range(self.steps):
                h = chain_step(h, i)
                if i % 200 == 0:
                    time.sleep(0.002)  # blocked in a system call now and then
            self.result = h
        except Exception as e:  # reported by the main thread
            self.error = repr(e)


class Tally:
    __slots__ = ("count", "total")

    def __init__(self):
        self.count = 0
        self.total = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40000)
    args = ap.parse_args()
    steps = args.steps
    if steps < 10:
        fail("--steps must be >= 10")
    print(f"{NAME} steps={steps}", flush=True)

    worker = Worker(steps)
    worker.start()

    a, b = 0, 1  # F(step), F(step+1)
    h = b"ghost"
    d = {}
    tally = Tally()
    gen = lcg(2024)
    facc = 0.0
    sorted_acc = 0
    for step in range(steps):
        a, b = b, a + b
        h = chain_step(h, step)

        key = f"k{next(gen) % 5000}"
        val = next(gen) % 1000003
        if key in d:
            tally.total -= d.pop(key)
            tally.count -= 1
        else:
            d[key] = val
            tally.total += val
            tally.count += 1

        facc += math.sin(step * 0.001) * math.sqrt(step + 1.0)
        xs = sorted((next(gen) % 100000 for _ in range(200)), reverse=(step % 2 == 1))
        if any(xs[i] < xs[i + 1] if step % 2 else xs[i] > xs[i + 1] for i in range(199)):
            fail(f"sort order broken at step {step}")
        sorted_acc = (sorted_acc * 31 + xs[0] + xs[-1]) % (1 << 61)

        if step % 50 == 0:
            fa, fb = fib_pair(step + 1)
            if (fa, fb) != (a, b):
                fail(f"Fibonacci pair wrong at step {step}")
            if len(d) != tally.count or sum(d.values()) != tally.total:
                fail(f"dict invariant broken at step {step}")
        if (step + 1) % (steps // 10) == 0:
            print(
                f"step {step + 1} fib_bits={a.bit_length()} fib_mod={a % 1000000007} "
                f"sha={h.hex()[:16]} dict={len(d)}/{tally.total} float={facc!r} sort={sorted_acc}",
                flush=True,
            )

    worker.join(timeout=600)
    if worker.is_alive():
        fail("chain thread did not finish")
    if worker.error:
        fail(f"chain thread failed: {worker.error}")
    if worker.result != h:
        fail("the two SHA-256 chains differ")
    print(f"chains agree sha={h.hex()}", flush=True)
    gate()
    print(f"PASS {NAME}", flush=True)


if __name__ == "__main__":
    main()
