"""The ``costmeter`` command: report, price, estimate, help and exit codes."""

# structlog test style (expected == actual) trips SIM300.

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import random
import statistics
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costmeter
from costmeter import _report, cli
from costmeter._otel_names import otel_genai_keys
from costmeter._pricing import price_of
from costmeter.cli import main

MODELS = ("gpt-5", "gpt-5-mini", "gpt-4.1-nano")
DAYS = ("2025-06-01", "2025-06-02", "2025-06-03")


def make_events(count: int = 300, seed: int = 7) -> list[dict[str, Any]]:
    """Realistic costmeter.call events; money held as Decimals with at most 15 digits."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        model = MODELS[i % len(MODELS)]
        input_tokens = rng.randint(20, 40_000)
        cached = rng.choice([0, 0, (input_tokens // 1024) * 1024])
        output_tokens = rng.randint(1, 4000)
        unpriced = i % 50 == 49
        estimated = i % 40 == 39
        cost = None if unpriced else Decimal(rng.randint(1, 10**9)) / Decimal(10**12)
        events.append(
            {
                "timestamp": f"{DAYS[i % 3]}T{i % 24:02d}:{i % 60:02d}:00.000000Z",
                "level": "info",
                "event": "costmeter.call",
                "api": "embeddings" if i % 10 == 0 else "responses",
                "model": model,
                "response_model": f"{model}-2025-08-07",
                "response_id": f"resp_{i}",
                "request_id": f"req_{i}",
                "stream": i % 2 == 0,
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
                "usage_source": "estimated" if estimated else "reported",
                "estimated_input_tokens": input_tokens + rng.randint(-50, 50),
                "estimated_cost_usd": 0.01,
                "cost_usd": cost,
                "price_source": None if unpriced else "genai-prices",
                "priced_as": None if unpriced else model,
                "price_status": "unknown_model" if unpriced else "ok",
                "duration_ms": rng.randint(100, 9000),
                "tags": {"team": "search"} if i % 3 else {"team": "ads", "env": "prod"},
                **({"budget": "nightly"} if i % 4 == 0 else {}),
            }
        )
    return events


def render(event: dict[str, Any]) -> str:
    """An event as costmeter writes it: Decimal money as JSON numbers."""
    return json.dumps(event, default=float)


NOISE = [
    '{"event": "request handled", "path": "/v1/search", "status": 200}',
    "2025-06-01 12:00:00 INFO uvicorn: started",
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 1',  # torn
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": "many"}',  # wrong type
    '{"event": "costmeter.budget.exceeded", "budget": "nightly", "refused": true}',
    "",
]


@pytest.fixture
def events() -> list[dict[str, Any]]:
    """The generated events."""
    return make_events()


@pytest.fixture
def log(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    """A log with the events and some noise lines in between."""
    path = tmp_path / "costs.jsonl"
    lines = [render(e) for e in events]
    for n, noise in enumerate(NOISE):
        lines.insert(n * 40, noise)
    path.write_text("\n".join(lines) + "\n")
    return path


def report_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """Run ``report --format json`` and parse its output."""
    assert 0 == main(["report", *args, "--format", "json"])
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def totals(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The expected totals, computed independently of the CLI."""
    return {
        "calls": len(events),
        "input_tokens": sum(e["input_tokens"] for e in events),
        "cached_input_tokens": sum(e["cached_input_tokens"] for e in events),
        "output_tokens": sum(e["output_tokens"] for e in events),
        "reasoning_tokens": sum(e["reasoning_tokens"] for e in events),
        "cost_usd": sum((e["cost_usd"] for e in events if e["cost_usd"] is not None), Decimal(0)),
        "unpriced_calls": sum(1 for e in events if e["cost_usd"] is None),
        "estimated_usage_calls": sum(1 for e in events if e["usage_source"] == "estimated"),
    }


def got(row: dict[str, Any]) -> dict[str, Any]:
    """The same figures from a report row, money back to Decimal."""
    return {
        **{k: row[k] for k in totals([]) if k != "cost_usd"},
        "cost_usd": Decimal(row["cost_usd"]),
    }


