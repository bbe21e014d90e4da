"""
``costmeter report``'s decoders and readers give one report: msgspec or the standard library,
one process or a file cut into pieces read in parallel, default or otel key style.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costmeter
from costmeter import _report
from costmeter._otel_names import _COSTMETER_KEYS, _OTEL_RENAMES, otel_genai_keys
from costmeter._record import CallRecord

from .test_cli import NOISE, make_events, render

GROUPINGS = ("model", "day", "budget", "api", "tag:team", "tag:env", "none")

# Lines on which the two decoders could plausibly disagree: each must be classified the same.
ODD_LINES = [
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": "0.25"}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": 3}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": 1e-7}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": "lots"}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": true}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 1.0, "cost_usd": 0.1}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": true, "cost_usd": 0.1}',
    '{"event": "costmeter.call", "model": 5, "input_tokens": 7, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": null, "response_model": "gpt-4o", "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "tags": {"team": 1.5}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "tags": {"team": true}, "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "tags": ["team"], "cost_usd": 0.5}',
    '{"event": "costmeter.call", "model": "gpt-5", "tags": {"team": {"a": 1}}, "cost_usd": 1}',
    '{"event": "costmeter.call", "timestamp": 1748736000, "model": "gpt-5", "cost_usd": 2}',
    '{"event": "costmeter.call", "timestamp": 1748736000.5, "model": "gpt-5", "cost_usd": 2}',
    '{"event": "costmeter.call", "timestamp": "2025-06-01T23:30:00-02:00", "cost_usd": 2}',
    '{"event": "costmeter.call", "timestamp": "not a date", "model": "gpt-5", "cost_usd": 2}',
    '{"event": "costmeter.call", "timestamp": true, "model": "gpt-5", "cost_usd": 2}',
    '{"event": "costmeter.call", "budget": 7, "api": ["x"], "cost_usd": 0.125}',
    '{"event": "costmeter.call", "input_cost_usd": "abc", "output_cost_usd": true, "cost_usd": 1}',
    '{"event": "costmeter.call", "gen_ai.usage.input_tokens": null, "cost_usd": 9}',
    '{"event": "costmeter.call", "gen_ai.usage.input_tokens": 5, "costmeter.tags.team": 2}',
    '{"event": 42, "model": "costmeter.call"}',
    '{"event": "costmeter.warning", "warning": "x"}',
    '["costmeter.call"]',
    '"costmeter.call"',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": NaN}',
    '{"event": "costmeter.call", "model": "gpt-5", "input_tokens": 10, "cost_usd": 0.5',
    "   ",
    "costmeter.call happened",
]


def _log_lines() -> list[str]:
    events = make_events(120)
    lines = [render(e) for e in events]
    lines += [render(otel_genai_keys(None, "info", dict(e))) for e in events[:40]]
    lines += NOISE + ODD_LINES
    return lines


@pytest.fixture
def mixed_log(tmp_path: Path) -> Path:
    """Default-style and otel-style events, application noise and odd lines."""
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(_log_lines()) + "\n")
    return path


def _json_report(files: list[str], by: str, **kwargs: Any) -> str:
    out = io.StringIO()
    _report.write_json(_report.build_report(files, by, None, None, **kwargs), out)
    return out.getvalue()


@pytest.mark.parametrize("by", GROUPINGS)
def test_msgspec_and_stdlib_decoders_agree(mixed_log: Path, by: str) -> None:
    """Both decoders classify every line alike and add up to the same report, byte for byte."""
    fast = _json_report([str(mixed_log)], by, engine="msgspec", workers=1)
    pure = _json_report([str(mixed_log)], by, engine="json", workers=1)

    assert pure == fast
    data = json.loads(fast)
    assert data["lines"]["malformed"] > 0
    assert data["lines"]["other"] > 0


def test_decoders_agree_within_a_window(mixed_log: Path) -> None:
    """--since/--until read timestamps the same way in both decoders."""
    since = _report.event_time("2025-06-01T12:00:00Z")
    until = _report.event_time("2025-06-03T00:00:00Z")

    reports = [
        _report.build_report([str(mixed_log)], "day", since, until, engine=engine, workers=1)
        for engine in ("msgspec", "json")
    ]

    outs = []
    for report in reports:
        out = io.StringIO()
        _report.write_json(report, out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    assert reports[0].out_of_range > 0
    assert reports[0].no_timestamp > 0


def test_odd_lines_are_classified_as_documented(tmp_path: Path) -> None:
    """What each odd line counts as (hand-checked), in both decoders."""
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(ODD_LINES) + "\n")
    for engine in ("msgspec", "json"):
        report = _report.build_report([str(path)], "model", None, None, engine=engine)

        # cost "lots", true and NaN; tokens 1.0 and true; a JSON list and a JSON string; the
        # torn line; the text line that mentions costmeter.call but is not JSON
        assert 9 == report.malformed_lines, engine
        assert {"costmeter.warning": 1} == dict(report.other_events)
        assert 1 == report.other_lines  # event 42 (blank lines are not counted)
        assert len(ODD_LINES) == report.lines
        assert "5" in report.groups  # a non-string model is still a group


def test_parallel_pieces_give_the_same_report(
    mixed_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut into pieces read by forked workers adds up like one sequential read."""
    big = mixed_log.with_name("big.jsonl")
    big.write_bytes(mixed_log.read_bytes() * 5)
    sequential = _json_report([str(big)], "tag:team", workers=1)
    monkeypatch.setattr(_report, "_PARALLEL_MIN_BYTES", 0)
    assert len(_report._pieces(str(big), 3)) == 3

    for engine in ("msgspec", "json"):
        assert sequential == _json_report([str(big)], "tag:team", engine=engine, workers=3)


