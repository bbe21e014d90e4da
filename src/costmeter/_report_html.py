"""
``costmeter report --format html -o report.html``: one self-contained page a person looks at.

Charts: cost per UTC day stacked by model, cost by tag or budget, cache hit rate and money saved
by caching per model, input-estimate accuracy per model, and calls refused by each budget; then
the same table ``costmeter report`` prints. Everything is inline (CSS, a few lines of script, and
SVG drawn here, in Python, with no third-party code), and a Content-Security-Policy forbids any
load from outside, so the file works offline and shows the same thing anywhere. Every bar
carries its exact figure in ``data-value`` (money as an exact decimal string) and a tooltip.

Also home of `write_report`, the output side of ``costmeter report`` (any format, to stdout or
``-o FILE``), so the CLI stays a thin layer.
"""

from __future__ import annotations

import argparse
import html
import io
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal

from costmeter._money import money_math
from costmeter._report import DAY_MODEL, Report, UsageError, build_report, build_reports
from costmeter._report_output import (
    COLUMNS,
    cell,
    column_values,
    sorted_groups,
    write_csv,
    write_json,
    write_table,
)
from costmeter._report_totals import Totals

__all__ = ["render_html", "write_report"]

_ZERO = Decimal(0)
# A colour-blind-friendly categorical palette (Okabe-Ito), then greys.
_PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#666666",
)
_WIDTH = 760


def write_report(args: argparse.Namespace) -> Report:
    """
    Build the report ``costmeter report`` asked for and write it in ``args.format`` to
    ``args.output`` (a file) or stdout; returns the report (for the notes and the exit code).
    """
    if args.format == "html":
        bys = list(dict.fromkeys([args.by, DAY_MODEL, "model", _breakdown(args.by)]))
        reports = build_reports(
            args.files, bys, args.since, args.until, refusals=True, engine=_engine_of(args)
        )
        report = reports[0]
        by_key = dict(zip(bys, reports, strict=True))
        text = render_html(
            report,
            by_day_model=by_key[DAY_MODEL],
            by_model=by_key["model"],
            breakdown=by_key[_breakdown(args.by)],
            sources=args.files,
        )
    else:
        report = build_report(args.files, args.by, args.since, args.until, engine=_engine_of(args))
        buffer = io.StringIO()
        {"table": write_table, "json": write_json, "csv": write_csv}[args.format](report, buffer)
        text = buffer.getvalue()
    output = getattr(args, "output", None)
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    return report


def _per_group(
    report: Report, value: Callable[[Totals], Decimal | float | int | None]
) -> list[tuple[str, Decimal | float | int | None]]:
    """(group, *value* of its totals) for each group, in the report's order."""
    return [(key, value(totals)) for key, totals in sorted_groups(report)]


def _by_count(counts: Counter[str]) -> list[tuple[str, Decimal | float | int | None]]:
    """Most first, ties by name: the same page whichever engine, in whatever order, read them."""
    return [(key, n) for key, n in sorted(counts.items(), key=lambda kn: (-kn[1], kn[0]))]


def _engine_of(args: argparse.Namespace) -> str:
    engine = getattr(args, "engine", "auto")
    return engine if isinstance(engine, str) else "auto"


def _breakdown(by: str) -> str:
    """The grouping of the "cost by" chart: the report's tag, budget or api, else budget."""
    return by if by.startswith("tag:") or by in ("budget", "api") else "budget"


# -- the page ------------------------------------------------------------------------------------


