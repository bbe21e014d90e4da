"""
``costmeter report --engine duckdb`` prints exactly what the Python engine prints: a differential
test over every grouping, window, format and output of the report, on logs with awkward values
(many decimals, tiny costs, trailing zeros, nulls, both key styles, malformed lines, gzip, several
files); files DuckDB cannot read line for line as Python does are read by Python.
"""

from __future__ import annotations

import gzip
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costmeter import _report, _report_duckdb
from costmeter._otel_names import otel_genai_keys
from costmeter.cli import main

from .test_cli import NOISE, make_events, render
from .test_report_engines import ODD_LINES

pytest.importorskip("duckdb")

GROUPINGS = ("model", "day", "budget", "budget_key", "api", "tag:team", "tag:env", "none")
WINDOWS = [
    (None, None),
    ("2025-06-02", None),
    (None, "2025-06-02T12:00:00"),
    ("2025-06-01T06:30:00.5", "2025-06-03"),
]

# Values the two engines could plausibly read differently; each line is hand-written.
AWKWARD = [
    # many decimals (more than a double holds), tiny, trailing zeros, exponents, an integer
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":0.1234567890123456789}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":1e-07}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":5E-18}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":1e-19}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":0.50}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":1.5E+3}',
    '{"event":"costmeter.call","model":"gpt-5","input_tokens":10,"cost_usd":2}',
    '{"event": "costmeter.call", "model": "gpt-5", "cost_usd": 0.30000000000000004}',
    '{"event": "costmeter.call", "model": "gpt-5", "cost_usd": 0.1 , "input_tokens": 3}',
    '{"event": "costmeter.call", "model": "gpt-5", "cost_usd": -0.25}',
    '{"event": "costmeter.call", "model": "gpt-5", "cost_usd": "0.250"}',
    '{"event": "costmeter.call", "model": "gpt-5", "cost_usd": null, "cached_input_tokens": 5}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": null, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 12345678901234567890123}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": -0, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 1E2, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "output_tokens": "7", "cost_usd": 0.5}',
    # names: empty, escaped, non-ASCII, not strings
    '{"event": "costmeter.call", "model": "", "response_model": "gpt-4o", "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-\\u0035", "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5-\u00e9t\u00e9", "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": true, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": 0, "response_model": "gpt-4o", "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": {}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "budget": "", "api": "", "cost_usd": 1}',
    '{"event": "costmeter.call", "model": "gpt-5", "budget_key": "alice", "cost_usd": 1}',
    # timestamps in every form event_time reads, and some it does not
    '{"event": "costmeter.call", "timestamp": "2025-06-02T10:00:00Z", "model": "m", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-02T10:00:00+00:00", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-02T10:00:00.123", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-02T10:00:00.123456", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-02 10:00:00Z", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-02T23:30:00-02:00", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-02-30T10:00:00Z", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": "2025-06-01", "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": 1748822400, "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": null, "model": "m", "cost_usd": 1}',
    # tags of every type
    '{"event": "costmeter.call", "model": "m", "tags": {"team": 7}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "tags": {"team": false}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "tags": {"team": null}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "tags": {"team": ""}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "tags": "team", "cost_usd": 0.5}',
    # estimate errors on a rounding tie (0.125 %, 0.375 %) and above 100 %
    '{"event": "costmeter.call", "model": "m", "usage_source": "reported", "input_tokens": 800,'
    ' "estimated_input_tokens": 801, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "usage_source": "reported", "input_tokens": 800,'
    ' "estimated_input_tokens": 797, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "usage_source": "reported", "input_tokens": 8,'
    ' "estimated_input_tokens": 30, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "m", "usage_source": "reported", "input_tokens": 0,'
    ' "estimated_input_tokens": 30, "cost_usd": 0.5}',
    # other costmeter events, refusals, and lines that only look like events
    '{"event": "costmeter.budget.exceeded", "budget": "daily", "refused": true}',
    '{"event": "costmeter.budget.exceeded", "budget": "daily", "refused": false}',
    '{"event": "costmeter.budget.exceeded", "budget": 5, "refused": true}',
    '{"event": "costmeter.budget.exceeded", "refused": true}',
    '{"event": "costmeter.budget.warning", "budget": "daily"}',
    '{"event": "costmeter\\u002ecall", "model": "m", "cost_usd": 1}',
    '{"event": "app", "msg": "costmeter.call"}',
    '{"event": "costmeter.call", "model": "m", "cost_usd": 1.0, "note": "a,}b"}',
    '  {"event": "costmeter.call", "model": "m", "cost_usd": 1}',
    "\t",
    "",
    '{"a": 1}',
    "[1, 2]",
]


