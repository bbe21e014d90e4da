"""
``costmeter budget show|reset NAME --ledger URL``: a persistent budget's books in a SQLite or Redis
ledger (a subcommand of `costmeter.cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from costmeter._report import UsageError
from costmeter.cli._common import (
    EXIT_NO_EVENTS,
    EXIT_OK,
    EXIT_USAGE,
    LedgerDown,
    add_command,
    say,
)

if TYPE_CHECKING:
    from costmeter.cli._common import Subparsers

__all__ = ["add_budget"]


class _NoLedgerFile(Exception):
    """``budget show``/``reset`` named a SQLite ledger file that does not exist (exit 1)."""


def _open_budget_ledger(args: argparse.Namespace) -> Any:
    """
    The ledger to inspect. A SQLite file is opened read-only by ``show`` and must already exist
    (inspecting a budget must never create an empty ledger, e.g. at a mistyped path).
    """
    from costmeter._errors import ConfigurationError  # noqa: PLC0415
    from costmeter._ledger import open_ledger, sqlite_path  # noqa: PLC0415
    from costmeter._ledger_sqlite import SQLiteLedger  # noqa: PLC0415

    try:
        if not args.ledger.lower().startswith("sqlite:"):
            return open_ledger(args.ledger, args.timeout)
        path = sqlite_path(args.ledger)
        if not os.path.exists(path):
            raise _NoLedgerFile(f"no ledger file at {path} (nothing recorded yet?)")
        if args.action == "show":
            return SQLiteLedger(args.ledger, path, args.timeout, read_only=True)
        return open_ledger(args.ledger, args.timeout)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _missing_file_is_nothing_recorded(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A ``budget`` action on a SQLite file that does not exist: say so, exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _NoLedgerFile as exc:
            say(str(exc))
            return EXIT_NO_EVENTS

    return run


def _budget_name(args: argparse.Namespace) -> str:
    """The stored name: the budget's, or ``NAME[KEY]`` for one key of a per-key budget."""
    from costmeter._ledger import ledger_name  # noqa: PLC0415

    return ledger_name(args.name, args.key)