def render_html(
    report: Report,
    *,
    by_day_model: Report,
    by_model: Report,
    breakdown: Report,
    sources: Sequence[str] = (),
) -> str:
    """The whole page as one string."""
    total = report.total
    refused = sum(report.refusals.values())
    tiles = [
        ("total cost", f"${total.cost_usd:,.6f}"),
        ("calls", f"{total.calls:,}"),
        ("cache hit rate", cell("ratio", total.cache_hit_rate)),
        ("saved by caching", f"${total.saved_usd:,.6f}"),
        ("estimate error (median)", cell("pct", total.error_median_pct)),
        ("refused by budgets", f"{refused:,}"),
    ]
    sections = [
        _section(
            "Cost per day, by model",
            "UTC days; each bar stacks the models' exact cost.",
            _stacked_days(by_day_model),
        ),
        *(
            _section(title, note, _bars(chart, _per_group(grouped, value), **style))
            for title, note, chart, grouped, value, style in (
                (
                    f"Cost by {breakdown.by}",
                    "Exact sums of cost_usd.",
                    "cost-by",
                    breakdown,
                    lambda t: t.cost_usd,
                    {"money": True},
                ),
                (
                    "Cache hit rate by model",
                    "Cached input tokens / input tokens.",
                    "cache-hit",
                    by_model,
                    lambda t: t.cache_hit_rate,
                    {"percent": True},
                ),
                (
                    "Saved by caching, by model",
                    "What the cached input tokens would have cost at "
                    "the uncached rate, at today's prices.",
                    "cache-saved",
                    by_model,
                    lambda t: t.saved_usd,
                    {"money": True},
                ),
                (
                    "Input-estimate accuracy by model",
                    "Median |estimated - reported| input "
                    "tokens, in % of the reported count (calls with reported usage).",
                    "estimate-error",
                    by_model,
                    lambda t: _pct(t.error_median_pct),
                    {"suffix": "%"},
                ),
            )
        ),
        _section(
            "Calls refused by budgets",
            "costmeter.budget.exceeded events with refused=true, per budget: never sent, never billed.",
            # ties by name: the same page whichever engine, and in whatever order, read the lines
            _bars("refusals", _by_count(report.refusals))
            if report.refusals
            else '<p class="none">No call was refused.</p>',
        ),
    ]
    window = ""
    if report.since or report.until:
        window = f" from {report.since or '…'} until {report.until or '…'}"
    title = "costmeter report"
    return _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(
            f"{', '.join(sources) or 'logs'}{window}: {report.lines:,} lines read"
        ),
        tiles="".join(
            f'<div class="tile"><div class="label">{html.escape(label)}</div>'
            f'<div class="figure">{html.escape(value)}</div></div>'
            for label, value in tiles
        ),
        sections="".join(sections),
        table=_table(report),
    )


def _pct(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 2)))


def _section(title: str, note: str, body: str) -> str:
    return (
        f"<section><h2>{html.escape(title)}</h2>"
        f'<p class="note">{html.escape(note)}</p>{body}</section>'
    )


def _exact(value: Decimal | float | int) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def _label(value: Decimal | float | int, money: bool, percent: bool, suffix: str) -> str:
    if percent:
        return f"{float(value):.1%}"
    if money:
        return f"${value:,.6f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value}{suffix}"


def _bars(
    name: str,
    items: Sequence[tuple[str, Decimal | float | int | None]],
    *,
    money: bool = False,
    percent: bool = False,
    suffix: str = "",
) -> str:
    """A horizontal bar chart; bars carry ``data-key`` and the exact ``data-value``."""
    shown = [(key, value) for key, value in items if value is not None]
    if not shown:
        return '<p class="none">No data.</p>'
    label_w, bar_w, row_h = 220, float(_WIDTH - 220 - 130), 24
    top = max((float(v) for _, v in shown), default=0.0) or 1.0
    height = row_h * len(shown) + 8
    parts = [
        f'<svg class="chart" data-chart="{name}" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" role="img" aria-label="{html.escape(name)}">'
    ]
    for i, (key, value) in enumerate(shown):
        y = 4 + i * row_h
        width = max(1.0, bar_w * float(value) / top) if float(value) > 0 else 0.0
        text = _label(value, money, percent, suffix)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" class="key">'
            f"{html.escape(_short(key))}</text>"
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{width:.2f}" height="{row_h - 6}" '
            f'fill="{_PALETTE[0]}" data-key="{html.escape(key)}" data-value="{_exact(value)}">'
            f"<title>{html.escape(key)}: {html.escape(text)}</title></rect>"
            f'<text x="{label_w + width + 6:.2f}" y="{y + 16}" class="value">'
            f"{html.escape(text)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(key: str, limit: int = 30) -> str:
    return key if len(key) <= limit else key[: limit - 1] + "…"