def _otel(line: dict[str, Any]) -> str:
    return render(otel_genai_keys(None, "info", dict(line)))


def _events() -> list[dict[str, Any]]:
    events = make_events(150)
    for n, event in enumerate(events):
        if n % 5 == 0:
            event["cached_input_tokens"] = 2048  # savings, priced per model
            event["input_tokens"] = max(event["input_tokens"], 4096)
        if n % 7 == 0:
            event["budget_key"] = f"user-{n % 3}"
    return events


def _compact(event: dict[str, Any]) -> str:
    """costmeter's own writer: compact separators, non-ASCII as is."""
    return json.dumps(event, default=float, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A plain log (default style, compact and spaced), an otel-style gzip log, and the odd ones."""
    folder = tmp_path_factory.mktemp("logs")
    events = _events()
    plain = folder / "plain.jsonl"
    lines = [_compact(e) if n % 2 else render(e) for n, e in enumerate(events[:100])]
    plain.write_text("\n".join(lines + NOISE + AWKWARD) + "\n", encoding="utf-8")
    otel = folder / "otel.jsonl.gz"
    otel.write_bytes(gzip.compress(("\n".join(_otel(e) for e in events[100:]) + "\n\n").encode()))
    odd = folder / "odd.jsonl"
    odd.write_text("\n".join(ODD_LINES) + "\n")  # no newline at the end of the last one
    return [plain, otel, odd]


@pytest.fixture
def ran_in_duckdb(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files DuckDB added up (not left to Python)."""
    done: list[str] = []
    real = _report_duckdb.file_reports

    def spy(name: str, *args: Any) -> list[_report.Report]:
        found = real(name, *args)
        done.append(name)
        return found

    monkeypatch.setattr(_report_duckdb, "file_reports", spy)
    return done


def _outputs(reports: list[_report.Report]) -> str:
    out = io.StringIO()
    for report in reports:
        for write in (_report.write_table, _report.write_json, _report.write_csv):
            write(report, out)
        out.write(repr(sorted(report.refusals.items())) + "\n")
    return out.getvalue()


def _when(text: str | None) -> Any:
    return None if text is None else _report.event_time(text)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("by", GROUPINGS)
def test_duckdb_and_python_print_the_same_report(
    logs: list[Path], ran_in_duckdb: list[str], by: str, window: tuple[str | None, str | None]
) -> None:
    files = [str(path) for path in logs]
    since, until = _when(window[0]), _when(window[1])
    kwargs: dict[str, Any] = {"refusals": True}

    duck = _report.build_reports(files, [by], since, until, engine="duckdb", **kwargs)
    python = _report.build_reports(files, [by], since, until, engine="json", **kwargs)

    assert _outputs(python) == _outputs(duck)
    assert files == ran_in_duckdb
    assert duck[0].total.calls > 50


def test_several_groupings_at_once_as_the_html_page_reads_them(
    logs: list[Path], ran_in_duckdb: list[str]
) -> None:
    files = [str(path) for path in logs]
    bys = ["tag:team", _report.DAY_MODEL, "model", "budget"]

    duck = _report.build_reports(files, bys, None, None, engine="duckdb", refusals=True)
    python = _report.build_reports(files, bys, None, None, engine="msgspec", refusals=True)

    assert _outputs(python) == _outputs(duck)
    assert {"daily": 1, "(none)": 1, "nightly": 1, "5": 1} == dict(duck[0].refusals)
    assert len(ran_in_duckdb) == 3


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
def test_the_command_prints_the_same_with_either_engine(
    logs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """stdout, the notes on stderr and the exit code, byte for byte (html: the page)."""
    files = [str(path) for path in logs]
    seen = []
    for engine in ("duckdb", "python"):
        args = ["report", *files, "--by", "day", "--format", fmt, "--engine", engine]
        if fmt == "html":
            args += ["-o", str(tmp_path / f"{engine}.html")]
        code = main(args)
        out, err = capsys.readouterr()
        page = (tmp_path / f"{engine}.html").read_text() if fmt == "html" else ""
        seen.append((code, out, err, page))

    assert seen[0] == seen[1]
    assert "skipped" in seen[0][2]


def test_money_sums_are_exact_and_keep_their_exponent(tmp_path: Path) -> None:
    """0.10 + 0.2 is 0.30 (as Decimal adds them), and digits past a double's stay."""
    path = tmp_path / "exact.jsonl"
    costs = ["0.10", "0.2", "0.1234567890123456789", "1e-07", "3"]
    path.write_text(
        "".join(
            f'{{"event": "costmeter.call", "model": "m", "cost_usd": {cost}}}\n' for cost in costs
        )
    )

    report = _report.build_report([str(path)], "none", None, None, engine="duckdb")

    assert "3.4234568890123456789" == format(report.total.cost_usd, "f")


@pytest.mark.parametrize(
    "content",
    [
        b'{"event": "costmeter.call", "model": "\xff", "cost_usd": 1}\n',
        b"a\rb\n",
        b"a\x01b\n",
        b'{"event": "costmeter.call", "model": "m", "cost_usd": 2}\r\n',  # then a \n line
        b'{"event": "costmeter.call", "model": "m", "pad": "' + b"x" * (3 << 20) + b'"}\n',
    ],
    ids=["not UTF-8", "lone CR", "0x01 byte", "CRLF and LF", "a 3 MB line"],
)
def test_a_file_duckdb_cannot_split_into_lines_as_python_does_is_read_by_python(
    tmp_path: Path, ran_in_duckdb: list[str], content: bytes
) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_bytes(content + b'{"event": "costmeter.call", "model": "m", "cost_usd": 1}\n')

    duck = _report.build_report([str(path)], "model", None, None, engine="duckdb")
    python = _report.build_report([str(path)], "model", None, None, engine="json")

    assert _outputs([python]) == _outputs([duck])
    assert [] == ran_in_duckdb


def test_crlf_lines_are_read_in_duckdb(tmp_path: Path, ran_in_duckdb: list[str]) -> None:
    path = tmp_path / "crlf.jsonl"
    lines = [render(e) for e in make_events(20)] + NOISE
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")

    duck = _report.build_report([str(path)], "model", None, None, engine="duckdb")
    python = _report.build_report([str(path)], "model", None, None, engine="json")

    assert _outputs([python]) == _outputs([duck])
    assert [str(path)] == ran_in_duckdb


def test_a_name_duckdb_would_expand_is_opened_by_python_as_it_is(
    tmp_path: Path, ran_in_duckdb: list[str]
) -> None:
    """``costs[1].jsonl`` is a file name, not a glob matching ``costs1.jsonl``."""
    (tmp_path / "costs1.jsonl").write_text(render(make_events(1)[0]) + "\n")
    path = tmp_path / "costs[1].jsonl"
    path.write_text("\n".join(render(e) for e in make_events(5)) + "\n")

    report = _report.build_report([str(path)], "none", None, None, engine="duckdb")

    assert 5 == report.total.calls
    assert [] == ran_in_duckdb


def test_stdin_and_missing_files_are_the_python_engines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 3 == main(["report", str(tmp_path / "missing.jsonl"), "--engine", "duckdb"])
    assert "cannot read" in capsys.readouterr().err


def test_auto_is_the_python_engine(logs: list[Path], ran_in_duckdb: list[str]) -> None:
    _report.build_report([str(logs[0])], "model", None, None)

    assert [] == ran_in_duckdb


def test_cached_calls_on_both_sides_of_a_long_context_threshold(
    tmp_path: Path, ran_in_duckdb: list[str]
) -> None:
    """gpt-5.4 bills a whole request above 272k input tokens at its long-context rates: savings
    are priced per call side (here the file is left to Python, which prices each call)."""
    path = tmp_path / "long.jsonl"
    lines = [
        '{"event": "costmeter.call", "model": "gpt-5.4", "priced_as": "gpt-5.4",'
        f' "input_tokens": {tokens}, "cached_input_tokens": 100000, "cost_usd": 1}}'
        for tokens in (200_000, 300_000)
    ]
    path.write_text("\n".join(lines) + "\n")

    duck = _report.build_report([str(path)], "model", None, None, engine="duckdb")
    python = _report.build_report([str(path)], "model", None, None, engine="json")

    # 100k cached at (2.5 - 0.25) and 100k at the long-context (5 - 0.5) $/1M: 0.225 + 0.45
    assert "0.675" == format(duck.total.saved_usd.normalize(), "f")
    assert _outputs([python]) == _outputs([duck])
    assert [] == ran_in_duckdb


def test_cached_calls_below_a_long_context_threshold_stay_in_duckdb(
    tmp_path: Path, ran_in_duckdb: list[str]
) -> None:
    path = tmp_path / "short.jsonl"
    path.write_text(
        '{"event": "costmeter.call", "model": "gpt-5.4", "input_tokens": 200000,'
        ' "cached_input_tokens": 100000, "cost_usd": 1}\n'
    )

    duck = _report.build_report([str(path)], "model", None, None, engine="duckdb")

    assert Decimal("0.225") == duck.total.saved_usd  # 100k x (2.50 - 0.25) $/1M
    assert [str(path)] == ran_in_duckdb