def test_pieces_cut_at_line_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line lands in exactly one piece; gzip and stdin are never cut."""
    monkeypatch.setattr(_report, "_PARALLEL_MIN_BYTES", 0)
    path = tmp_path / "lines.jsonl"
    lines = [f'{{"n": {n}, "pad": "{"x" * (n % 17)}"}}\n'.encode() for n in range(500)]
    path.write_bytes(b"".join(lines))

    pieces = _report._pieces(str(path), 4)
    read = [
        line
        for start, end in pieces
        for chunk in _report._read_piece(str(path), start, end, False)
        for line in chunk
    ]

    assert lines == read
    gz = tmp_path / "lines.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [(0, -1)] == _report._pieces(str(gz), 4)
    assert [(0, -1)] == _report._pieces("-", 4)


def test_a_missing_piece_file_is_unreadable_in_the_parent() -> None:
    """The error a worker raises crosses the process boundary intact."""
    import pickle

    error = _report.Unreadable("gone.jsonl", FileNotFoundError(2, "No such file or directory"))

    again = pickle.loads(pickle.dumps(error))

    assert "cannot read gone.jsonl: No such file or directory" == str(again)


def test_an_error_in_a_worker_process_is_raised_in_the_parent(
    mixed_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker's exception reaches the caller as it was raised (the child inherits the
    patched piece reader), and the report does not hang or leave the child behind."""
    monkeypatch.setattr(_report, "_PARALLEL_MIN_BYTES", 0)

    def vanished(name: str, *_args: object) -> list[_report.Report]:
        raise _report.Unreadable(name, FileNotFoundError(2, "No such file or directory"))

    monkeypatch.setattr(_report, "_piece_reports", vanished)

    with pytest.raises(_report.Unreadable, match="No such file or directory"):
        _report.build_report([str(mixed_log)], "model", None, None, workers=2)


def test_unknown_engine_is_a_usage_error(mixed_log: Path) -> None:
    with pytest.raises(_report.UsageError, match="unknown engine"):
        _report.build_report([str(mixed_log)], "model", None, None, engine="duck")


def test_exact_sums_by_hand(tmp_path: Path) -> None:
    """Money adds up exactly (values chosen so binary floats would not)."""
    path = tmp_path / "exact.jsonl"
    costs = ["0.1", "0.2", "0.0000001", "1e-7", "3"]
    path.write_text(
        "".join(
            json.dumps({"event": "costmeter.call", "model": "m", "cost_usd": "X"}).replace(
                '"X"', cost
            )
            + "\n"
            for cost in costs
        )
    )
    for engine in ("msgspec", "json"):
        report = _report.build_report([str(path)], "none", None, None, engine=engine)

        assert Decimal("3.3000002") == report.total.cost_usd


def test_otel_names_match_the_logging_processor() -> None:
    """The report reads exactly the keys `otel_genai_keys` writes."""
    for name, otel_key in _report.FIELD_KEYS:
        expected = _OTEL_RENAMES.get(name)
        if expected is None:
            assert name in _COSTMETER_KEYS
            expected = f"costmeter.{name}"
        assert expected == otel_key


