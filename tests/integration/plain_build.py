#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A user's plain build: `cmake -DCMAKE_BUILD_TYPE=Release` must not make warnings errors (a newer
compiler's new warning would break it), and the test programs must compile warning-free at -O3
anyway (GCC 12 warned falsely in cxx_exceptions_streams.cpp, which broke the -Werror build).

Configures a scratch Release tree (no build), checks that no compile command has -Werror, then
compiles every source of tests/programs with its Release command plus -Werror.
Exit status: 0 pass, 1 fail.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="the project's source directory")
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    build = os.path.join(a.workdir, "release")
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    r = subprocess.run(["cmake", "-S", a.source, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if r.returncode != 0:
        print(f"FAIL plain_build: cmake -DCMAKE_BUILD_TYPE=Release failed:\n{r.stdout.decode()[-2000:]}")
        return 1
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    werror = [c["file"] for c in commands if "-Werror" in shlex.split(c["command"])]
    if werror:
        print(f"FAIL plain_build: a plain Release build compiles {len(werror)} files with -Werror, e.g. {werror[0]}")
        return 1
    programs = os.path.join(os.path.abspath(a.source), "tests", "programs") + os.sep
    failed = 0
    checked = 0
    for c in commands:
        if not c["file"].startswith(programs):
            continue
        argv = shlex.split(c["command"])
        argv[argv.index("-o") + 1] = os.devnull
        checked += 1
        r = subprocess.run(argv + ["-Werror"], cwd=c["directory"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        if r.returncode != 0:
            failed += 1
            print(f"warnings compiling {c['file']} at Release flags:\n{r.stdout.decode()[-3000:]}")
    shutil.rmtree(build, ignore_errors=True)
    if failed or not checked:
        print(f"FAIL plain_build: {failed} of {checked} test programs do not compile warning-free at -O3")
        return 1
    print(f"PASS plain_build ({checked} test programs warning-free at Release flags)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
