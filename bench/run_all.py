"""
Run every performance benchmark in turn (each in its own interpreter) and summarise the verdicts.

    .venv/bin/python bench/run_all.py [--quick] [--strict]

``--quick`` and ``--strict`` are passed to each benchmark. At the end every line that carries a
target (ratio, target, PASS/FAIL) is repeated in one table, then the peers table. Exit status: 1
when a benchmark crashed, or (with ``--strict``) missed a target; otherwise 0. ``peers.py`` is
skipped with a message when langfuse/logfire are not installed (bench/requirements-peers.txt).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = (
    "import_time.py",
    "first_call.py",
    "overhead.py",
    "estimator_throughput.py",
    "memory.py",
    "peers.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="BENCH", help="e.g. --skip memory.py"
    )
    args = parser.parse_args()
    flags = [flag for flag, on in (("--quick", args.quick), ("--strict", args.strict)) if on]
    verdicts: list[str] = []
    targets: list[str] = []
    peers: list[str] = []
    status = 0
    for bench in (b for b in BENCHES if b not in args.skip):
        command = [sys.executable, str(HERE / bench), *flags]
        print(f"$ {' '.join([Path(sys.executable).name, 'bench/' + bench, *flags])}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        print(done.stdout, end="")
        if done.returncode:
            print(done.stderr[-2000:], end="")
            status = 1
        elapsed = time.perf_counter() - started
        lines = [line.strip() for line in done.stdout.splitlines()]
        targets += [f"{bench:<24} {line}" for line in lines if "target <=" in line]
        if bench == "peers.py":
            peers = done.stdout.splitlines()[1:]
        passed = sum("PASS" in line for line in lines)
        failed = sum("FAIL" in line for line in lines)
        verdicts.append(
            f"  {bench:<26} {elapsed:6.0f} s  {passed} pass  {failed} fail  exit {done.returncode}"
        )
        print(flush=True)
    print("summary:")
    print("\n".join(verdicts))
    print("\ntargets:")
    print("\n".join(targets))
    if peers:
        print("\npeers (variant / bare, medians):")
        print("\n".join(peers))
    return status


if __name__ == "__main__":
    sys.exit(main())
