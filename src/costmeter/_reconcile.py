"""
``costmeter reconcile``: does what costmeter logged match what OpenAI billed?

The logged side is costmeter's own logs (any number of files, gzip, stdin, both key styles, read
by `costmeter._report.read_events`); the billed side is the organization's Costs API (``1d``
buckets grouped by line item and project: every dollar billed, including line items costmeter
never sees, such as storage) and completions Usage API (tokens per model, service tier and batch
flag), both read through the SDK (``client.admin.organization.usage``) with an admin key, so a
proxy's base URL or `costmeter.testing.FakeOpenAI` works as with any SDK call. Pages are followed
to the end. Billed amounts are read from the raw JSON as exact Decimals (the SDK's types hold them
as floats).

Days are UTC; ``--until`` is exclusive. Each row compares logged $ with billed $, and logged
tokens with billed tokens where the Usage API has them, and explains a gap: calls not made through
costmeter (tokens billed, nothing logged), a service tier billed differently from what the
response said, a price change (same tokens, different $), unmetered line items (billed items
that are not model tokens), a time-zone edge (a call counted on the neighbouring UTC day), or
unexplained. The tolerance applies per day: a row that covers the whole window (``--by model``)
may differ by the tolerance times the number of days.

Line items are matched by name: ``"<model>, <kind>"`` where the kind mentions ``cached``,
``input`` or ``output`` (a service tier other than default in brackets after the model); any other
line item is unmetered. Logs carry no project or API key id, so with ``--by project|api_key`` the
logged side is attributed to ``--project``/``--api-key-id`` when given, else to the only project
(or key) on the bill, else shown as ``(logs)``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from costmeter._reconcile_bill import (
    _DAY,
    BillUnavailable,
    Tokens,
    _admin_client,
    fetch_bill,
    read_logged,
)
from costmeter._reconcile_compare import Reconciliation, Row, _money, compare
from costmeter._report import UsageError
from costmeter.cli._common import add_command

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "EXIT_MISMATCH",
    "Reconciliation",
    "Row",
    "fetch_bill",
    "reconcile",
    "reconcile_demo",
    "register",
    "write_csv",
    "write_json",
    "write_table",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BILL_UNAVAILABLE = 5
#: Some row differs by more than the tolerance.
EXIT_MISMATCH = 6

BY = ("day", "model", "line_item", "project", "api_key")

# -- output --------------------------------------------------------------------------------------


def _tokens_cell(logged: int, billed: Tokens | None, name: str) -> str:
    if billed is None:
        return f"{logged:,}/-"
    return f"{logged:,}/{getattr(billed, name):,}"


def write_table(result: Reconciliation, out: IO[str]) -> None:
    header = [result.by, "logged $", "billed $", "diff $", "diff %"]
    header += ["input log/bill", "cached log/bill", "output log/bill", "explanation"]
    rows = []
    for row in [*result.rows, result.total]:
        rows.append(
            [
                row.key,
                _money(row.logged_usd),
                _money(row.billed_usd),
                _money(row.diff_usd),
                "-" if row.diff_pct is None else f"{row.diff_pct}%",
                _tokens_cell(row.logged_tokens.input, row.billed_tokens, "input"),
                _tokens_cell(row.logged_tokens.cached, row.billed_tokens, "cached"),
                _tokens_cell(row.logged_tokens.output, row.billed_tokens, "output"),
                row.explanation,
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        middle = (c.rjust(w) for c, w in zip(cells[1:-1], widths[1:], strict=True))
        return "  ".join([first, *middle, cells[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths) + "  " + "-" * 11
    out.write(line(header) + "\n" + rule + "\n")
    for cells in rows[:-1]:
        out.write(line(cells) + "\n")
    out.write(rule + "\n" + line(rows[-1]) + "\n")


def _row_dict(row: Row) -> dict[str, Any]:
    return {
        "key": row.key,
        "logged_usd": format(row.logged_usd, "f"),
        "billed_usd": format(row.billed_usd, "f"),
        "diff_usd": format(row.diff_usd, "f"),
        "diff_pct": None if row.diff_pct is None else format(row.diff_pct, "f"),
        "logged_tokens": row.logged_tokens.as_dict(),
        "billed_tokens": None if row.billed_tokens is None else row.billed_tokens.as_dict(),
        "within_tolerance": row.within_tolerance,
        "explanation": row.explanation,
    }


def write_json(result: Reconciliation, out: IO[str]) -> None:
    data = {
        "by": result.by,
        "since": result.since.isoformat(),
        "until": result.until.isoformat(),
        "tolerance_usd": format(result.tolerance_usd, "f"),
        "ok": result.ok,
        "rows": [_row_dict(row) for row in result.rows],
        "total": _row_dict(result.total),
    }
    json.dump(data, out, indent=2)
    out.write("\n")


def write_csv(result: Reconciliation, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    columns = ["key", "logged_usd", "billed_usd", "diff_usd", "diff_pct"]
    tokens = [f"{side}_{n}" for side in ("logged", "billed") for n in Tokens().as_dict()]
    writer.writerow([result.by, *columns[1:], *tokens, "within_tolerance", "explanation"])
    for row in [*result.rows, result.total]:
        data = _row_dict(row)
        billed = data["billed_tokens"] or {}
        writer.writerow(
            [
                *(data[c] if data[c] is not None else "" for c in columns),
                *data["logged_tokens"].values(),
                *(billed.get(n, "") for n in Tokens().as_dict()),
                row.within_tolerance,
                row.explanation,
            ]
        )


# -- the command ---------------------------------------------------------------------------------


def _utc_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def _tolerance(text: str) -> Decimal:
    from costmeter._errors import ConfigurationError  # noqa: PLC0415
    from costmeter._money import parse_amount  # noqa: PLC0415

    try:
        return parse_amount(text, "--tolerance")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def reconcile(
    files: Sequence[str],
    *,
    since: date,
    until: date | None = None,
    by: str = "day",
    project: str | None = None,
    api_key_id: str | None = None,
    tolerance: Decimal = Decimal("0.01"),
    client: Any = None,
    engine: str = "auto",
) -> Reconciliation:
    """
    Compare the logs in *files* with the organization's bill for the UTC days [since, until)
    (default: up to and including today). *client*: an ``openai.OpenAI`` with an admin key
    (default: one built from ``OPENAI_ADMIN_KEY`` and the SDK's environment).
    """
    if by not in BY:
        raise UsageError(f"invalid --by {by!r}: use {', '.join(BY)}")
    end = until or (datetime.now(timezone.utc).date() + _DAY)
    if since >= end:
        raise UsageError("--since must be before --until")
    start_at = datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    end_at = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    logged, stats, outside = read_logged(files, start_at, end_at, engine)
    bill = fetch_bill(
        client or _admin_client(), start_at, end_at, project=project, api_key_id=api_key_id
    )
    result = compare(
        logged,
        bill,
        by=by,
        since=since,
        until=end,
        tolerance=tolerance,
        project=project,
        api_key_id=api_key_id,
    )
    result.logged_lines = stats.lines
    result.calls_outside_window = outside
    result.bill_pages = bill.pages
    return result


def _cmd_reconcile(args: argparse.Namespace) -> int:
    try:
        result = reconcile(
            args.files,
            since=args.since,
            until=args.until,
            by=args.by,
            project=args.project,
            api_key_id=args.api_key_id,
            tolerance=args.tolerance,
        )
    except BillUnavailable as exc:
        sys.stderr.write(f"costmeter: error: {exc}\n")
        return EXIT_BILL_UNAVAILABLE
    writer = {"table": write_table, "json": write_json, "csv": write_csv}[args.format]
    writer(result, sys.stdout)
    off = [row for row in result.rows if not row.within_tolerance]
    if off:
        sys.stderr.write(
            f"costmeter: {len(off)} of {len(result.rows)} rows differ by more than "
            f"${result.tolerance_usd} per day\n"
        )
        return EXIT_MISMATCH
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    """Add ``reconcile`` to the ``costmeter`` command."""
    parser = add_command(
        subparsers,
        "reconcile",
        "compare the logged cost with OpenAI's bill (Usage and Costs APIs)",
        "Compare what costmeter logged with what the organization was billed, per UTC "
        "day, model, line item, project or API key: logged vs billed $, the difference, "
        "logged vs billed tokens (input, cached, output), and why they differ (calls not "
        "made through costmeter, a price change, a service tier billed differently, "
        "unmetered line items, time-zone edges). Reads the Costs and Usage APIs through "
        "the OpenAI SDK with OPENAI_ADMIN_KEY (OPENAI_BASE_URL is honoured).",
        "examples:\n"
        "  costmeter reconcile costs.jsonl --since 2025-06-01\n"
        "  costmeter reconcile logs/*.jsonl.gz --since 2025-06-01 --until 2025-07-01 "
        "--by model\n"
        "  costmeter reconcile costs.jsonl --since 2025-06-01 --by line_item --format csv\n\n"
        "Days are UTC; --until is exclusive (default: up to and including today).\n"
        "The tolerance is per day (a --by model row spans every day of the window).\n"
        "exit codes: 0 every row within tolerance, 2 usage error (or no OPENAI_ADMIN_KEY),\n"
        "3 unreadable file, 5 the Usage/Costs API could not be read,\n"
        "6 some row differs by more than the tolerance.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log file, .gz file, or - (stdin)")
    parser.add_argument("--since", type=_utc_day, required=True, metavar="YYYY-MM-DD")
    parser.add_argument(
        "--until", type=_utc_day, metavar="YYYY-MM-DD", help="exclusive (default: after today)"
    )
    parser.add_argument("--by", choices=BY, default="day")
    parser.add_argument("--project", metavar="ID", help="only this project (proj_...)")
    parser.add_argument("--api-key-id", metavar="ID", help="only this API key (key_...)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=Decimal("0.01"),
        metavar="USD",
        help="allowed difference per day (default 0.01)",
    )
    parser.set_defaults(handler=_cmd_reconcile)


def reconcile_demo(server: Any, log_path: str) -> tuple[str, bool]:
    """
    The demo's closing check: reconcile *log_path* against the bill of *server* (a running
    `costmeter.testing.FakeOpenAI`) for today, as a table, and whether every row matched.
    """
    import openai  # noqa: PLC0415

    client = openai.OpenAI(
        api_key="",
        admin_api_key="demo-admin-key",
        base_url=server.base_url,
        # A proxy in the environment must not capture loopback traffic.
        http_client=openai.DefaultHttpx2Client(trust_env=False),
    )
    today = datetime.now(timezone.utc).date()
    result = reconcile([log_path], since=today - _DAY, until=today + _DAY, by="day", client=client)
    out = io.StringIO()
    write_table(result, out)
    return out.getvalue(), result.ok
