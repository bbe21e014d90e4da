"""
``costmeter report --format html -o FILE``: one self-contained page whose charts hold the report's
exact numbers, checked in the file and in a real headless browser (Debian's chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from costmeter.cli import main

from .test_cli import make_events, render

REFUSED = [
    {"event": "costmeter.budget.exceeded", "budget": "nightly", "refused": True, "model": "gpt-5"},
    {"event": "costmeter.budget.exceeded", "budget": "nightly", "refused": True, "model": "gpt-5"},
    {"event": "costmeter.budget.exceeded", "budget": "daily", "refused": True, "model": "gpt-5"},
    {"event": "costmeter.budget.exceeded", "budget": "daily", "refused": False, "model": "gpt-5"},
]


class _Marks(HTMLParser):
    """Collects the chart marks (elements with data-value) and the body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[dict[str, str]] = []
        self.body: dict[str, str] = {}
        self.chart = ""
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = found
        if tag == "svg" and "data-chart" in found:
            self.chart = found["data-chart"]
        if "data-value" in found:
            self.marks.append({**found, "tag": tag, "chart": self.chart})
        for name in ("src", "href"):
            if name in found:
                self.external.append(found[name])
        if tag == "link":
            self.external.append(str(found))


def marks_of(text: str) -> _Marks:
    parser = _Marks()
    parser.feed(text)
    return parser


def values(marks: _Marks, chart: str, *, series: bool = False) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for mark in marks.marks:
        if mark["chart"] != chart or mark["tag"] != "rect":
            continue
        key = f"{mark['data-key']} {mark['data-series']}" if series else mark["data-key"]
        out[key] = Decimal(mark["data-value"])
    return out


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return make_events(90)


@pytest.fixture
def page(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    log = tmp_path / "costs.jsonl"
    log.write_text("".join(render(e) + "\n" for e in [*events, *REFUSED]))
    out = tmp_path / "report.html"
    assert 0 == main(["report", str(log), "--by", "tag:team", "--format", "html", "-o", str(out)])
    return out


def expected_per_day_model(events: list[dict[str, Any]]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for e in events:
        if e["cost_usd"] is not None:
            key = f"{e['timestamp'][:10]} {e['model']}"
            sums[key] = sums.get(key, Decimal(0)) + e["cost_usd"]
    return sums


def expected_per_team(events: list[dict[str, Any]]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for e in events:
        if e["cost_usd"] is not None:
            team = e["tags"]["team"]
            sums[team] = sums.get(team, Decimal(0)) + e["cost_usd"]
    return sums


def check_page(text: str, events: list[dict[str, Any]]) -> _Marks:
    """The charts hold the numbers computed from the events by hand."""
    marks = marks_of(text)
    assert expected_per_day_model(events) == values(marks, "cost-per-day", series=True)
    assert expected_per_team(events) == values(marks, "cost-by")
    assert {"nightly": 2, "daily": 1} == {k: int(v) for k, v in values(marks, "refusals").items()}
    models = {e["model"] for e in events}
    assert models == set(values(marks, "cache-hit"))
    hit = values(marks, "cache-hit")["gpt-5"]
    gpt5 = [e for e in events if e["model"] == "gpt-5"]
    ratio = sum(e["cached_input_tokens"] for e in gpt5) / sum(e["input_tokens"] for e in gpt5)
    assert round(ratio, 6) == float(hit)
    return marks


def test_page_is_self_contained_and_holds_the_numbers(
    page: Path, events: list[dict[str, Any]]
) -> None:
    text = page.read_text()

    marks = check_page(text, events)

    assert [] == marks.external  # no src/href/link: nothing is loaded from anywhere
    assert "http://" not in text
    assert "https://" not in text
    assert "default-src 'none'" in text
    total = sum((e["cost_usd"] for e in events if e["cost_usd"] is not None), Decimal(0))
    assert f"${total:,.6f}" in text  # the summary tile and the table's TOTAL row


def test_other_formats_go_to_the_output_file(
    tmp_path: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "costs.jsonl"
    log.write_text("".join(render(e) + "\n" for e in events))
    out = tmp_path / "report.json"

    assert 0 == main(["report", str(log), "--format", "json", "-o", str(out)])

    assert "" == capsys.readouterr().out
    assert len(events) == json.loads(out.read_text())["total"]["calls"]


def test_unwritable_output_is_a_usage_error(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    log = tmp_path / "costs.jsonl"
    log.write_text("".join(render(e) + "\n" for e in events))

    assert 2 == main(["report", str(log), "--format", "html", "-o", str(tmp_path)])


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium) - browser test skipped")
    return found


@pytest.mark.slow
def test_renders_in_a_headless_browser(
    page: Path, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Chromium runs the page's script without console errors; its DOM holds the figures."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert 0 == done.returncode, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert [] == console
    marks = check_page(done.stdout, events)
    assert "ok" == marks.body.get("data-rendered")  # set by the page's own script
    assert "6" == marks.body.get("data-charts")
    assert Counter(m["chart"] for m in marks.marks if m["tag"] == "rect") == Counter(
        {
            "cost-per-day": len(expected_per_day_model(events)),
            "cost-by": 2,
            "cache-hit": 3,
            "cache-saved": 3,
            "estimate-error": 3,
            "refusals": 2,
        }
    )
    assert str(sum(marks.marks[i]["tag"] == "rect" for i in range(len(marks.marks)))) == (
        marks.body.get("data-bars")
    )
