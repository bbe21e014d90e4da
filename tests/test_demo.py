"""``costmeter demo``: the offline workload end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costmeter.cli import main

# The costmeter.call contract: every event carries these keys (null when unknown).
CALL_KEYS = {
    "timestamp", "level", "event", "api", "model", "response_model", "response_id",
    "request_id", "stream", "background", "service_tier", "outcome", "error_type",
    "input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
    "reasoning_tokens", "web_search_calls", "usage_source", "estimated_input_tokens",
    "estimated_cost_usd", "estimate_complete", "cost_usd", "input_cost_usd",
    "cached_input_cost_usd", "cache_write_cost_usd", "output_cost_usd", "tool_cost_usd",
    "price_source", "priced_as", "price_status", "duration_ms", "tags",
    "budget", "budget_spent_usd", "budget_remaining_usd", "budget_key", "charged_usd",
}  # fmt: skip
MONEY_KEYS = (
    "cost_usd",
    "input_cost_usd",
    "cached_input_cost_usd",
    "cache_write_cost_usd",
    "output_cost_usd",
    "tool_cost_usd",
    "estimated_cost_usd",
)


# A line from an earlier demo run, left in the log file.
EARLIER_RUN = {
    "event": "costmeter.call",
    "response_id": "resp_from_an_earlier_run",
    "tags": {"demo": "offline", "step": "first"},
}


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    log: Path
    events: list[dict[str, Any]]
    user_log: Path


def _demo_env(tmp: Path) -> dict[str, str]:
    """The user's environment, minus an API key, plus a cost log and a proxy that must be ignored."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPENAI_") and k.lower() not in ("no_proxy", "all_proxy")
    }
    env["COSTMETER_LOG_FILE"] = str(tmp / "user-costs.jsonl")
    # A dead proxy: loopback traffic routed through it would fail every call.
    env["HTTP_PROXY"] = env["http_proxy"] = "http://127.0.0.1:9"
    return env