def test_the_field_table_derives_from_the_record() -> None:
    """Every field the report reads is a `CallRecord` field, typed as the record types it, and
    its otel key is the one `otel_genai_keys` writes for a whole record."""
    record = {f.name: None for f in dataclasses.fields(CallRecord)}
    record["tags"] = {}
    renamed = otel_genai_keys(None, "info", {"event": "costmeter.call", **record})
    kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(CallRecord)}

    assert {name for name, _ in _report.FIELD_KEYS} == _report.REPORT_READS
    for name, otel_key in _report.FIELD_KEYS:
        assert name in kinds
        assert otel_key in renamed
        assert (name in _report.INT_FIELDS) == kinds[name].startswith("int")
        assert (name in _report.MONEY_FIELDS) == kinds[name].startswith("number")


def test_report_command_does_not_import_the_sdk(mixed_log: Path) -> None:
    """`costmeter report` reads logs without loading openai (or costmeter's clients)."""
    script = textwrap.dedent(
        f"""
        import sys
        from costmeter.cli import main
        code = main(["report", {str(mixed_log)!r}, "--format", "json"])
        heavy = sorted(m for m in ("openai", "costmeter._clients", "tiktoken") if m in sys.modules)
        print(code, heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )

    assert "0 []" == done.stdout.strip().splitlines()[-1]


class TestLazyPackage:
    def test_public_names_load_on_use(self) -> None:
        script = (
            "import sys, costmeter\n"
            "assert 'openai' not in sys.modules\n"
            "from costmeter import OpenAI\n"
            "assert 'openai' in sys.modules and OpenAI.__name__ == 'OpenAI'\n"
            "print('ok')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
        )

        assert "ok" == done.stdout.strip(), done.stderr

    def test_every_public_name_is_listed_and_resolves(self) -> None:
        assert set(costmeter.__all__) <= set(dir(costmeter))
        assert costmeter.OpenAI is costmeter._clients.OpenAI

    def test_unknown_names_raise_attribute_error(self) -> None:
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            _ = costmeter.nope  # type: ignore[attr-defined]
        with pytest.raises(AttributeError, match="no attribute '_nope'"):
            _ = costmeter._nope  # type: ignore[attr-defined]


def test_parallel_pieces_count_events_once_for_several_groupings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The html page reads several groupings at once; a file read in pieces counts each refusal
    and event once (the groupings share the counters)."""
    path = tmp_path / "refusals.jsonl"
    refusal = '{"event": "costmeter.budget.exceeded", "budget": "daily", "refused": true}'
    call = '{"event": "costmeter.call", "model": "m", "cost_usd": 1}'
    path.write_text("\n".join([refusal, call] * 2000) + "\n")
    monkeypatch.setattr(_report, "_PARALLEL_MIN_BYTES", 0)
    bys = ["model", "day+model", "budget"]

    reports = _report.build_reports([str(path)], bys, None, None, workers=2, refusals=True)

    assert {"daily": 2000} == dict(reports[0].refusals)
    assert {"costmeter.budget.exceeded": 2000} == dict(reports[2].other_events)
    assert 2000 == reports[1].total.calls


@pytest.mark.parametrize("engine", ["msgspec", "json"])
def test_estimate_errors_are_bucketed_as_round_to_hundredths(tmp_path: Path, engine: str) -> None:
    """
    A group's median estimate error is its error rounded to 0.01 pp as ``round()`` does
    (half to even on the binary value, so the exact ties 0.125 % and 0.375 % go to 0.12 and
    0.38), to 1 pp from 100 % up: one call per model, errors worked out by hand.
    """
    cases = {  # model: (input tokens, estimated input tokens, median error in %)
        "tie-down": (800, 801, 0.12),  # 1/800 = 0.125 %
        "tie-up": (800, 797, 0.38),  # 3/800 = 0.375 %
        "seventh": (7, 8, 14.29),  # 1/7 = 14.2857... %
        "two-thirds": (3, 5, 66.67),  # 2/3 = 66.666... %
        "exact": (4, 5, 25.0),
        "over": (8, 30, 275.0),  # 22/8 = 275 %
    }
    path = tmp_path / "errors.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "event": "costmeter.call",
                    "model": model,
                    "usage_source": "reported",
                    "input_tokens": used,
                    "estimated_input_tokens": estimated,
                    "cost_usd": 0.5,
                }
            )
            + "\n"
            for model, (used, estimated, _) in cases.items()
        )
    )

    groups = json.loads(_json_report([str(path)], "model", engine=engine, workers=1))["groups"]

    medians = {row["key"]: row["estimate_error_median_pct"] for row in groups}
    assert {model: median for model, (_, _, median) in cases.items()} == medians