def _stacked_days(by_day_model: Report) -> str:
    """Cost per UTC day (x), stacked by model, with a legend; exact figures in the data."""
    cells: dict[str, dict[str, Decimal]] = {}
    model_totals: dict[str, Decimal] = {}
    with money_math():
        for key, totals in by_day_model.groups.items():
            day, _, model = key.partition(" ")
            cells.setdefault(day, {})[model] = totals.cost_usd
            model_totals[model] = model_totals.get(model, _ZERO) + totals.cost_usd
        day_totals = {day: sum(models.values(), _ZERO) for day, models in cells.items()}
    if not cells:
        return '<p class="none">No data.</p>'
    days = sorted(cells)
    models = sorted(model_totals, key=lambda m: (-model_totals[m], m))
    colour = {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(models)}
    left, bottom, plot_h = 70, 60, 260
    plot_w = _WIDTH - left - 10
    slot = plot_w / len(days)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    top = float(max(day_totals.values())) or 1.0
    legend_rows = (len(models) + 3) // 4
    height = plot_h + bottom + 20 * legend_rows + 10
    parts = [
        f'<svg class="chart" data-chart="cost-per-day" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" role="img" aria-label="cost per day by model">'
    ]
    for tick in range(5):  # y axis: 0, 25, 50, 75, 100 % of the tallest day
        y = 10 + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{_WIDTH - 10}" y1="{y:.2f}" y2="{y:.2f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.2f}" text-anchor="end" class="axis">'
            f"${top * tick / 4:,.4g}</text>"
        )
    every = max(1, len(days) // 12)
    for i, day in enumerate(days):
        x = left + slot * i + (slot - bar_w) / 2
        base = float(10 + plot_h)
        parts.append(
            f'<g class="day" data-key="{day}" data-value="{_exact(day_totals[day])}">'
            f"<title>{day}: ${day_totals[day]:,.6f}</title>"
        )
        for model in models:
            value = cells[day].get(model)
            if value is None:
                continue
            h = plot_h * float(value) / top
            base -= h
            parts.append(
                f'<rect class="bar" x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" '
                f'height="{h:.2f}" fill="{colour[model]}" data-key="{day}" '
                f'data-series="{html.escape(model)}" data-value="{_exact(value)}">'
                f"<title>{day} {html.escape(model)}: ${value:,.6f}</title></rect>"
            )
        parts.append("</g>")
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.2f}" y="{10 + plot_h + 16}" text-anchor="middle" '
                f'class="axis">{day[5:]}</text>'
            )
    for i, model in enumerate(models):
        lx = left + (i % 4) * (plot_w / 4)
        ly = 10 + plot_h + 36 + 20 * (i // 4)
        parts.append(
            f'<rect x="{lx:.2f}" y="{ly - 10}" width="12" height="12" fill="{colour[model]}"/>'
            f'<text x="{lx + 16:.2f}" y="{ly}" class="key legend">{html.escape(_short(model, 26))}'
            "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(report: Report) -> str:
    label = "model" if report.by == "model" else report.by
    header = [label if report.by != "none" else "", *(h for _c, h, _k in COLUMNS)]
    rows: list[tuple[str, Totals]] = [*sorted_groups(report), ("TOTAL", report.total)]
    body = []
    for key, totals in rows:
        values = column_values(totals)
        cells = "".join(
            f'<td data-col="{col}">{html.escape(cell(kind, values[col]))}</td>'
            for col, _h, kind in COLUMNS
        )
        css = ' class="total"' if key == "TOTAL" else ""
        body.append(f"<tr{css}><th>{html.escape(key)}</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return (
        f'<table id="report"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
  max-width: 1100px; color: #1b1b1b; padding: 0 16px; }}
h1 {{ margin: 0 0 4px; font-size: 22px; }}
h2 {{ font-size: 16px; margin: 28px 0 2px; }}
.sub, .note {{ color: #666; margin: 0 0 10px; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }}
.tile {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 140px; }}
.tile .label {{ color: #666; font-size: 12px; }}
.tile .figure {{ font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }}
svg.chart text {{ font-size: 12px; fill: #333; }}
svg.chart .axis {{ fill: #777; font-size: 11px; }}
svg.chart .grid {{ stroke: #eee; }}
svg.chart rect.bar:hover {{ opacity: .75; }}
.none {{ color: #777; font-style: italic; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin-top: 8px; font-variant-numeric: tabular-nums; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }}
tbody th, thead th:first-child {{ text-align: left; }}
tr.total {{ font-weight: 600; border-top: 2px solid #999; }}
footer {{ color: #888; font-size: 12px; margin-top: 28px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
<div class="tiles">{tiles}</div>
{sections}
<section><h2>Report</h2><div class="scroll">{table}</div></section>
<footer>Made by costmeter. Charts are inline SVG drawn by costmeter itself (MIT licence, no
third-party code); money figures are exact decimal sums.</footer>
<script>
(function () {{
  var charts = document.querySelectorAll("svg.chart");
  var bars = document.querySelectorAll("svg.chart rect.bar");
  document.body.setAttribute("data-charts", String(charts.length));
  document.body.setAttribute("data-bars", String(bars.length));
  document.body.setAttribute("data-rendered", "ok");
}})();
</script>
</body>
</html>
"""
