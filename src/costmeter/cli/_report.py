"""``costmeter report``: add up calls, tokens and cost from JSON-lines logs (`costmeter._report`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from costmeter._report import Report, UsageError, build_report, write_csv, write_json, write_table
from costmeter.cli._common import EXIT_NO_EVENTS, EXIT_OK, add_command, parse_when, say

if TYPE_CHECKING:
    from costmeter.cli._common import Subparsers

__all__ = ["add_report", "report_notes"]

_BY_CHOICES = ("model", "day", "budget", "budget_key", "api", "tag:KEY", "none")
_CSV_KEY_WITHOUT_GROUPS = "group"  # the CSV key column's header for --by none (only TOTAL rows)


def _parse_by(text: str) -> str:
    if text in _BY_CHOICES and text != "tag:KEY":
        return text
    if text.startswith("tag:") and len(text) > 4:
        return text
    raise argparse.ArgumentTypeError(
        f"invalid --by {text!r}: choose from {', '.join(_BY_CHOICES)} (e.g. tag:team)"
    )


def report_notes(report: Report) -> None:
    skipped = []
    if report.other_lines:
        skipped.append(f"{report.other_lines:,} other lines (not costmeter events)")
    if report.malformed_lines:
        skipped.append(f"{report.malformed_lines:,} malformed lines")
    if report.out_of_range:
        skipped.append(f"{report.out_of_range:,} calls outside --since/--until")
    if report.no_timestamp:
        skipped.append(f"{report.no_timestamp:,} calls without a readable timestamp")
    if skipped:
        say(f"read {report.lines:,} lines; skipped " + ", ".join(skipped))
    if report.total.saved_unknown_calls:
        say(
            f"savings from caching not computed for {report.total.saved_unknown_calls:,} calls "
            "(no price known for their model)"
        )
    if report.total.unpriced_calls:
        say(f"{report.total.unpriced_calls:,} calls have no price (cost_usd null): not in cost")


def _cmd_report(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be before --until")
    if args.format == "html" or args.output:
        from costmeter._report_html import write_report  # noqa: PLC0415

        report = write_report(args)  # the page with charts, or any format to -o FILE
    else:
        report = build_report(args.files, args.by, args.since, args.until, engine=args.engine)
        if args.format == "csv" and report.by == "none":
            # The key column's header is the grouping; "none" would read as a null key.
            report = dataclasses.replace(report, by=_CSV_KEY_WITHOUT_GROUPS)
        writer = {"table": write_table, "json": write_json, "csv": write_csv}[args.format]
        writer(report, sys.stdout)
    report_notes(report)
    if not report.total.calls:
        where = ", ".join(args.files)
        window = " in the --since/--until window" if args.since or args.until else ""
        say(f"no costmeter.call events found in {where}{window}")
        return EXIT_NO_EVENTS
    return EXIT_OK


def add_report(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "report",
        "add up calls, tokens and cost from JSON-lines logs",
        "Add up costmeter.call events from JSON-lines logs: calls, tokens, exact cost "
        "(Decimal sums), cache hit rate (cached/input tokens), money saved by caching "
        "(at today's prices), the accuracy of input-token estimates, unpriced calls and "
        "calls whose usage was estimated. Lines that are not costmeter events are skipped "
        "and counted on stderr, so mixed application logs can be read as they are. "
        "Files are streamed in constant memory; gzip is detected automatically.",
        "examples:\n"
        "  costmeter report costs.jsonl\n"
        "  costmeter report costs.jsonl.1.gz costs.jsonl --by day\n"
        "  costmeter report costs.jsonl --by tag:customer --since 2025-06-01 --format csv\n"
        "  docker logs api 2>&1 | costmeter report - --format json | jq .total.cost_usd\n\n"
        "groups: model (as requested), day (UTC), budget, api, tag:KEY, none.\n"
        "JSON/CSV money values are exact decimal strings; the table rounds to 6 places.\n"
        "exit codes: 0 ok, 1 no costmeter.call events, 2 usage error, 3 unreadable file.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log file, .gz file, or - (stdin)")
    parser.add_argument(
        "--by", type=_parse_by, default="model", metavar="KEY",
        help="group by " + ", ".join(_BY_CHOICES) + " (default: model)",
    )  # fmt: skip
    parser.add_argument(
        "--since", type=parse_when, metavar="ISO",
        help="only calls at or after this UTC date/time (e.g. 2025-06-01)",
    )  # fmt: skip
    parser.add_argument(
        "--until", type=parse_when, metavar="ISO", help="only calls before this date/time"
    )
    parser.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="write the report to FILE (html: one self-contained page with charts)",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=("auto", "python", "duckdb"), default="auto",
        help="what adds the logs up: python (auto) or duckdb (pip install 'costmeter[duckdb]'); "
        "the same report either way",
    )  # fmt: skip
    parser.set_defaults(handler=_cmd_report)
