"""examples/*.py run offline (no OPENAI_API_KEY) as a user runs them, and say what they promise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"

# One line (a regex, matched against a whole stdout line) each example must print.
EXPECTED = {
    "quickstart.py": r"cost: \$0\.\d+ \(prices: \S+\)",
    "budget.py": r"refused before sending: worst case \$0\.\d+ > \$0\.001",
    "budget_alerts.py": r"alice spent \$0\.\d+, bob \$0\.\d+; 3 alerts",
    "async_streaming.py": r"3 streams cost \$0\.\d+ in total \(3 calls metered\)",
    "tags_and_report.py": r"TOTAL\s+4\s.*",
    "threads.py": r"shared Budget: 4 calls, \$0\.\d+ of \$0\.01",
}


def _offline_env() -> dict[str, str]:
    """No API key (so the examples use the fake server) and no proxy for loopback traffic."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPENAI_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "costmeter_log_file")
    }


def _run(name: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_offline_env(), "TMPDIR": str(tmp)},
        check=False,
    )


@pytest.fixture(scope="module")
def example_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples' temporary directory (TMPDIR), to see that they clean up after themselves."""
    return tmp_path_factory.mktemp("examples-tmp")


@pytest.fixture(scope="module")
def runs(example_tmp: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every example, run once, two at a time (the CI machine has two cores)."""
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda name: _run(name, example_tmp), EXPECTED)
        return dict(zip(EXPECTED, results, strict=True))


def test_examples_leave_no_temporary_files(
    runs: dict[str, subprocess.CompletedProcess[str]], example_tmp: Path
) -> None:
    """Every example removes what it put in the temporary directory."""
    assert all(0 == run.returncode for run in runs.values())
    assert [] == sorted(p.name for p in example_tmp.iterdir())


def test_every_example_is_tested() -> None:
    """A new example file must get an expected line here."""
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_offline(name: str, runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """The example exits 0 and prints its expected line."""
    result = runs[name]
    assert 0 == result.returncode, result.stderr
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(EXPECTED[name], line) for line in lines), result.stdout


def test_budget_example_warns_instead_of_refusing(
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """on_exceed="warn" lets the call through and logs costmeter.budget.exceeded (refused=False)."""
    out, err = runs["budget.py"].stdout, runs["budget.py"].stderr
    assert "warn-only budget let it through" in out
    [warning] = [
        json.loads(line.split(": ", 1)[1])
        for line in err.splitlines()
        if line.startswith("WARNING costmeter: ") and '"refused":false' in line
    ]
    assert ("costmeter.budget.exceeded", "observe-only") == (warning["event"], warning["budget"])


def test_readme_set_up_commands() -> None:
    """The README's two set-up commands: the demo, and exactly the test command CI runs."""
    top = README.read_text().split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", top, re.S)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/costmeter demo",
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest -q',
    ] == commands
    assert commands[1] in ci_lines


_RUN_BLOCKS = """
import json, sys
for number, block in enumerate(json.loads(sys.argv[1])):
    print(f"--- block {number}", flush=True)
    exec(compile(block, f"README.md python block {number}", "exec"), {"__name__": "__main__"})
"""


def test_readme_python_snippets_run(tmp_path: Path) -> None:
    """Every ```python block of the README runs against the fake server, printing what it says."""
    from costmeter.testing import FakeOpenAI

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    with FakeOpenAI() as server:
        env = {**_offline_env(), "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        result = subprocess.run(
            [sys.executable, "-c", _RUN_BLOCKS, json.dumps(blocks)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    assert 0 == result.returncode, result.stderr
    # The values the pricing block documents in its comments (exact, offline).
    for line in (
        "0.625 5 genai-prices",
        "0.014784",
        "13 0.040195 True",
        "2",
        "override",
        "acme-gateway",
    ):
        assert line in result.stdout.splitlines()
