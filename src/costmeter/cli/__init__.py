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

Subcommands are registered from `_COMMANDS` (``report`` in `costmeter.cli._report`, ``price``
and ``estimate`` in `costmeter.cli._prices`, ``budget`` in `costmeter.cli._budget`, ``demo`` in
`costmeter.cli._demo`, ``reconcile`` in `costmeter._reconcile`): each adds itself with
`add_command` (`costmeter.cli._common`, with the exit codes and `say`) and sets a
``handler(args) -> int`` default.
The report engine itself (reading and adding up logs) lives in `costmeter._report`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from costmeter._report import Unreadable, UsageError
from costmeter.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_LEDGER_UNAVAILABLE,
    EXIT_NO_EVENTS,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_UNKNOWN_MODEL,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    PROG,
    LedgerDown,
    add_command,
    say,
)

if TYPE_CHECKING:
    from costmeter.cli._common import Subparsers as Subparsers

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_LEDGER_UNAVAILABLE",
    "EXIT_NO_EVENTS",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_UNKNOWN_MODEL",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "add_command",
    "main",
]


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


# -- the command ---------------------------------------------------------------------------------

# Subcommands as (module, function): the function receives the subparsers and adds its command
# (with a ``handler`` default).
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("costmeter.cli._report", "add_report"),
    ("costmeter.cli._prices", "add_price"),
    ("costmeter.cli._prices", "add_estimate"),
    ("costmeter.cli._budget", "add_budget"),
    ("costmeter.cli._demo", "register"),
    ("costmeter._reconcile", "register"),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``costmeter`` argument parser with every available subcommand."""
    from costmeter import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog=PROG,
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
        say(f"error: {exc}")
        return EXIT_USAGE
    except Unreadable as exc:
        say(f"error: {exc}")
        return EXIT_UNREADABLE
    except LedgerDown as exc:
        say(f"error: {exc}")
        return EXIT_LEDGER_UNAVAILABLE
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly (and keep Python from complaining at exit).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return EXIT_PIPE_CLOSED