def _budget_windows(args: argparse.Namespace, ledger: Any) -> list[str]:
    """The windows to act on: the current one of ``--window``, or every recorded one."""
    from costmeter._budget import _zone  # noqa: PLC0415
    from costmeter._errors import ConfigurationError, LedgerError  # noqa: PLC0415
    from costmeter._windows import parse_window, window_key  # noqa: PLC0415

    if args.window is None:
        try:
            return list(ledger.windows(_budget_name(args)))
        except LedgerError as exc:
            raise LedgerDown(str(exc)) from None
    try:
        kind = None if args.window == "none" else parse_window(args.window)
        return [window_key(kind, time.time(), _zone(args.tz))]
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _cmd_budget_show(args: argparse.Namespace) -> int:
    from costmeter._admission import WindowState  # noqa: PLC0415
    from costmeter._errors import LedgerError  # noqa: PLC0415
    from costmeter._ledger import redact  # noqa: PLC0415

    ledger = _open_budget_ledger(args)
    name = _budget_name(args)
    found = []
    now = time.time()
    try:
        for window in _budget_windows(args, ledger):
            state = ledger.read(name, window)
            if state == WindowState():
                continue  # nothing recorded in this window
            state.expire(now)  # holds of dead processes no longer count
            remaining = None if state.limit is None else state.remaining(state.limit)
            found.append(
                {
                    "window": window,
                    "limit_usd": None if state.limit is None else format(state.limit, "f"),
                    "spent_usd": format(state.spent, "f"),
                    "reserved_usd": format(state.reserved, "f"),
                    "remaining_usd": None if remaining is None else format(remaining, "f"),
                    "calls": state.calls,
                    "refused": state.refused,
                    "in_flight": len(state.holds),
                    "by_model": {m: format(v, "f") for m, v in sorted(state.by_model.items())},
                }
            )
    except LedgerError as exc:
        raise LedgerDown(str(exc)) from None
    shown = args.name if args.key is None else f"{args.name} key {args.key!r}"
    if not found:
        say(f"nothing recorded for budget {shown} in {redact(args.ledger)}")
        return EXIT_NO_EVENTS
    if args.format == "json":
        doc = {"budget": args.name, "key": args.key, "windows": found}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"budget {shown} in {redact(args.ledger)}\n")
    for item in found:
        limit = "?" if item["limit_usd"] is None else f"${item['limit_usd']}"
        remaining = "?" if item["remaining_usd"] is None else f"${item['remaining_usd']}"
        out.write(
            f"  {item['window']}\n"
            f"    limit      {limit} (as last used)\n"
            f"    spent      ${item['spent_usd']} in {_count(item['calls'], 'call')} "
            f"({item['refused']} refused)\n"
            f"    reserved   ${item['reserved_usd']} by {_count(item['in_flight'], 'call')} "
            "in flight\n"
            f"    remaining  {remaining}\n"
        )
        for model, spent in item["by_model"].items():
            out.write(f"      {model:<30} ${spent}\n")
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cmd_budget_reset(args: argparse.Namespace) -> int:
    from costmeter._errors import LedgerError  # noqa: PLC0415
    from costmeter._ledger import redact  # noqa: PLC0415

    ledger = _open_budget_ledger(args)
    name = _budget_name(args)
    try:
        if args.window is None:
            count = ledger.reset(name)
        else:
            count = sum(ledger.reset(name, w) for w in _budget_windows(args, ledger))
    except LedgerError as exc:
        raise LedgerDown(str(exc)) from None
    sys.stdout.write(
        f"budget {_budget_name(args)}: {_count(count, 'window')} removed from "
        f"{redact(args.ledger)}\n"
    )
    return EXIT_OK


def add_budget(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "budget",
        "show or reset a budget kept in a SQLite or Redis ledger",
        "Inspect or reset a persistent budget (created with costmeter.budget(..., "
        "name=NAME, ledger=URL)).",
        "examples:\n"
        "  costmeter budget show daily --ledger sqlite:///budgets.db\n"
        "  costmeter budget show daily --ledger redis://127.0.0.1:6379/0 --window day "
        "--format json\n"
        "  costmeter budget show per-user --key alice --ledger sqlite:///budgets.db\n"
        "  costmeter budget reset daily --ledger sqlite:///budgets.db\n\n"
        "exit codes: 0 ok, 1 nothing recorded (show; or no such ledger file), 2 usage error, "
        "5 ledger unavailable.",
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION")
    for action, handler, text in (
        ("show", _cmd_budget_show, "spend, reservations and remaining, per window"),
        ("reset", _cmd_budget_reset, "forget the budget's spend and reservations"),
    ):
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("name", metavar="NAME", help="the budget's name")
        sub.add_argument(
            "--key",
            default=None,
            metavar="KEY",
            help="one key of a per-key budget (per='tag:user': the user)",
        )
        sub.add_argument(
            "--ledger",
            required=True,
            metavar="URL",
            help="sqlite:///path.db or redis://host:6379/0",
        )
        sub.add_argument(
            "--window",
            choices=("hour", "1h", "day", "1d", "month", "1mo", "none"),
            default=None,
            help="only the current window of this kind (none: the non-expiring total); "
            "default: every window recorded",
        )
        sub.add_argument("--tz", default=None, help="time zone of --window (default UTC)")
        sub.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            help="seconds to wait for the ledger (default 5)",
        )
        if action == "show":
            sub.add_argument("--format", choices=("table", "json"), default="table")
        sub.set_defaults(handler=_missing_file_is_nothing_recorded(handler))
    parser.set_defaults(handler=lambda _args: _usage_of(parser))


def _usage_of(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE
