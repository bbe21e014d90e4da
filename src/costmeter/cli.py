"""
The ``costmeter`` command: read the money out of costmeter's JSON-lines logs, show prices, and
estimate a request before sending it.

Exit codes (also in ``costmeter --help``):

====  ==================================================================================
0     success
1     ``report``: no ``costmeter.call`` event found (in the files, after ``--since/--until``)
2     usage error: bad arguments, an unparsable ``--since``, a request body that is not JSON
3     a file could not be read (missing, unreadable, a directory, corrupt gzip)
4     no price known for the model (``price``, ``estimate``)
5     a budget ledger (SQLite, Redis) could not be reached (``budget``)
130   interrupted (Ctrl-C)
141   standard output closed early (e.g. piped into ``head``)
====  ==================================================================================

Subcommands are registered from `_COMMANDS` (``report`` here; ``price`` and ``estimate`` in
`costmeter._cli_prices`, ``budget`` in `costmeter._cli_budget`, ``demo`` and ``reconcile`` in
their modules): each adds itself with `add_command` and sets a ``handler(args) -> int`` default.
The report engine itself (reading and adding up logs) lives in `costmeter._report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

from costmeter._report import (
    Report,
    Unreadable,
    UsageError,
    build_report,
    write_csv,
    write_json,
    write_table,
)

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_LEDGER_UNAVAILABLE",
    "EXIT_NO_EVENTS",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_UNKNOWN_MODEL",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_NO_EVENTS = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_UNKNOWN_MODEL = 4
EXIT_LEDGER_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141

_PROG = "costmeter"
_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_GZIP_MAGIC = b"\x1f\x8b"

_QUICK_START = """\
quick start:
  Log every call as one JSON line (your own structlog setup is left untouched):

      import costmeter
      costmeter.log_to("costs.jsonl")        # or: export COSTMETER_LOG_FILE=costs.jsonl
      client = costmeter.OpenAI()

  Then read the money:

      costmeter report costs.jsonl                     totals per model, plus a TOTAL row
      costmeter report costs.jsonl --by day            ... per UTC day
      costmeter report costs.jsonl --by tag:team       ... per value of the tag "team"
      costmeter report logs/*.jsonl.gz --since 2025-06-01 --format csv > june.csv
      kubectl logs deploy/api | costmeter report -     mixed app logs on stdin are fine
      costmeter price gpt-5 --tier flex                the prices costmeter uses, and their source
      costmeter estimate --model gpt-5 request.json    worst-case cost of a request body
      costmeter budget show daily --ledger sqlite:///budgets.db   a shared budget's books

exit codes:
  0 ok    1 no costmeter.call events found    2 usage error    3 unreadable file
  4 unknown model    5 budget ledger unavailable    130 interrupted
  141 output pipe closed
"""


def _say(message: str) -> None:
    print(f"{_PROG}: {message}", file=sys.stderr)


def add_command(
    subparsers: Subparsers, name: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """
    Add ``costmeter NAME``: *summary* is its line in ``costmeter --help``, *description* is
    wrapped to 80 columns, *epilog* (examples, exit codes) is printed as written.
    """
    return subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, width=80),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parse_when(text: str) -> datetime:
    """``--since``/``--until``: an ISO date or date-time; naive means UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2025-06-01 or 2025-06-01T12:00Z)"
        ) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


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


def _report_notes(report: Report) -> None:
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
        _say(f"read {report.lines:,} lines; skipped " + ", ".join(skipped))
    if report.total.saved_unknown_calls:
        _say(
            f"savings from caching not computed for {report.total.saved_unknown_calls:,} calls "
            "(no price known for their model)"
        )
    if report.total.unpriced_calls:
        _say(f"{report.total.unpriced_calls:,} calls have no price (cost_usd null): not in cost")


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
    _report_notes(report)
    if not report.total.calls:
        where = ", ".join(args.files)
        window = " in the --since/--until window" if args.since or args.until else ""
        _say(f"no costmeter.call events found in {where}{window}")
        return EXIT_NO_EVENTS
    return EXIT_OK


def _add_report(subparsers: Subparsers) -> None:
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
        "--since", type=_parse_when, metavar="ISO",
        help="only calls at or after this UTC date/time (e.g. 2025-06-01)",
    )  # fmt: skip
    parser.add_argument(
        "--until", type=_parse_when, metavar="ISO", help="only calls before this date/time"
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


class LedgerDown(Exception):
    """A budget ledger could not be reached (exit 5)."""


# -- the command ---------------------------------------------------------------------------------

# Subcommands as (module, function): the function receives the subparsers and adds its command
# (with a ``handler`` default).
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("costmeter.cli", "_add_report"),
    ("costmeter._cli_prices", "add_price"),
    ("costmeter._cli_prices", "add_estimate"),
    ("costmeter._cli_budget", "add_budget"),
    ("costmeter._demo", "register"),
    ("costmeter._reconcile", "register"),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``costmeter`` argument parser with every available subcommand."""
    from costmeter import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="costmeter: what your OpenAI calls cost, read from costmeter's logs.",
        epilog=_QUICK_START,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for module, function in _COMMANDS:  # imported here: they import this module
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``costmeter`` with *argv* (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argparse usage error
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 2)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except Unreadable as exc:
        _say(f"error: {exc}")
        return EXIT_UNREADABLE
    except LedgerDown as exc:
        _say(f"error: {exc}")
        return EXIT_LEDGER_UNAVAILABLE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly (and keep Python from complaining at exit).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return EXIT_PIPE_CLOSED
