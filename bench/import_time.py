"""
Import time: ``import costmeter`` vs ``import openai`` (target: <= 1.10x).

Each sample is a fresh interpreter (no warm module cache beyond the OS page cache and the .pyc
files), alternating openai / costmeter so drift affects both alike. The figure compared is the
time of the ``import`` statement itself, measured inside the child with ``perf_counter`` (the
interpreter's own start-up is the same for both and would only dilute the ratio); the child's
whole wall time is printed too. Medians over all runs.

Then one ``-X importtime`` run of each lists the modules costmeter adds on top of openai and
their self time, and the costmeter child checks that nothing heavy was imported: tokencost,
anthropic, genai_prices, tiktoken (and no tiktoken vocabulary loaded).

    .venv/bin/python bench/import_time.py [--runs 30] [--quick] [--strict]

Exit status is 0 even when the target is missed, unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = 1.10
HEAVY = ("tokencost", "anthropic", "genai_prices", "tiktoken", "tiktoken_ext", "numpy", "pandas")

_CHILD = """
import sys, time, json
t = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t
info = {{"import_s": elapsed}}
if "{module}" == "costmeter":
    from costmeter import _tokenizer
    heavy = {heavy!r}
    info["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    info["vocabularies"] = sorted(_tokenizer._encodings)
print(json.dumps(info))
"""


# Both packages' bytecode is cached in one private directory, as it is in an installed package
# (an editable install run with PYTHONDONTWRITEBYTECODE=1 would otherwise recompile costmeter's
# sources on every import while openai's .pyc files already exist).
_PYCACHE = tempfile.mkdtemp(prefix="costmeter-bench-pycache-")
atexit.register(shutil.rmtree, _PYCACHE, ignore_errors=True)
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _python(*args: str) -> list[str]:
    return [sys.executable, "-X", f"pycache_prefix={_PYCACHE}", *args]


def _child(module: str) -> tuple[float, float, dict[str, object]]:
    """Import *module* in a fresh interpreter: (import seconds, child wall seconds, info)."""
    code = _CHILD.format(module=module, heavy=HEAVY)
    started = time.perf_counter()
    out = subprocess.run(
        _python("-c", code), capture_output=True, text=True, check=True, env=_ENV
    ).stdout
    wall = time.perf_counter() - started
    info = json.loads(out)
    return float(info["import_s"]), wall, info


def _importtime(module: str) -> dict[str, tuple[int, int, int]]:
    """``-X importtime`` of *module*: name -> (self us, cumulative us, nesting depth)."""
    err = subprocess.run(
        _python("-X", "importtime", "-c", f"import {module}"),
        capture_output=True,
        text=True,
        check=True,
        env=_ENV,
    ).stderr
    table: dict[str, tuple[int, int, int]] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        table[name.strip()] = (int(self_us), int(cumulative_us), depth)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=30, help="samples of each (default 30)")
    parser.add_argument("--quick", action="store_true", help="8 samples of each")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    runs = 8 if args.quick else args.runs

    for _ in range(2):  # write the .pyc files and warm the page cache before measuring
        _child("openai")
        _child("costmeter")
    samples: dict[str, list[tuple[float, float]]] = {"openai": [], "costmeter": []}
    info: dict[str, object] = {}
    for i in range(runs):
        order = ("openai", "costmeter") if i % 2 == 0 else ("costmeter", "openai")
        for module in order:
            imported, wall, child_info = _child(module)
            samples[module].append((imported, wall))
            if module == "costmeter":
                info = child_info

    base_import = statistics.median(s[0] for s in samples["openai"])
    cand_import = statistics.median(s[0] for s in samples["costmeter"])
    base_wall = statistics.median(s[1] for s in samples["openai"])
    cand_wall = statistics.median(s[1] for s in samples["costmeter"])
    ratio = cand_import / base_import
    print(
        f"python {sys.version.split()[0]}, {runs} alternating fresh interpreters each, medians "
        "(bytecode cached for both)"
    )
    print(
        f"  import openai      {base_import * 1000:7.1f} ms   (process wall {base_wall * 1000:6.1f} ms)"
    )
    print(
        f"  import costmeter   {cand_import * 1000:7.1f} ms   (process wall {cand_wall * 1000:6.1f} ms)"
    )
    print(f"  ratio (import)     {ratio:7.3f}x   target <= {TARGET}x   {_verdict(ratio <= TARGET)}")
    print(f"  ratio (wall)       {cand_wall / base_wall:7.3f}x")

    base_table = _importtime("openai")
    cand_table = _importtime("costmeter")
    added = {name: v for name, v in cand_table.items() if name not in base_table}
    added_self = sum(v[0] for v in added.values())
    print(
        f"\nmodules costmeter adds beyond openai: {len(added)}, "
        f"self time {added_self / 1000:.1f} ms (one -X importtime run; inflated by the tracing)"
    )
    by_package: dict[str, int] = {}
    for name, (self_us, _cum, _depth) in added.items():
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + self_us
    for top, self_us in sorted(by_package.items(), key=lambda kv: -kv[1]):
        count = sum(1 for name in added if name.split(".")[0] == top)
        print(f"  {top:<20} {count:3d} modules  {self_us / 1000:6.1f} ms")
    print("  largest single modules:")
    for name, (self_us, cum_us, _depth) in sorted(added.items(), key=lambda kv: -kv[1][0])[:10]:
        print(f"    {name:<36} self {self_us / 1000:5.1f} ms  cumulative {cum_us / 1000:6.1f} ms")

    heavy = info.get("heavy") or []
    vocabularies = info.get("vocabularies") or []
    heavy_ok = not heavy and not vocabularies
    print(
        f"\nheavy modules imported by `import costmeter`: {heavy or 'none'}; "
        f"vocabularies loaded: {vocabularies or 'none'}   {_verdict(heavy_ok)}"
    )
    ok = ratio <= TARGET and heavy_ok
    return 1 if args.strict and not ok else 0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
