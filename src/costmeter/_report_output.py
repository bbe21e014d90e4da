"""
``costmeter report``'s output: the table (money rounded to 6 places), JSON and CSV (money as
exact decimal strings, ratios rounded to 6 places), groups sorted by cost (by day: by date).
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from costmeter._report_totals import Totals

if TYPE_CHECKING:
    from costmeter._report import Report

__all__ = [
    "COLUMNS",
    "cell",
    "sorted_groups",
    "column_values",
    "write_csv",
    "write_json",
    "write_table",
]

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, table header, kind)
    ("calls", "calls", "int"),
    ("input_tokens", "input", "int"),
    ("cached_input_tokens", "cached", "int"),
    ("output_tokens", "output", "int"),
    ("reasoning_tokens", "reasoning", "int"),
    ("cost_usd", "cost $", "money"),
    ("cache_hit_rate", "cache hit", "ratio"),
    ("saved_by_cache_usd", "saved $", "money"),
    ("estimate_error_mean_pct", "est.err mean", "pct"),
    ("estimate_error_median_pct", "est.err median", "pct"),
    ("unpriced_calls", "unpriced", "int"),
    ("estimated_usage_calls", "est.usage", "int"),
)


def column_values(totals: Totals) -> dict[str, Any]:
    return {
        "calls": totals.calls,
        "input_tokens": totals.input_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "cache_write_input_tokens": totals.cache_write_input_tokens,
        "output_tokens": totals.output_tokens,
        "reasoning_tokens": totals.reasoning_tokens,
        "cost_usd": totals.cost_usd,
        "cache_hit_rate": totals.cache_hit_rate,
        "saved_by_cache_usd": totals.saved_usd,
        "saved_by_cache_unpriced_calls": totals.saved_unknown_calls,
        "estimate_error_calls": totals.accuracy_calls,
        "estimate_error_mean_pct": totals.error_mean_pct,
        "estimate_error_median_pct": totals.error_median_pct,
        "unpriced_calls": totals.unpriced_calls,
        "estimated_usage_calls": totals.estimated_usage_calls,
    }


def _plain(value: object) -> object:
    """JSON/CSV value: money as an exact decimal string, ratios rounded to 6 places."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return round(value, 6)
    return value


def sorted_groups(report: Report) -> list[tuple[str, Totals]]:
    if report.by == "day":
        return sorted(report.groups.items())
    return sorted(report.groups.items(), key=lambda kv: (-kv[1].cost_usd, kv[0]))


def cell(kind: str, value: Any) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{value:,}"
    if kind == "money":
        return f"{value:,.6f}"
    if kind == "ratio":
        return f"{value:.1%}"
    return f"{value:.2f}%"


def write_table(report: Report, out: IO[str]) -> None:
    label = "model" if report.by == "model" else report.by
    rows = [
        [key, *(cell(kind, column_values(t)[col]) for col, _h, kind in COLUMNS)]
        for key, t in sorted_groups(report)
    ]
    rows.append(["TOTAL", *(cell(kind, column_values(report.total)[c]) for c, _h, kind in COLUMNS)])
    header = [label if report.by != "none" else "", *(h for _c, h, _k in COLUMNS)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out.write(line(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows[:-1]:
        out.write(line(row) + "\n")
    if len(rows) > 1:
        out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(line(rows[-1]) + "\n")


def write_json(report: Report, out: IO[str]) -> None:
    data = {
        "by": report.by,
        "groups": [
            {"key": key, **{k: _plain(v) for k, v in column_values(t).items()}}
            for key, t in sorted_groups(report)
        ],
        "total": {k: _plain(v) for k, v in column_values(report.total).items()},
        "lines": {
            "read": report.lines,
            "other": report.other_lines,
            "malformed": report.malformed_lines,
            "out_of_range": report.out_of_range,
            "no_timestamp": report.no_timestamp,
        },
        "other_events": dict(sorted(report.other_events.items())),
    }
    json.dump(data, out, indent=2)
    out.write("\n")


def write_csv(report: Report, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    keys = list(column_values(report.total))
    writer.writerow([report.by, *keys])
    for key, totals in [*sorted_groups(report), ("TOTAL", report.total)]:
        values = column_values(totals)
        writer.writerow([key, *("" if values[k] is None else _plain(values[k]) for k in keys)])
