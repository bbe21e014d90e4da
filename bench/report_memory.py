"""
Does ``costmeter report`` read a log in constant memory?

Generates a 10,000-line and a 1,000,000-line costmeter log (realistic events, a little noise),
runs ``python -m costmeter report FILE --by day --format json`` on each in a subprocess, and prints
wall time and the child's peak RSS (``os.wait4`` rusage). The peak-memory ratio should be ~1.

    .venv/bin/python bench/report_memory.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPORT_ARGS = ("--by", "day", "--format", "json")
MODELS = ("gpt-5", "gpt-5-mini", "gpt-4.1-nano", "gpt-4o")


def generate(path: Path, lines: int, seed: int = 1) -> None:
    """Write *lines* log lines: costmeter.call events, every 100th line application noise."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(lines):
            if i % 100 == 99:
                out.write('{"event": "request handled", "path": "/v1/search", "status": 200}\n')
                continue
            model = MODELS[i % len(MODELS)]
            input_tokens = rng.randint(20, 40_000)
            cached = (input_tokens // 1024) * 1024 if i % 3 else 0
            output_tokens = rng.randint(1, 4000)
            event = {
                "timestamp": f"2025-06-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000000Z",
                "level": "info",
                "event": "costmeter.call",
                "api": "responses",
                "model": model,
                "response_model": f"{model}-2025-08-07",
                "response_id": f"resp_{i:012d}",
                "request_id": f"req_{i:012d}",
                "stream": bool(i % 2),
                "background": False,
                "service_tier": "default",
                "outcome": "ok",
                "error_type": None,
                "input_tokens": input_tokens,
                "cached_input_tokens": cached,
                "cache_write_input_tokens": 0,
                "output_tokens": output_tokens,
                "reasoning_tokens": output_tokens // 3,
                "web_search_calls": 0,
                "usage_source": "reported",
                "estimated_input_tokens": input_tokens + rng.randint(-40, 40),
                "estimated_cost_usd": 0.05,
                "cost_usd": rng.randint(1, 10**9) / 10**12,
                "input_cost_usd": 0.001,
                "cached_input_cost_usd": 0.0001,
                "cache_write_cost_usd": 0.0,
                "output_cost_usd": 0.002,
                "tool_cost_usd": 0.0,
                "price_source": "genai-prices",
                "priced_as": model,
                "price_status": "ok",
                "duration_ms": rng.randint(100, 9000),
                "tags": {"team": f"team-{i % 7}", "customer": f"c{i % 1000}"},
            }
            out.write(json.dumps(event) + "\n")


def run_report(path: Path) -> tuple[float, int, dict[str, object]]:
    """Run the report in a child process: (seconds, peak RSS in KiB, parsed JSON output)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "costmeter", "report", str(path), *REPORT_ARGS],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"report exited {proc.returncode}")
        out.seek(0)
        data = json.load(out)
    peak_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss // 1024
    return elapsed, peak_kib, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for lines in (args.baseline, args.lines):
            path = Path(tmp) / f"costs-{lines}.jsonl"
            started = time.perf_counter()
            generate(path, lines)
            generated = time.perf_counter() - started
            size_mb = path.stat().st_size / 1e6
            elapsed, peak_kib, data = run_report(path)
            total = data["total"]
            assert isinstance(total, dict)
            results.append(peak_kib)
            print(
                f"{lines:>9,} lines  {size_mb:8.1f} MB  (generated in {generated:5.1f} s)  "
                f"report {elapsed:6.2f} s  {lines / elapsed:9,.0f} lines/s  "
                f"peak RSS {peak_kib / 1024:6.1f} MiB  calls {total['calls']:,}  "
                f"cost ${total['cost_usd']}"
            )
            path.unlink()
        ratio = results[1] / results[0]
        print(f"peak memory ratio {args.lines:,} / {args.baseline:,} lines: {ratio:.2f}")


if __name__ == "__main__":
    main()
