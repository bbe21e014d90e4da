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

Subcommands are registered from `_COMMANDS` (and ``costmeter._demo.register``): each adds
itself to the ``subparsers`` of the top-level parser and sets a ``handler(args) -> int`` default.
The report engine itself (reading and adding up logs) lives in `costmeter._report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

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
    from costmeter._pricing import ModelPrice

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


# -- price ---------------------------------------------------------------------------------------


def _price_dict(price: ModelPrice) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": price.model,
        "priced_as": price.priced_as,
        "service_tier": price.service_tier,
        "source": price.source,
        "input_per_mtok": format(price.input_per_mtok, "f"),
        "cached_input_per_mtok": format(price.cached_input_per_mtok, "f"),
        "cache_write_per_mtok": format(price.cache_write_per_mtok, "f"),
        "output_per_mtok": format(price.output_per_mtok, "f"),
        "web_search_per_call": format(price.web_search_per_call, "f"),
        "long_context_threshold": price.long_context_threshold,
        "long_context": None,
    }
    if price.long_context is not None:
        data["long_context"] = {
            key: data_value
            for key, data_value in _price_dict(price.long_context).items()
            if key.endswith("_per_mtok")
        }
    return data


_SHOWN_AS_TOKENS = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "web_searches"}
)
_SCALES = (("_mtok", "1M tokens"), ("_mchars", "1M characters"), ("_hours", "hour"),
           ("_kcount", "1k"), ("_kpages", "1k pages"), ("_gpixels", "1G pixels"))  # fmt: skip


def _other_rates(model: str) -> dict[str, str]:
    """Every further rate the model has (image, audio, per-character, per-hour, per-image), as
    published: {what: "$X / unit"}."""
    from costmeter._endpoints.images import DALLE_PRICES  # noqa: PLC0415
    from costmeter._money import money_math  # noqa: PLC0415
    from costmeter._rates import unit_rates  # noqa: PLC0415

    out: dict[str, str] = {}
    rates = unit_rates(model)
    if rates is not None:
        from genai_prices.data_units import unit_data  # noqa: PLC0415

        for unit, rate in rates.rates.items():
            if unit in _SHOWN_AS_TOKENS or unit not in unit_data:
                continue
            key = unit_data[unit]["price_key"]
            with money_math():
                published = (rate * unit_data[unit]["per"]).normalize()
            scale = next((label for suffix, label in _SCALES if key.endswith(suffix)), "unit")
            out[unit.replace("_", " ")] = f"${published:f} / {scale}"
    for (size, quality), price in DALLE_PRICES.get(model, {}).items():
        out[f"image {size} {quality}"] = f"${price:f} / image"
    return out


def _cmd_price(args: argparse.Namespace) -> int:
    from costmeter._endpoints._tools import CONTAINER_PER_SESSION, FILE_SEARCH_PER_CALL  # noqa: PLC0415
    from costmeter._errors import ConfigurationError, UnknownModelError  # noqa: PLC0415
    from costmeter._pricing import price_of  # noqa: PLC0415

    price = None
    try:
        price = price_of(args.model, service_tier=args.tier)
    except UnknownModelError as exc:
        unknown = str(exc)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    other = _other_rates(args.model)
    if price is None and not other:
        _say(unknown)
        return EXIT_UNKNOWN_MODEL
    tools = {}
    if price is not None:
        tools = {"file search": f"${FILE_SEARCH_PER_CALL:f} / call"}
        for memory, per_session in CONTAINER_PER_SESSION.items():
            tools[f"container {memory}"] = f"${per_session:f} / session"
    if args.format == "json":
        data = _price_dict(price) if price is not None else {"model": args.model}
        data["other_rates"] = other
        data["hosted_tools"] = tools
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout
    if price is not None:
        _write_token_prices(price, out)
    else:
        out.write(f"{args.model}: no per-token price; priced by:\n")
    for what, shown in other.items():
        out.write(f"  {what:<26} {shown}\n")
    for what, shown in tools.items():
        out.write(f"  {what:<26} {shown} (hosted tool)\n")
    return EXIT_OK


def _write_token_prices(price: ModelPrice, out: IO[str]) -> None:
    data = _price_dict(price)
    out.write(
        f"{price.model}: priced as {price.priced_as}, service tier {price.service_tier}, "
        f"source {price.source}\n"
        f"  input          ${data['input_per_mtok']} / 1M tokens\n"
        f"  cached input   ${data['cached_input_per_mtok']} / 1M tokens\n"
        f"  cache write    ${data['cache_write_per_mtok']} / 1M tokens\n"
        f"  output         ${data['output_per_mtok']} / 1M tokens (reasoning included)\n"
    )
    if price.web_search_per_call:
        out.write(f"  web search     ${data['web_search_per_call']} / call\n")
    long = data["long_context"]
    if long is not None:
        out.write(
            f"  above {price.long_context_threshold:,} input tokens the whole request costs: "
            f"input ${long['input_per_mtok']}, cached ${long['cached_input_per_mtok']}, "
            f"output ${long['output_per_mtok']} / 1M tokens\n"
        )


def _add_price(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "price",
        "show the prices costmeter uses for a model, and their source",
        "Show the prices (USD per 1M tokens) costmeter uses for MODEL and where "
        "they come from (override, COSTMETER_PRICES_FILE, genai-prices, tokencost).",
        "examples:\n  costmeter price gpt-5\n  costmeter price gpt-5-mini --tier flex "
        "--format json\n\nexit codes: 0 ok, 2 usage error, 4 no price known for the model.",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument(
        "--tier", default=None, help="service tier: default, flex, priority, batch, ..."
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_cmd_price)


# -- estimate ------------------------------------------------------------------------------------


def _read_body(path: str) -> dict[str, Any]:
    name = "<stdin>" if path == "-" else path  # how messages name the input
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(name, exc) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{name} must hold a JSON object (a request body)")
    return body


def _cmd_estimate(args: argparse.Namespace) -> int:
    from costmeter._errors import ConfigurationError, UnknownModelError  # noqa: PLC0415

    try:  # imported here: the other commands must work without it
        estimate: Any = importlib.import_module("costmeter._estimate").estimate
    except (ImportError, AttributeError):
        _say("estimate is not available in this version of costmeter")
        return EXIT_USAGE
    body = _read_body(args.request)
    body_model = body.pop("model", None)
    model = args.model or body_model
    if not isinstance(model, str) or not model:
        raise UsageError('no model: pass --model MODEL or put "model" in the request body')
    try:
        result = estimate(model=model, **body)
    except UnknownModelError as exc:
        _say(str(exc))
        return EXIT_UNKNOWN_MODEL
    except (ConfigurationError, TypeError) as exc:
        raise UsageError(f"cannot estimate this request: {exc}") from None
    cost = getattr(result, "cost_usd", None)
    reasons = [str(reason) for reason in getattr(result, "reasons", ()) or ()]
    data = {
        "model": getattr(result, "model", model),
        "input_tokens": getattr(result, "input_tokens", None),
        "max_output_tokens": getattr(result, "max_output_tokens", None),
        "output_bound_from_request": getattr(result, "output_bound_from_request", None),
        "cost_usd": None if cost is None else format(cost, "f"),
        "complete": getattr(result, "complete", None),
        "reasons": reasons,
        "price_source": getattr(result, "price_source", None),
    }
    # an unpriced model still prints its token estimate, but a script must be able to tell
    status = EXIT_OK if cost is not None else EXIT_UNKNOWN_MODEL
    if args.format == "json":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return status
    bound = "from the request" if data["output_bound_from_request"] else "costmeter's default"
    cost_text = "unknown (no price for this model)" if cost is None else f"${data['cost_usd']}"
    complete = "yes" if data["complete"] else "no"
    sys.stdout.write(
        f"model               {data['model']}\n"
        f"input tokens        {data['input_tokens']}\n"
        f"max output tokens   {data['max_output_tokens']} ({bound})\n"
        f"worst-case cost     {cost_text}"
        + (f" (prices: {data['price_source']})" if data["price_source"] else "")
        + "\n"
        f"complete estimate   {complete}\n"
    )
    for reason in reasons:
        sys.stdout.write(f"  - {reason}\n")
    return status


def _add_estimate(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "estimate",
        "worst-case cost of a request body, before sending it",
        "Estimate the input tokens and worst-case cost of a request body (the JSON "
        "you would pass to responses.create / chat.completions.create), offline.",
        "examples:\n  costmeter estimate --model gpt-5 request.json\n"
        '  echo \'{"input": "hi", "max_output_tokens": 500}\' | '
        "costmeter estimate --model gpt-5-mini\n\n"
        "exit codes: 0 ok, 2 usage error (bad JSON), 3 unreadable file, 4 unknown model.",
    )
    parser.add_argument("--model", help='the model (default: the body\'s "model")')
    parser.add_argument(
        "request", nargs="?", default="-", metavar="REQUEST.json", help="request body, or - (stdin)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_cmd_estimate)


# -- budget --------------------------------------------------------------------------------------


class _LedgerDown(Exception):
    """A budget ledger could not be reached (exit 5)."""


class _NoLedgerFile(Exception):
    """``budget show``/``reset`` named a SQLite ledger file that does not exist (exit 1)."""


def _open_budget_ledger(args: argparse.Namespace) -> Any:
    """
    The ledger to inspect. A SQLite file is opened read-only by ``show`` and must already exist
    (inspecting a budget must never create an empty ledger, e.g. at a mistyped path).
    """
    from costmeter._errors import ConfigurationError  # noqa: PLC0415
    from costmeter._ledger import SQLiteLedger, open_ledger, sqlite_path  # noqa: PLC0415

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
            _say(str(exc))
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
    from costmeter._ledger import parse_window, window_key  # noqa: PLC0415

    if args.window is None:
        try:
            return list(ledger.windows(_budget_name(args)))
        except LedgerError as exc:
            raise _LedgerDown(str(exc)) from None
    try:
        kind = None if args.window == "none" else parse_window(args.window)
        return [window_key(kind, time.time(), _zone(args.tz))]
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _cmd_budget_show(args: argparse.Namespace) -> int:
    from costmeter._errors import LedgerError  # noqa: PLC0415
    from costmeter._ledger import WindowState, redact  # noqa: PLC0415

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
        raise _LedgerDown(str(exc)) from None
    shown = args.name if args.key is None else f"{args.name} key {args.key!r}"
    if not found:
        _say(f"nothing recorded for budget {shown} in {redact(args.ledger)}")
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
        raise _LedgerDown(str(exc)) from None
    sys.stdout.write(
        f"budget {_budget_name(args)}: {_count(count, 'window')} removed from "
        f"{redact(args.ledger)}\n"
    )
    return EXIT_OK


def _add_budget(subparsers: Subparsers) -> None:
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


# -- the command ---------------------------------------------------------------------------------

# Built-in subcommands, then optional ones as (module, function): the function receives the
# subparsers and adds its command (with a ``handler`` default). A missing module means no command.
_COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _add_report,
    _add_price,
    _add_estimate,
    _add_budget,
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
    for register in _COMMANDS:
        register(subparsers)
    from costmeter import _demo  # noqa: PLC0415  (the demo imports this module)

    _demo.register(subparsers)
    from costmeter import _reconcile  # noqa: PLC0415

    _reconcile.register(subparsers)
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
    except _LedgerDown as exc:
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
