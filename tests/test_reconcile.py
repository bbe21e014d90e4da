"""
``costmeter reconcile`` end to end, offline: real metered calls to `FakeOpenAI`, the JSON-lines log
they write, and the fake organization's bill served by the admin Usage and Costs endpoints.
Expected amounts are computed by hand from the published per-1M-token rates.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.admin.organization.usage_completions_response import (
    DataResultOrganizationUsageCompletionsResult,
)
from openai.types.admin.organization.usage_costs_response import (
    DataResultOrganizationCostsResult,
)

import costmeter
from costmeter import _reconcile
from costmeter._otel_names import otel_genai_keys
from costmeter.cli import main
from costmeter.testing import FakeOpenAI, bill

MILLION = Decimal(1_000_000)
# USD per 1M tokens (input, cached input, output), from OpenAI's pricing page.
GPT_4O = (Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))
GPT_5_MINI = (Decimal("0.25"), Decimal("0.025"), Decimal("2.00"))
GPT_5_MINI_FLEX = (Decimal("0.125"), Decimal("0.0125"), Decimal("1.00"))
GPT_5 = (Decimal("1.25"), Decimal("0.125"), Decimal("10.00"))
TODAY = datetime.now(timezone.utc).date()
YESTERDAY = TODAY - timedelta(days=1)


def priced(rates: tuple[Decimal, Decimal, Decimal], inp: int, cached: int, out: int) -> Decimal:
    return ((inp - cached) * rates[0] + cached * rates[1] + out * rates[2]) / MILLION


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def admin_env(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's environment for the admin endpoints, pointing at the fake."""
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "admin-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "project-key-that-admin-endpoints-must-not-get")


@pytest.fixture
def log(tmp_path: Path, server: FakeOpenAI, quiet: None) -> Path:
    """Two metered calls (gpt-4o chat, gpt-5-mini responses) logged to a JSON-lines file."""
    path = tmp_path / "costs.jsonl"
    sink = costmeter.log_to(path)
    client = costmeter.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-fake-output-tokens": "30"},
    )
    client.responses.create(
        model="gpt-5-mini", input="what is the capital of France?", reasoning={"effort": "low"}
    )
    sink.close()
    return path