def _run_demo(
    tmp: Path, log: Path, wrapper: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`python -m costmeter demo --log LOG` in *tmp*, as a user runs it (optionally wrapped)."""
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "costmeter", "demo", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_demo_env(tmp),
        cwd=tmp,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One `python -m costmeter demo` run shared by the tests below (it takes a few seconds)."""
    tmp = tmp_path_factory.mktemp("demo")
    log = tmp / "demo.jsonl"
    log.write_text(json.dumps(EARLIER_RUN) + "\n")  # as if the demo had run before
    proc = _run_demo(tmp, log)
    events = [
        json.loads(line, parse_float=Decimal)
        for line in (log.read_text().splitlines() if log.exists() else [])
    ]
    return DemoRun(proc.returncode, proc.stdout, proc.stderr, log, events, tmp / "user-costs.jsonl")


def calls(run: DemoRun) -> list[dict[str, Any]]:
    return [e for e in run.events if e["event"] == "costmeter.call"]


def steps(run: DemoRun) -> list[str]:
    return [e["tags"]["step"] for e in calls(run)]


def test_demo_exits_zero_without_errors(demo: DemoRun) -> None:
    """The offline demo succeeds, and costmeter reported no internal error or warning."""
    assert (0, "") == (demo.returncode, demo.stderr)


def test_every_log_line_is_a_costmeter_event(demo: DemoRun) -> None:
    """The log holds only costmeter events: the workload's calls and the one refusal."""
    names = [e["event"] for e in demo.events]
    assert ["costmeter.call"] * 7 + ["costmeter.budget.exceeded"] == names


def test_call_events_carry_the_whole_schema(demo: DemoRun) -> None:
    """Every call event has every documented key, and exact Decimal-parsable money."""
    for event in calls(demo):
        assert CALL_KEYS == set(event)
        for key in MONEY_KEYS:
            assert isinstance(event[key], Decimal), key
        assert ("ok", "reported", "ok") == (
            event["outcome"],
            event["usage_source"],
            event["price_status"],
        )
        assert "offline" == event["tags"]["demo"]


def test_workload_covers_each_step(demo: DemoRun) -> None:
    """Sync, cached, three async calls, a stream and a chat call, in that order."""
    assert ["first", "cached", "async", "async", "async", "stream", "chat"] == steps(demo)
    by_step = {e["tags"]["step"]: e for e in calls(demo)}
    assert by_step["stream"]["stream"] is True
    assert "chat.completions" == by_step["chat"]["api"]
    assert 0 == by_step["first"]["cached_input_tokens"]
    assert by_step["cached"]["cached_input_tokens"] >= 1024
    assert all(e["reasoning_tokens"] > 0 for e in calls(demo) if e["model"] != "gpt-4.1-nano")


def test_cached_tokens_cost_less(demo: DemoRun) -> None:
    """The cached call's prefix is billed at the cached rate, so it costs less than the first."""
    first, cached = calls(demo)[:2]
    assert cached["cached_input_cost_usd"] > 0
    assert cached["cost_usd"] < first["cost_usd"]


def test_refusal_is_logged_and_never_sent(demo: DemoRun) -> None:
    """The tight budget refuses gpt-5 before sending: logged, and the server got no request."""
    refusal = demo.events[-1]
    assert ("tight", "gpt-5", True, Decimal("0.001")) == (
        refusal["budget"],
        refusal["model"],
        refusal["refused"],
        refusal["limit_usd"],
    )
    assert refusal["estimated_cost_usd"] > refusal["limit_usd"]
    assert "gpt-5" not in {e["model"] for e in calls(demo)}
    assert "requests the server received for it: 0 (the request was never sent)" in demo.stdout


def test_printed_report_total_matches_the_log(demo: DemoRun) -> None:
    """The report's TOTAL row and the self-check show the exact sum of the logged costs."""
    total = sum((e["cost_usd"] for e in calls(demo)), Decimal(0))
    total_row = next(line for line in demo.stdout.splitlines() if line.startswith("TOTAL"))
    assert ["TOTAL", "7"] == total_row.split()[:2]
    assert f"{total:,.6f}" in total_row.split()
    assert f"the report's total ${format(total, 'f')} equals what the budget 'demo'" in demo.stdout


def test_costmeter_report_reproduces_the_demo_totals(
    demo: DemoRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """`costmeter report LOG --format json` adds up to the same exact totals."""
    assert 0 == main(["report", str(demo.log), "--format", "json"])
    report = json.loads(capsys.readouterr().out)["total"]
    assert (
        7,
        str(sum((e["cost_usd"] for e in calls(demo)), Decimal(0))),
        sum(e["cached_input_tokens"] for e in calls(demo)),
    ) == (report["calls"], report["cost_usd"], report["cached_input_tokens"])


def test_fake_calls_stay_out_of_the_users_cost_log(demo: DemoRun) -> None:
    """With COSTMETER_LOG_FILE set, the offline demo writes nothing to that (real) log."""
    assert "" == (demo.user_log.read_text() if demo.user_log.exists() else "")


def test_rerun_replaces_its_own_log(demo: DemoRun) -> None:
    """An earlier demo log is started afresh, so the report shows this run only."""
    assert "resp_from_an_earlier_run" not in {e.get("response_id") for e in demo.events}
    assert 8 == len(demo.events)


def test_refuses_to_overwrite_a_file_that_is_not_a_demo_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log naming someone's real log is a usage error, and the file is left untouched."""
    log = tmp_path / "costs.jsonl"
    original = '{"event": "costmeter.call", "model": "gpt-5", "tags": {}}\n'
    log.write_text(original)
    assert 2 == main(["demo", "--log", str(log)])
    assert "is not a costmeter demo log" in capsys.readouterr().err
    assert original == log.read_text()


def test_unwritable_log_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --log in a directory that does not exist: exit 3 and say which file, before any call."""
    log = tmp_path / "missing-dir" / "demo.jsonl"
    assert 3 == main(["demo", "--log", str(log)])
    assert f"cannot write {log}" in capsys.readouterr().err


def test_live_without_a_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--live with no OPENAI_API_KEY exits 2 with a message naming the variable; nothing runs."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    log = tmp_path / "live.jsonl"
    assert 2 == main(["demo", "--live", "--log", str(log)])
    err = capsys.readouterr().err
    assert "--live needs OPENAI_API_KEY" in err
    assert not log.exists()


def test_live_path_uses_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--live builds its client from OPENAI_* like the SDK; here they point at a fake server."""
    from costmeter.testing import FakeOpenAI

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "live.jsonl"
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        assert 0 == main(["demo", "--live", "--log", str(log)])
        sent = server.requests
    assert ["gpt-5-nano", "gpt-5-nano"] == [r.json["model"] for r in sent if r.json]
    assert all(r.headers["authorization"] == "Bearer test-key" for r in sent)
    events = [json.loads(line, parse_float=Decimal) for line in log.read_text().splitlines()]
    assert [("live", "first"), ("live", "stream")] == [
        (e["tags"]["demo"], e["tags"]["step"]) for e in events if e["event"] == "costmeter.call"
    ]
    assert "live-demo" == events[0]["budget"]
    assert ("costmeter.budget.exceeded", True) == (events[-1]["event"], events[-1]["refused"])
    assert "equals what the budget 'live-demo' charged" in capsys.readouterr().out


def test_help_lists_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """`costmeter demo --help` documents the log path, --live and the exit codes."""
    assert 0 == main(["demo", "--help"])
    out = capsys.readouterr().out
    for expected in ("--log PATH", "--live", "costmeter-demo.jsonl", "exit codes"):
        assert expected in out


def test_no_loopback_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where no socket can connect (even to 127.0.0.1), the demo says so in one line, exit 1."""

    def unreachable(_self: socket.socket, _address: Any) -> None:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)

    status = main(["demo", "--log", str(tmp_path / "demo.jsonl")])

    out, err = capsys.readouterr()
    assert (1, "") == (status, out)
    [line] = err.splitlines()
    assert "needs the loopback network" in line
    assert "Network is unreachable" in line


def _unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_available(), reason="needs unprivileged user+net namespaces")
def test_namespace_with_loopback_down(tmp_path: Path) -> None:
    """In a fresh network namespace (its `lo` is down): one line on stderr, exit 1."""
    done = _run_demo(tmp_path, tmp_path / "demo.jsonl", wrapper=("unshare", "-rn"))

    assert (1, "") == (done.returncode, done.stdout)
    [line] = done.stderr.splitlines()
    assert line.startswith("costmeter: error: the offline demo needs the loopback network")


def test_demo_ends_with_a_matching_reconcile(demo: DemoRun) -> None:
    """The demo reconciles its own log against the fake server's bill: one matching day."""
    tail = demo.stdout.split("$ costmeter reconcile", 1)[1]
    total = sum((e["cost_usd"] for e in calls(demo)), Decimal(0))
    [today] = [line for line in tail.splitlines() if line[:4].isdigit()]

    assert today.split()[1] == today.split()[2] == f"{total:.6f}"
    assert today.endswith("match")
