"""
What every ``costmeter`` subcommand shares: exit codes, how a message is said, how a command is
added, and the errors the entry point turns into exit codes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# The EXIT_* codes are public as `costmeter.cli`'s.
__all__ = ["PROG", "LedgerDown", "add_command", "parse_when", "say"]

EXIT_OK = 0
EXIT_NO_EVENTS = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_UNKNOWN_MODEL = 4
EXIT_LEDGER_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141

PROG = "costmeter"


def say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


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


def parse_when(text: str) -> datetime:
    """``--since``/``--until``: an ISO date or date-time; naive means UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2025-06-01 or 2025-06-01T12:00Z)"
        ) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


class LedgerDown(Exception):
    """A budget ledger could not be reached (exit 5)."""
