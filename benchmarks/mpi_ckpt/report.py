#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Joins the section reports of run.py and dmtcp.py (results/<section>.md) into results/report.md.

    benchmarks/mpi_ckpt/report.py [RESULTS_DIR]"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ["quiesce", "io", "dmtcp", "interval"]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
    parts = ["# Job checkpoints: speed (issue 10)", "",
             "Produced by `benchmarks/mpi_ckpt/run.py` and `dmtcp.py` (see ../README.md). The machine "
             "is a shared 2-core VM: other helpers' builds and MPI tests ran at the same time, so "
             "absolute figures are noisy (the load average is given per section); ratios come from "
             "measurements alternated within one run.", ""]
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        parts += [open(notes).read().rstrip(), ""]
    for s in SECTIONS:
        p = os.path.join(out, f"{s}.md")
        if os.path.exists(p):
            parts += [open(p).read().rstrip(), ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