@pytest.fixture
def quiet() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["reconcile", *args, "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def row(data: dict[str, Any], key: str) -> dict[str, Any]:
    found = [r for r in data["rows"] if r["key"] == key]
    assert len(found) == 1, [r["key"] for r in data["rows"]]
    return found[0]


def billed_calls(server: FakeOpenAI) -> list[Any]:
    return list(bill(server).calls)


def expected_cost(server: FakeOpenAI) -> Decimal:
    """The two calls of `log` by hand: 30 output tokens; 64 reasoning (low) + 20 visible."""
    chat, resp = billed_calls(server)
    return priced(GPT_4O, chat.input_tokens, 0, 30) + priced(
        GPT_5_MINI, resp.input_tokens, 0, 64 + 20
    )


def test_exact_match(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """What was logged is what was billed: every row matches, exit 0."""
    expected = expected_cost(server)

    code, data = run(capsys, str(log), "--since", TODAY.isoformat())

    assert 0 == code
    today = row(data, TODAY.isoformat())
    assert expected == Decimal(today["logged_usd"]) == Decimal(today["billed_usd"])
    assert 0 == Decimal(today["diff_usd"])
    assert "match" == today["explanation"]
    assert today["logged_tokens"] == {**today["billed_tokens"], "calls": 2}
    assert data["ok"] is True


def test_admin_endpoints_use_the_admin_key(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SDK sends the admin key (not OPENAI_API_KEY) and the documented query."""
    run(capsys, str(log), "--since", YESTERDAY.isoformat())

    admin = [r for r in server.requests if r.path.startswith("/v1/organization/")]
    assert {"/v1/organization/costs", "/v1/organization/usage/completions"} == {
        r.path for r in admin
    }
    assert {"Bearer admin-test-key"} == {r.headers["authorization"] for r in admin}
    assert {"1d"} == {r.query["bucket_width"] for r in admin}


def test_missing_calls_day(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens billed yesterday that nothing logged: calls not made through costmeter, exit 6."""
    bill(server).add_call(
        at=datetime.combine(YESTERDAY, datetime.min.time(), timezone.utc) + timedelta(hours=3),
        model="gpt-5-2025-08-07",
        input_tokens=100_000,
        output_tokens=1_000,
    )

    code, data = run(capsys, str(log), "--since", YESTERDAY.isoformat())

    assert 6 == code
    gap = row(data, YESTERDAY.isoformat())
    assert Decimal("0.135") == Decimal(gap["billed_usd"])  # 100k x $1.25 + 1k x $10 per 1M
    assert 0 == Decimal(gap["logged_usd"])
    assert gap["explanation"].startswith("calls not made through costmeter: 1 request, 100,000")
    assert "match" == row(data, TODAY.isoformat())["explanation"]
    assert data["ok"] is False


def test_price_change_day(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same tokens, 10 % more dollars on the bill: a price change."""
    bill(server).price_factor[TODAY.isoformat()] = Decimal("1.1")

    code, data = run(capsys, str(log), "--since", TODAY.isoformat(), "--tolerance", "0")

    assert 6 == code
    today = row(data, TODAY.isoformat())
    logged = Decimal(today["logged_usd"])
    assert logged * Decimal("1.1") == Decimal(today["billed_usd"])
    assert "10.00" == today["diff_pct"]
    assert today["explanation"].startswith("a price change: same tokens")


def test_tier_mismatch(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The response said default, the bill says flex: same tokens, other tier, half the price."""
    bill(server).billed_tier["default"] = "flex"
    resp = billed_calls(server)[1]
    logged_mini = priced(GPT_5_MINI, resp.input_tokens, 0, 84)
    billed_mini = priced(GPT_5_MINI_FLEX, resp.input_tokens, 0, 84)

    code, data = run(
        capsys, str(log), "--since", TODAY.isoformat(), "--by", "model", "--tolerance", "0"
    )

    assert 6 == code
    mini = row(data, "gpt-5-mini-2025-08-07")
    assert logged_mini == Decimal(mini["logged_usd"])
    assert billed_mini == Decimal(mini["billed_usd"])
    assert "service tier: billed as flex, logged as default" == mini["explanation"]


def test_paging_is_followed(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """One day per page: every page of both endpoints is read, and the sums still match."""
    bill(server).page_limit = 1
    since = TODAY - timedelta(days=4)

    code, data = run(capsys, str(log), "--since", since.isoformat())

    assert 0 == code
    assert 10 == bill(server).pages_served  # 5 days x (costs + usage)
    pages = [r.query.get("page") for r in server.requests if r.path == "/v1/organization/costs"]
    assert [None, "page_1", "page_2", "page_3", "page_4"] == pages
    assert data["total"]["logged_usd"] == data["total"]["billed_usd"]


def test_unmetered_line_items(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bill(server).add_line_item(TODAY.isoformat(), "vector store storage", "0.25")

    code, data = run(capsys, str(log), "--since", TODAY.isoformat(), "--by", "line_item")

    assert 6 == code
    storage = row(data, "vector store storage")
    assert "0.25" == storage["billed_usd"]
    assert "unmetered line items $0.250000 (vector store storage)" == storage["explanation"]
    assert "match" == row(data, "gpt-4o-2024-08-06, output_tokens")["explanation"]


def test_time_zone_edge(
    tmp_path: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A call logged at 23:59:59 UTC and billed at 00:00:01: each day explains the other."""
    edge = datetime.combine(TODAY, datetime.min.time(), timezone.utc)
    event = {
        "timestamp": (edge - timedelta(seconds=1)).isoformat(),
        "event": "costmeter.call",
        "api": "responses",
        "model": "gpt-5",
        "response_model": "gpt-5-2025-08-07",
        "service_tier": "default",
        "input_tokens": 20_000,
        "cached_input_tokens": 0,
        "output_tokens": 5_000,
        "cost_usd": Decimal("0.075"),  # 20k x $1.25 + 5k x $10 per 1M
        "input_cost_usd": Decimal("0.025"),
        "cached_input_cost_usd": Decimal(0),
        "output_cost_usd": Decimal("0.05"),
    }
    path = tmp_path / "edge.jsonl"
    path.write_text(json.dumps(otel_genai_keys(None, "info", event), default=str) + "\n")
    bill(server).add_call(
        at=edge + timedelta(seconds=1),
        model="gpt-5-2025-08-07",
        input_tokens=20_000,
        output_tokens=5_000,
    )

    code, data = run(capsys, str(path), "--since", YESTERDAY.isoformat())

    assert 6 == code
    before, after = row(data, YESTERDAY.isoformat()), row(data, TODAY.isoformat())
    assert "0.075" == before["logged_usd"] == after["billed_usd"]
    assert before["explanation"].startswith("time-zone edge: 20,000 input / 5,000 output tokens")
    assert f"counted on {TODAY.isoformat()} by the bill" in before["explanation"]
    assert f"counted on {YESTERDAY.isoformat()} by the log" in after["explanation"]
    assert 0 == Decimal(data["total"]["diff_usd"])


def test_csv_and_table(
    log: Path, server: FakeOpenAI, admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV money is exact decimal text; the table has the same rows and a TOTAL."""
    assert 0 == main(["reconcile", str(log), "--since", TODAY.isoformat(), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [TODAY.isoformat(), "TOTAL"] == [r["day"] for r in rows]
    assert rows[0]["logged_usd"] == rows[0]["billed_usd"]
    assert expected_cost(server) == Decimal(rows[0]["logged_usd"])

    assert 0 == main(["reconcile", str(log), "--since", TODAY.isoformat()])
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["day", "logged", "$"]
    assert table.splitlines()[-1].startswith("TOTAL")


class TestExitCodes:
    def test_no_admin_key_is_a_usage_error(
        self, log: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)

        assert 2 == main(["reconcile", str(log), "--since", TODAY.isoformat()])
        assert "OPENAI_ADMIN_KEY" in capsys.readouterr().err

    @pytest.mark.parametrize(
        "args",
        [
            ["--since", "yesterday"],
            ["--since", "2025-06-02", "--until", "2025-06-01"],
            ["--since", "2025-06-01", "--tolerance", "-1"],
            ["--since", "2025-06-01", "--by", "week"],
            [],
        ],
    )
    def test_bad_arguments(
        self, log: Path, admin_env: None, args: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert 2 == main(["reconcile", str(log), *args])

    def test_unreadable_log(self, tmp_path: Path, admin_env: None) -> None:
        assert 3 == main(["reconcile", str(tmp_path / "nope.jsonl"), "--since", "2025-06-01"])

    def test_refused_admin_key(
        self,
        log: Path,
        server: FakeOpenAI,
        admin_env: None,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        server.fail_next(401, path="/v1/organization/costs")

        assert 5 == main(["reconcile", str(log), "--since", TODAY.isoformat()])
        assert "is OPENAI_ADMIN_KEY an admin key?" in capsys.readouterr().err


def test_fake_bill_has_the_sdks_shapes(log: Path, server: FakeOpenAI) -> None:
    """The typed SDK methods parse the fake's answers into their documented result types."""
    client = openai.OpenAI(api_key="", admin_api_key="adm", base_url=server.base_url)
    start = int(datetime.combine(TODAY, datetime.min.time(), timezone.utc).timestamp())
    usage = client.admin.organization.usage

    costs = usage.costs(start_time=start, group_by=["line_item", "project_id"], limit=1)
    tokens = usage.completions(start_time=start, group_by=["model", "service_tier"], limit=1)

    cost_results = [r for bucket in costs.data for r in bucket.results]
    assert cost_results
    assert all(isinstance(r, DataResultOrganizationCostsResult) for r in cost_results)
    assert {"proj_fake"} == {r.project_id for r in cost_results}
    usage_results = [r for bucket in tokens.data for r in bucket.results]
    assert {"gpt-4o-2024-08-06", "gpt-5-mini-2025-08-07"} == {r.model for r in usage_results}
    assert all(isinstance(r, DataResultOrganizationUsageCompletionsResult) for r in usage_results)


def test_reconcile_demo(log: Path, server: FakeOpenAI) -> None:
    """The demo's closing check: its own log against the fake server's bill."""
    table, matched = _reconcile.reconcile_demo(server, str(log))

    assert matched
    assert TODAY.isoformat() in table
    assert table.splitlines()[-1].endswith("match")


def test_progress_on_a_terminal(
    log: Path,
    server: FakeOpenAI,
    admin_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a TTY, stderr counts the bill's pages, then clears the line."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)

    assert 0 == main(["reconcile", str(log), "--since", TODAY.isoformat()])

    err = capsys.readouterr().err
    assert "\rcostmeter: reading the bill: 2 pages" in err
    assert err.endswith("\r\x1b[K")
