"""
How fast is ``costmeter report`` next to DuckDB and jq on the same log?

Generates a log of N lines (realistic ``costmeter.call`` events, as in the README, with 1 % of
application noise; see ``report_memory.generate``), then times, interleaved and in fresh processes
(start-up counts), the same aggregation per model — calls, token sums, exact cost sum:

* ``costmeter report FILE --format json`` (the default engine: msgspec when installed, two
  forked processes on a large plain file);
* ``costmeter report FILE --format json --engine duckdb`` (the exact DuckDB engine, the
  ``duckdb`` extra), checked to print the same report byte for byte;
* DuckDB's ``read_ndjson`` with ``DECIMAL(38,18)`` cost sums (optional: ``pip install
  'costmeter[bench]'``; skipped with a message when missing), in a fresh Python process;
* ``jq -n 'reduce inputs ...'`` (streaming; binary floats), skipped when ``jq`` is absent;
* with ``--fallback``, costmeter's standard-library decoder too (what runs without msgspec).

Prints the median wall time of each, the spread (min-max), and the ratio costmeter / DuckDB
against the targets of issue 15 (≤ 1.5x at 1M lines, ≤ 2x at 300k lines). costmeter's and
DuckDB's call counts and cost sums are checked to agree exactly.

    .venv/bin/python bench/report_speed.py [--lines 300000] [--runs 3] [--fallback] [--no-jq]
                                           [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from report_memory import generate

TARGETS = {300_000: 2.0, 1_000_000: 1.5}

DUCKDB_SCRIPT = """
import sys, duckdb
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')
rows = con.execute('''
SELECT model, count(*) AS calls, sum(input_tokens), sum(cached_input_tokens),
       sum(output_tokens), sum(reasoning_tokens), sum(cost_usd) AS cost
FROM read_ndjson(?, columns={
    'event': 'VARCHAR', 'model': 'VARCHAR', 'input_tokens': 'BIGINT',
    'cached_input_tokens': 'BIGINT', 'output_tokens': 'BIGINT', 'reasoning_tokens': 'BIGINT',
    'cost_usd': 'DECIMAL(38,18)'}, ignore_errors=true)
WHERE event = 'costmeter.call' GROUP BY model ORDER BY cost DESC
''', [sys.argv[1]]).fetchall()
print(sum(r[1] for r in rows), sum(r[6] for r in rows))
"""

JQ_PROGRAM = (
    'reduce (inputs | select(.event == "costmeter.call")) as $e ({}; '
    ".[$e.model].calls += 1 | .[$e.model].input += $e.input_tokens "
    "| .[$e.model].cached += $e.cached_input_tokens | .[$e.model].output += $e.output_tokens "
    "| .[$e.model].reasoning += $e.reasoning_tokens | .[$e.model].cost += $e.cost_usd)"
)

FALLBACK_SCRIPT = """
import sys
from costmeter import _report
_report.write_json(_report.build_report([sys.argv[1]], "model", None, None, engine="json"),
                   sys.stdout)
"""


def _duckdb_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import duckdb"], check=False)
    return probe.returncode == 0


def _run(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the child's threads and processes) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fallback", action="store_true", help="also time the json decoder")
    parser.add_argument("--keep", type=Path, help="generate into (and reuse) this directory")
    parser.add_argument("--no-jq", action="store_true", help="skip jq (slow at 1M lines)")
    args = parser.parse_args()

    commands: dict[str, list[str]] = {}
    tmp = tempfile.TemporaryDirectory()
    folder = args.keep or Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"costs-{args.lines}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.lines)
        print(f"generated {args.lines:,} lines in {time.perf_counter() - started:.1f} s")
    size_mb = path.stat().st_size / 1e6
    commands["costmeter"] = [sys.executable, "-m", "costmeter", "report", str(path), "--format", "json"]  # fmt: skip
    if _duckdb_available():
        commands["costmeter --engine duckdb"] = [*commands["costmeter"], "--engine", "duckdb"]
    if _duckdb_available():
        commands["duckdb"] = [sys.executable, "-c", DUCKDB_SCRIPT, str(path)]
    else:
        print("duckdb: skipped (not installed: pip install 'costmeter[bench]')")
    jq = None if args.no_jq else shutil.which("jq")
    if jq:
        commands["jq"] = [jq, "-n", "-c", JQ_PROGRAM, str(path)]
    else:
        print("jq: skipped" + ("" if args.no_jq else " (not on PATH)"))
    if args.fallback:
        commands["costmeter (json decoder)"] = [sys.executable, "-c", FALLBACK_SCRIPT, str(path)]

    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    for _ in range(args.runs):
        for name, command in commands.items():  # interleaved: drift hits every tool alike
            elapsed, cpu, outputs[name] = _run(command)
            times[name].append(elapsed)
            cpus[name].append(cpu)

    total = json.loads(outputs["costmeter"])["total"]
    if "costmeter --engine duckdb" in outputs:
        same = outputs["costmeter"] == outputs["costmeter --engine duckdb"]
        print(
            f"costmeter's DuckDB and Python engines print the same report: {'yes' if same else 'NO'}"
        )
    if "duckdb" in outputs:
        calls, cost = outputs["duckdb"].split()[-2:]
        agree = int(calls) == total["calls"] and Decimal(cost) == Decimal(total["cost_usd"])
        print(f"costmeter and DuckDB agree on calls and exact cost: {'yes' if agree else 'NO'}")
    print(f"{args.lines:,} lines, {size_mb:.0f} MB, {args.runs} runs each (median, min-max):")
    base = statistics.median(times["costmeter"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"  {name:<26} {median:7.2f} s  ({min(samples):.2f}-{max(samples):.2f})"
            f"  {args.lines / median:>10,.0f} lines/s  costmeter/this {base / median:5.2f}x"
            f"  CPU {statistics.median(cpus[name]):6.2f} s"
        )
    if "duckdb" in times:
        ratios = sorted(c / d for c, d in zip(times["costmeter"], times["duckdb"], strict=True))
        ratio = base / statistics.median(times["duckdb"])
        target = TARGETS.get(args.lines)
        verdict = "" if target is None else (" PASS" if ratio <= target else " FAIL")
        goal = "" if target is None else f" (target <= {target}x)"
        cpu_ratio = statistics.median(cpus["costmeter"]) / statistics.median(cpus["duckdb"])
        print(
            f"costmeter / DuckDB: {ratio:.2f}x{goal}{verdict}; "
            f"per-run pairs {', '.join(f'{r:.2f}' for r in ratios)}; CPU time {cpu_ratio:.2f}x"
        )
        if "costmeter --engine duckdb" in times:
            duck = statistics.median(times["costmeter --engine duckdb"])
            duck_cpu = statistics.median(cpus["costmeter --engine duckdb"])
            print(
                f"costmeter --engine duckdb / DuckDB: {duck / statistics.median(times['duckdb']):.2f}x"
                f"; CPU time {duck_cpu / statistics.median(cpus['duckdb']):.2f}x"
            )
    tmp.cleanup()


if __name__ == "__main__":
    main()