class TestReportTotals:
    def test_total_equals_decimal_sums(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The TOTAL row is the exact Decimal sum of every call."""
        data = report_json(capsys, str(log))

        assert totals(events) == got(data["total"])

    def test_by_model(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--by model groups by the requested model."""
        data = report_json(capsys, str(log), "--by", "model")

        assert {m: totals([e for e in events if e["model"] == m]) for m in MODELS} == {
            g["key"]: got(g) for g in data["groups"]
        }

    def test_by_day(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--by day groups by UTC date, in date order."""
        data = report_json(capsys, str(log), "--by", "day")

        assert list(DAYS) == [g["key"] for g in data["groups"]]
        assert {d: totals([e for e in events if e["timestamp"].startswith(d)]) for d in DAYS} == {
            g["key"]: got(g) for g in data["groups"]
        }

    def test_by_tag(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--by tag:KEY groups by that tag's value; calls without it are (untagged)."""
        data = report_json(capsys, str(log), "--by", "tag:env")

        expected = {
            "prod": totals([e for e in events if "env" in e["tags"]]),
            "(untagged)": totals([e for e in events if "env" not in e["tags"]]),
        }
        assert expected == {g["key"]: got(g) for g in data["groups"]}

    def test_by_budget_and_api(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--by budget and --by api group by those keys."""
        budgets = report_json(capsys, str(log), "--by", "budget")
        apis = report_json(capsys, str(log), "--by", "api")

        assert {"nightly": 75, "(none)": 225} == {g["key"]: g["calls"] for g in budgets["groups"]}
        assert {"embeddings": 30, "responses": 270} == {
            g["key"]: g["calls"] for g in apis["groups"]
        }

    def test_since_until(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--since is inclusive, --until exclusive; naive times are UTC."""
        data = report_json(capsys, str(log), "--since", "2025-06-02", "--until", "2025-06-03")

        assert totals([e for e in events if e["timestamp"].startswith("2025-06-02")]) == got(
            data["total"]
        )
        assert 200 == data["lines"]["out_of_range"]

    def test_since_with_offset(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A --since with a UTC offset is compared in UTC."""
        data = report_json(capsys, str(log), "--since", "2025-06-03T02:00:00+02:00")

        assert totals([e for e in events if e["timestamp"] >= "2025-06-03"]) == got(data["total"])

    def test_cache_savings_and_hit_rate(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Savings are cached tokens x (input - cached rate); the hit rate is cached / input."""
        data = report_json(capsys, str(log))

        saved = Decimal(0)
        for e in events:
            if e["cached_input_tokens"] and e["priced_as"]:
                rates = price_of(e["priced_as"], service_tier="default").for_input(
                    e["input_tokens"]
                )
                saved += (
                    e["cached_input_tokens"]
                    * (rates.input_per_mtok - rates.cached_input_per_mtok)
                    / Decimal(1_000_000)
                )
        expected = totals(events)
        assert saved == Decimal(data["total"]["saved_by_cache_usd"])
        assert (
            round(expected["cached_input_tokens"] / expected["input_tokens"], 6)
            == (data["total"]["cache_hit_rate"])
        )

    def test_estimate_accuracy(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Mean and median absolute % error of estimated vs reported input tokens."""
        data = report_json(capsys, str(log))

        errors = [
            abs(e["estimated_input_tokens"] - e["input_tokens"]) * 100 / e["input_tokens"]
            for e in events
            if e["usage_source"] == "reported"
        ]
        assert len(errors) == data["total"]["estimate_error_calls"]
        assert (
            pytest.approx(statistics.mean(errors), abs=1e-6)
            == (data["total"]["estimate_error_mean_pct"])
        )
        assert (
            pytest.approx(statistics.median(errors), abs=0.01)
            == (data["total"]["estimate_error_median_pct"])
        )

    def test_otel_named_logs_report_the_same(
        self, tmp_path: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Lines written with otel_genai_keys add up the same."""
        path = tmp_path / "otel.jsonl"
        path.write_text(
            "".join(render(otel_genai_keys(None, "info", dict(e))) + "\n" for e in events)
        )

        data = report_json(capsys, str(path), "--by", "tag:team")

        assert totals(events) == got(data["total"])
        assert {"ads", "search"} == {g["key"] for g in data["groups"]}


class TestReportInputs:
    def test_groups_ordered_by_cost(self, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Groups are ordered by cost, highest first."""
        data = report_json(capsys, str(log))
        costs = [Decimal(g["cost_usd"]) for g in data["groups"]]

        assert sorted(costs, reverse=True) == costs

    def test_gzip_and_stdin(
        self,
        log: Path,
        events: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A .gz file and stdin (also gzipped) are read like plain files, and add up."""
        gz = log.with_suffix(".jsonl.gz")
        gz.write_bytes(gzip.compress(log.read_bytes()))
        monkeypatch.setattr(
            sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(log.read_bytes())))
        )

        data = report_json(capsys, str(log), str(gz), "-")

        assert totals(events * 3) == got(data["total"])

    def test_skipped_lines_counted_on_stderr(
        self, log: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Non-costmeter and malformed lines are skipped and counted on stderr."""
        assert 0 == main(["report", str(log)])

        captured = capsys.readouterr()
        assert "skipped 2 other lines (not costmeter events), 2 malformed lines" in captured.err
        assert "TOTAL" in captured.out

    def test_json_counts(self, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """JSON output carries the line counts and other costmeter events."""
        data = report_json(capsys, str(log))

        assert {"read": 306, "other": 2, "malformed": 2, "out_of_range": 0, "no_timestamp": 0} == (
            data["lines"]
        )
        assert {"costmeter.budget.exceeded": 1} == data["other_events"]

    def test_csv(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """CSV has a header, one row per group and a TOTAL row with exact money."""
        assert 0 == main(["report", str(log), "--by", "model", "--format", "csv"])

        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert {"gpt-4.1-nano", "gpt-5", "gpt-5-mini"} == {r["model"] for r in rows[:-1]}
        assert totals(events)["cost_usd"] == Decimal(rows[-1]["cost_usd"])
        assert "TOTAL" == rows[-1]["model"]

    def test_table(self, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The table has a header, a row per model and a TOTAL row."""
        assert 0 == main(["report", str(log), "--by", "model"])

        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("model")
        assert lines[-1].startswith("TOTAL")
        assert 7 == len(lines)

    def test_no_events_exit_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A log without costmeter.call events exits 1, saying so."""
        path = tmp_path / "app.log"
        path.write_text(NOISE[0] + "\n")

        assert cli.EXIT_NO_EVENTS == main(["report", str(path)])
        assert f"no costmeter.call events found in {path}" in capsys.readouterr().err

    def test_empty_window_exit_1(self, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No call inside --since/--until also exits 1."""
        assert 1 == main(["report", str(log), "--since", "2030-01-01"])

    @pytest.mark.parametrize("kind", ["missing", "directory", "corrupt-gzip"])
    def test_unreadable_file_exit_3(
        self, kind: str, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing file, a directory or a corrupt gzip exits 3 naming the file, with no report."""
        bad = tmp_path / kind
        if kind == "directory":
            bad.mkdir()
        elif kind == "corrupt-gzip":
            bad.write_bytes(gzip.compress(log.read_bytes())[:-200])

        assert cli.EXIT_UNREADABLE == main(["report", str(log), str(bad)])
        captured = capsys.readouterr()
        assert f"cannot read {bad}" in captured.err
        assert "" == captured.out

    @pytest.mark.parametrize(
        "args",
        [
            ["--by", "colour"],
            ["--by", "tag:"],
            ["--since", "yesterday"],
            ["--since", "2025-06-03", "--until", "2025-06-01"],
            ["--format", "xml"],
        ],
    )
    def test_usage_errors_exit_2(
        self, args: list[str], log: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Bad options exit 2 with a message."""
        assert cli.EXIT_USAGE == main(["report", str(log), *args])
        assert "costmeter" in capsys.readouterr().err


class TestPrice:
    def test_gpt5(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The prices shown are price_of's, with their source."""
        assert 0 == main(["price", "gpt-5", "--format", "json"])

        data = json.loads(capsys.readouterr().out)
        price = price_of("gpt-5")
        assert (price.source, "default") == (data["source"], data["service_tier"])
        assert price.input_per_mtok == Decimal(data["input_per_mtok"])
        assert price.cached_input_per_mtok == Decimal(data["cached_input_per_mtok"])
        assert price.output_per_mtok == Decimal(data["output_per_mtok"])

    def test_flex_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--tier flex shows the flex prices."""
        assert 0 == main(["price", "gpt-5", "--tier", "flex"])

        out = capsys.readouterr().out
        price = price_of("gpt-5", service_tier="flex")
        assert "service tier flex" in out
        assert f"input          ${price.input_per_mtok} / 1M tokens" in out

    def test_unknown_model_exit_4(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown model exits 4 with the pricing error."""
        assert cli.EXIT_UNKNOWN_MODEL == main(["price", "no-such-model-9"])
        assert "no price known for model 'no-such-model-9'" in capsys.readouterr().err


class TestEstimate:
    def test_file_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The body's keys reach estimate(); money comes back as an exact string."""
        request = {"input": "hi", "max_output_tokens": 500, "temperature": 0.5}
        body = tmp_path / "request.json"
        body.write_text(json.dumps(request))

        assert 0 == main(["estimate", "--model", "gpt-5", str(body), "--format", "json"])

        expected = costmeter.estimate(model="gpt-5", **request)
        data = json.loads(capsys.readouterr().out)
        assert (format(expected.cost_usd, "f"), expected.input_tokens, 500, True) == (
            data["cost_usd"],
            data["input_tokens"],
            data["max_output_tokens"],
            data["output_bound_from_request"],
        )

    def test_stdin_chat_body_with_its_model(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --model the body's model is used; a messages body is a Chat request."""
        messages = [{"role": "user", "content": "Say hi"}]
        monkeypatch.setattr(
            sys, "stdin", io.StringIO(json.dumps({"model": "gpt-4o-mini", "messages": messages}))
        )

        assert 0 == main(["estimate"])

        expected = costmeter.estimate(model="gpt-4o-mini", messages=messages)
        out = capsys.readouterr().out
        assert f"input tokens        {expected.input_tokens}\n" in out
        assert f"worst-case cost     ${format(expected.cost_usd, 'f')}" in out
        assert "(costmeter's default)" in out

    def test_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad JSON exits 2, a missing file 3, an unpriced model 4 (tokens still shown)."""
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        good = tmp_path / "good.json"
        good.write_text('{"input": "hi"}')

        assert (2, 3, 4, 2) == (
            main(["estimate", "--model", "gpt-5", str(bad)]),
            main(["estimate", "--model", "gpt-5", str(tmp_path / "missing.json")]),
            main(["estimate", "--model", "no-such-model-9", str(good)]),
            main(["estimate", str(good)]),
        )
        assert "unknown (no price for this model)" in capsys.readouterr().out


class TestPapercuts:
    def test_bad_by_lists_every_choice(self, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid --by exits 2 and names every accepted grouping, none included."""
        assert 2 == main(["report", str(log), "--by", "team"])

        err = capsys.readouterr().err
        assert "invalid --by 'team'" in err
        for choice in ("model", "day", "budget", "api", "tag:KEY", "none"):
            assert choice in err.rsplit("invalid --by", 1)[1]

    def test_by_none_csv_key_column(
        self, log: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--by none --format csv: the key column is headed "group" and holds TOTAL only."""
        assert 0 == main(["report", str(log), "--by", "none", "--format", "csv"])

        rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert ["group", "calls"] == rows[0][:2]
        assert [["TOTAL", str(len(events))]] == [row[:2] for row in rows[1:]]

    @pytest.mark.parametrize(
        ("body", "message"),
        [("{not json", "<stdin> is not JSON"), ("[1, 2]", "<stdin> must hold a JSON object")],
    )
    def test_estimate_names_stdin(
        self,
        body: str,
        message: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A bad body read from stdin is reported as <stdin>, not "-"."""
        monkeypatch.setattr(sys, "stdin", io.StringIO(body))

        assert 2 == main(["estimate", "--model", "gpt-5", "-"])

        err = capsys.readouterr().err
        assert message in err
        assert "- is not" not in err


class TestCommand:
    def test_no_command_prints_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Bare ``costmeter`` prints the help and exits 2."""
        assert 2 == main([])
        assert "quick start" in capsys.readouterr().err

    def test_help_is_a_quick_start(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help shows the commands, examples and exit codes, and exits 0."""
        assert 0 == main(["--help"])

        out = capsys.readouterr().out
        assert all(word in out for word in ("report", "price", "estimate", "log_to", "exit codes"))

    @pytest.mark.slow
    def test_python_m_costmeter_help(self) -> None:
        """``python -m costmeter --help`` works as a program."""
        result = subprocess.run(
            [sys.executable, "-m", "costmeter", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert (0, "") == (result.returncode, result.stderr)
        assert "costmeter report costs.jsonl" in result.stdout

    @pytest.mark.slow
    def test_broken_pipe(self, log: Path) -> None:
        """Output piped into a reader that quits early ends quietly."""
        big = log.read_text() * 20
        proc = subprocess.Popen(
            [sys.executable, "-m", "costmeter", "report", "-", "--format", "csv", "--by", "day"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdout.close()
        _, err = proc.communicate(big.encode(), timeout=60)

        assert b"Traceback" not in err
        assert proc.returncode in (0, cli.EXIT_PIPE_CLOSED)


class TestProgress:
    def test_only_on_a_tty(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Progress goes to stderr when it is a terminal, and is cleared at the end."""
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        progress = _report.Progress("costs.jsonl", 1000, lambda: 250)
        progress.next_at = 0.0

        progress.tick(5000)
        progress.done()

        assert "\rcostmeter: reading costs.jsonl  25.0% (5,000 lines)\r\x1b[K" == (
            capsys.readouterr().err
        )

    def test_silent_otherwise(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a terminal nothing is shown."""
        progress = _report.Progress("costs.jsonl", 1000, lambda: 250)
        progress.next_at = 0.0

        progress.tick(5000)
        progress.done()

        assert "" == capsys.readouterr().err


class TestPriceShowsEveryRate:
    """`costmeter price MODEL` lists every rate a model is billed at (issue 13)."""

    @pytest.mark.parametrize(
        ("model", "line"),
        [
            ("tts-1", "input characters           $15 / 1M characters"),
            ("whisper-1", "audio seconds              $0.36 / hour"),
            ("dall-e-3", "image 1024x1792 hd         $0.120 / image"),
            ("gpt-image-1.5", "output image tokens        $32 / 1M tokens"),
            ("gpt-realtime", "output audio tokens        $64 / 1M tokens"),
            ("gpt-4.1", "container 4g               $0.12 / session (hosted tool)"),
        ],
    )
    def test_rates_beyond_text_tokens(self, model: str, line: str) -> None:
        from costmeter.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert 0 == main(["price", model])

        assert line in [shown.strip() for shown in out.getvalue().splitlines()]


@pytest.mark.parametrize("otel", [False, True])
def test_report_by_budget_key(tmp_path: Any, otel: bool) -> None:
    """`--by budget_key`: one row per key of a per-key budget, in either key style."""
    events = make_events(30)
    for i, event in enumerate(events):
        event["budget"], event["budget_key"] = "per-user", ("alice", "bob", None)[i % 3]
    if otel:
        events = [otel_genai_keys(None, "info", dict(e)) for e in events]
    log = tmp_path / "keys.jsonl"
    log.write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
    out = io.StringIO()

    with contextlib.redirect_stdout(out):
        assert 0 == main(["report", str(log), "--by", "budget_key", "--format", "json"])

    groups = {row["key"]: row["calls"] for row in json.loads(out.getvalue())["groups"]}
    assert {"alice": 10, "bob": 10, "(none)": 10} == groups
