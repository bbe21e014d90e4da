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
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import IO, TYPE_CHECKING, Any

from costmeter._money import money_math
from costmeter._report import ReadStats, UsageError, event_time, read_events

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
_ZERO = Decimal(0)
_DAY = timedelta(days=1)
_WANTED = frozenset(
    {
        "timestamp",
        "api",
        "input_cost_usd",
        "cached_input_cost_usd",
        "cache_write_cost_usd",
        "output_cost_usd",
        "tool_cost_usd",
    }
)
# Line-item kinds and the part of a logged cost that each one bills.
_KINDS = ("input_tokens", "cached_input_tokens", "output_tokens")


class BillUnavailable(Exception):
    """The Usage/Costs API could not be read (exit 5)."""


# -- the two sides -------------------------------------------------------------------------------


@dataclass
class Tokens:
    """Token counts (input includes cached) and the number of calls/requests."""

    input: int = 0
    cached: int = 0
    output: int = 0
    calls: int = 0

    def add(self, other: Tokens) -> None:
        self.input += other.input
        self.cached += other.cached
        self.output += other.output
        self.calls += other.calls

    def same_tokens(self, other: Tokens) -> bool:
        return (self.input, self.cached, self.output) == (other.input, other.cached, other.output)

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "cached": self.cached,
            "output": self.output,
            "calls": self.calls,
        }


@dataclass
class _Cell:
    """What one row adds up, on one side."""

    usd: Decimal = _ZERO
    tokens: Tokens = field(default_factory=Tokens)
    by_tier: dict[str, Tokens] = field(default_factory=dict)
    unmetered_usd: Decimal = _ZERO
    unmetered_items: set[str] = field(default_factory=set)
    has_tokens: bool = False


_NONE_BILLED = _Cell(has_tokens=True)  # read-only: a key the bill does not name


@dataclass(frozen=True)
class _Logged:
    """One logged call, reduced to what reconciling needs."""

    day: str
    model: str
    tier: str
    usd: Decimal
    parts: dict[str, Decimal]
    tokens: Tokens
    completions: bool  # counted by the completions Usage API (not embeddings)


@dataclass(frozen=True)
class _BilledCost:
    day: str
    line_item: str
    project_id: str | None
    api_key_id: str | None
    usd: Decimal


@dataclass(frozen=True)
class _BilledUsage:
    day: str
    model: str
    tier: str
    project_id: str | None
    api_key_id: str | None
    tokens: Tokens


@dataclass
class Bill:
    """The billed side: cost line items and completions usage per UTC day."""

    costs: list[_BilledCost] = field(default_factory=list)
    usage: list[_BilledUsage] = field(default_factory=list)
    pages: int = 0


def _line_item_parts(line_item: str) -> tuple[str, str, str] | None:
    """``(model, tier, kind)`` of a token line item, ``None`` for an unmetered one."""
    model, sep, kind = line_item.rpartition(", ")
    if not sep or not model:
        return None
    lowered = kind.lower()
    if "cached" in lowered:
        part = "cached_input_tokens"
    elif "input" in lowered:
        part = "input_tokens"
    elif "output" in lowered:
        part = "output_tokens"
    else:
        return None
    tier = "default"
    if model.endswith(")") and " (" in model:
        model, _, tier = model[:-1].rpartition(" (")
    return model, tier, part


def _line_item_name(model: str, tier: str, part: str) -> str:
    return f"{model if tier == 'default' else f'{model} ({tier})'}, {part}"


def _read_logged(
    files: Sequence[str], since: datetime, until: datetime, engine: str
) -> tuple[list[_Logged], ReadStats, int]:
    """The logged calls of [since, until), the read counts, and calls outside the window."""
    stats = ReadStats()
    calls: list[_Logged] = []
    outside = 0
    with money_math():
        for row in read_events(files, stats, engine=engine, wanted=_WANTED):
            when = event_time(row.timestamp)
            if when is None or not since <= when < until:
                outside += 1
                continue
            parts = {
                "input_tokens": (row.input_cost_usd or _ZERO) + (row.cache_write_cost_usd or _ZERO),
                "cached_input_tokens": row.cached_input_cost_usd or _ZERO,
                "output_tokens": row.output_cost_usd or _ZERO,
            }
            if row.tool_cost_usd:
                parts["tool calls"] = row.tool_cost_usd
            model = row.response_model or row.model
            tier = row.service_tier
            calls.append(
                _Logged(
                    day=when.astimezone(timezone.utc).date().isoformat(),
                    model=str(model or "(unknown)"),
                    tier=tier if isinstance(tier, str) and tier else "default",
                    usd=row.cost_usd or _ZERO,
                    parts=parts,
                    tokens=Tokens(
                        row.input_tokens or 0,
                        row.cached_input_tokens or 0,
                        row.output_tokens or 0,
                        1,
                    ),
                    completions=row.api != "embeddings",
                )
            )
    return calls, stats, outside


def _admin_client(base_url: str | None = None) -> Any:
    """An SDK client for the admin endpoints: ``OPENAI_ADMIN_KEY``, base URL the SDK's way."""
    if not os.environ.get("OPENAI_ADMIN_KEY"):
        raise UsageError(
            "reconcile reads the organization's Usage and Costs APIs: set OPENAI_ADMIN_KEY to an "
            "admin key (https://platform.openai.com/settings/organization/admin-keys)"
        )
    import openai  # noqa: PLC0415 - only this command needs the SDK

    # api_key="" so the SDK authenticates the admin endpoints with the admin key even when
    # OPENAI_API_KEY is set (it prefers the project key when it has one).
    return openai.OpenAI(api_key="", base_url=base_url, max_retries=3)


def _pages(fetch: Callable[..., Any], params: dict[str, Any], progress: _Progress) -> Iterator[Any]:
    """Every bucket of a paged admin endpoint, decoded with exact Decimals."""
    page: str | None = None
    while True:
        raw = fetch(**params, **({"page": page} if page else {}))
        progress.page()
        body = json.loads(raw.text, parse_float=Decimal)
        yield from body.get("data") or []
        page = body.get("next_page")
        if not body.get("has_more") or not page:
            return


class _Progress:
    """``reading the bill: N pages`` on a TTY's stderr."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.count = 0

    def page(self) -> None:
        self.count += 1
        if self.enabled:
            sys.stderr.write(f"\rcostmeter: reading the bill: {self.count} pages")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.count:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def fetch_bill(
    client: Any,
    since: datetime,
    until: datetime,
    *,
    project: str | None = None,
    api_key_id: str | None = None,
) -> Bill:
    """
    The Costs API (line items and projects, and API keys) and the completions Usage API (model,
    tier, batch, project, API key) for [since, until), every page.

    Raises:
        BillUnavailable: the API refused the key or could not be reached.
    """
    import openai  # noqa: PLC0415

    usage = client.admin.organization.usage.with_raw_response
    common: dict[str, Any] = {
        "start_time": int(since.timestamp()),
        "end_time": int(until.timestamp()),
        "bucket_width": "1d",
    }
    if project:
        common["project_ids"] = [project]
    if api_key_id:
        common["api_key_ids"] = [api_key_id]
    bill = Bill()
    progress = _Progress()
    try:
        for bucket in _pages(
            usage.costs,
            {**common, "group_by": ["line_item", "project_id", "api_key_id"], "limit": 31},
            progress,
        ):
            day = _bucket_day(bucket)
            for result in bucket.get("results") or []:
                amount = (result.get("amount") or {}).get("value")
                bill.costs.append(
                    _BilledCost(
                        day=day,
                        line_item=str(result.get("line_item") or "(no line item)"),
                        project_id=result.get("project_id"),
                        api_key_id=result.get("api_key_id"),
                        usd=_decimal(amount),
                    )
                )
        group_by = ["model", "service_tier", "batch", "project_id", "api_key_id"]
        for bucket in _pages(
            usage.completions, {**common, "group_by": group_by, "limit": 31}, progress
        ):
            day = _bucket_day(bucket)
            for result in bucket.get("results") or []:
                bill.usage.append(
                    _BilledUsage(
                        day=day,
                        model=str(result.get("model") or "(unknown)"),
                        tier=str(result.get("service_tier") or "default"),
                        project_id=result.get("project_id"),
                        api_key_id=result.get("api_key_id"),
                        tokens=Tokens(
                            int(result.get("input_tokens") or 0),
                            int(result.get("input_cached_tokens") or 0),
                            int(result.get("output_tokens") or 0),
                            int(result.get("num_model_requests") or 0),
                        ),
                    )
                )
    except openai.APIStatusError as exc:
        raise BillUnavailable(
            f"the Usage/Costs API answered {exc.status_code}: {exc.message}"
            + (" (is OPENAI_ADMIN_KEY an admin key?)" if exc.status_code in (401, 403) else "")
        ) from None
    except openai.APIError as exc:
        raise BillUnavailable(f"cannot reach the Usage/Costs API: {exc}") from None
    finally:
        progress.done()
    bill.pages = progress.count
    return bill


def _bucket_day(bucket: dict[str, Any]) -> str:
    start = int(bucket.get("start_time") or 0)
    return datetime.fromtimestamp(start, tz=timezone.utc).date().isoformat()


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    return _ZERO


# -- comparing -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One compared row: logged vs billed $ and tokens, the gap, and why."""

    key: str
    logged_usd: Decimal
    billed_usd: Decimal
    diff_usd: Decimal
    diff_pct: Decimal | None
    logged_tokens: Tokens
    billed_tokens: Tokens | None
    within_tolerance: bool
    explanation: str


@dataclass
class Reconciliation:
    by: str
    since: date
    until: date
    tolerance_usd: Decimal
    rows: list[Row]
    total: Row
    logged_lines: int = 0
    calls_outside_window: int = 0
    bill_pages: int = 0

    @property
    def ok(self) -> bool:
        return all(row.within_tolerance for row in self.rows)


def compare(
    logged: list[_Logged],
    bill: Bill,
    *,
    by: str,
    since: date,
    until: date,
    tolerance: Decimal,
    project: str | None = None,
    api_key_id: str | None = None,
) -> Reconciliation:
    """Rows of logged vs billed, keyed *by* day, model, line_item, project or api_key."""
    days = max(1, (until - since).days)
    logged_cells: dict[str, _Cell] = {}
    billed_cells: dict[str, _Cell] = {}
    owner = _owner(by, bill, project, api_key_id)

    def cell(cells: dict[str, _Cell], key: str) -> _Cell:
        found = cells.get(key)
        if found is None:
            found = cells[key] = _Cell()
        return found

    with money_math():
        for call in logged:
            if by == "line_item":
                for part, usd in call.parts.items():
                    key = _line_item_name(call.model, call.tier, part)
                    target = cell(logged_cells, key)
                    target.usd += usd
                    target.tokens.add(_part_tokens(call.tokens, part))
                continue
            key = {"day": call.day, "model": call.model}.get(by, owner)
            target = cell(logged_cells, key)
            target.usd += call.usd
            if call.completions:
                target.tokens.add(call.tokens)
                cell_tier = target.by_tier.setdefault(call.tier, Tokens())
                cell_tier.add(call.tokens)
        for cost in bill.costs:
            parts = _line_item_parts(cost.line_item)
            if by == "line_item":
                key = cost.line_item
            elif by == "day":
                key = cost.day
            elif by == "model":
                key = parts[0] if parts else cost.line_item
            elif by == "project":
                key = cost.project_id or "(no project)"
            else:
                key = cost.api_key_id or "(no API key)"
            target = cell(billed_cells, key)
            target.usd += cost.usd
            target.has_tokens = target.has_tokens or parts is not None
            if parts is None:
                target.unmetered_usd += cost.usd
                target.unmetered_items.add(cost.line_item)
        for used in bill.usage:
            if by == "line_item":
                for part in _KINDS:
                    key = _line_item_name(used.model, used.tier, part)
                    target = cell(billed_cells, key)
                    target.has_tokens = True
                    target.tokens.add(_part_tokens(used.tokens, part))
                continue
            key = {
                "day": used.day,
                "model": used.model,
                "project": used.project_id or "(no project)",
                "api_key": used.api_key_id or "(no API key)",
            }[by]
            target = cell(billed_cells, key)
            target.has_tokens = True
            target.tokens.add(used.tokens)
            target.by_tier.setdefault(used.tier, Tokens()).add(used.tokens)

        keys = sorted(set(logged_cells) | set(billed_cells))
        allowed = tolerance * (1 if by == "day" else days)
        # The Usage API was asked about every day: a key it did not name has 0 billed tokens.
        rows = [
            _row(key, logged_cells.get(key, _Cell()), billed_cells.get(key, _NONE_BILLED), allowed)
            for key in keys
        ]
        if by == "day":
            _explain_day_edges(rows, logged_cells, billed_cells)
        total_logged, total_billed = _Cell(), _Cell()
        for source, total in ((logged_cells, total_logged), (billed_cells, total_billed)):
            for item in source.values():
                total.usd += item.usd
                total.unmetered_usd += item.unmetered_usd
                total.unmetered_items |= item.unmetered_items
                total.has_tokens = total.has_tokens or item.has_tokens
                total.tokens.add(item.tokens)
                for tier, tokens in item.by_tier.items():
                    total.by_tier.setdefault(tier, Tokens()).add(tokens)
        total_row = _row("TOTAL", total_logged, total_billed, tolerance * days)
    return Reconciliation(by, since, until, tolerance, rows, total_row)


def _owner(by: str, bill: Bill, project: str | None, api_key_id: str | None) -> str:
    """The project / API key the logs are attributed to (logs do not carry either id)."""
    if by == "project":
        if project:
            return project
        ids = {c.project_id for c in bill.costs if c.project_id}
        return ids.pop() if len(ids) == 1 else "(logs)"
    if by == "api_key":
        if api_key_id:
            return api_key_id
        ids = {c.api_key_id for c in bill.costs if c.api_key_id}
        return ids.pop() if len(ids) == 1 else "(logs)"
    return ""


def _part_tokens(tokens: Tokens, part: str) -> Tokens:
    """The tokens one line item bills: uncached input, cached input or output."""
    if part == "input_tokens":  # the calls are counted once, with their input
        return Tokens(input=tokens.input - tokens.cached, calls=tokens.calls)
    if part == "cached_input_tokens":
        return Tokens(cached=tokens.cached)
    if part == "output_tokens":
        return Tokens(output=tokens.output)
    return Tokens()


def _row(key: str, logged: _Cell, billed: _Cell, allowed: Decimal) -> Row:
    diff = billed.usd - logged.usd
    pct = None if not logged.usd else (diff * 100 / logged.usd).quantize(Decimal("0.01"))
    within = abs(diff) <= allowed
    return Row(
        key=key,
        logged_usd=logged.usd,
        billed_usd=billed.usd,
        diff_usd=diff,
        diff_pct=pct,
        logged_tokens=logged.tokens,
        billed_tokens=billed.tokens if billed.has_tokens else None,
        within_tolerance=within,
        explanation="match" if within else _explain(logged, billed, allowed),
    )


def _explain(logged: _Cell, billed: _Cell, allowed: Decimal) -> str:
    """Why the two sides of a row differ, most specific cause first."""
    reasons: list[str] = []
    metered_gap = billed.usd - billed.unmetered_usd - logged.usd
    if billed.unmetered_usd:
        names = ", ".join(sorted(billed.unmetered_items))
        reasons.append(f"unmetered line items ${_money(billed.unmetered_usd)} ({names})")
    if billed.has_tokens and abs(metered_gap) > allowed:
        got, want = logged.tokens, billed.tokens
        if want.calls > got.calls and want.input >= got.input and want.output >= got.output:
            missing = want.calls - got.calls
            reasons.append(
                f"calls not made through costmeter: {missing:,} request{'' if missing == 1 else 's'}, "
                f"{want.input - got.input:,} input / {want.output - got.output:,} output tokens "
                "billed but not logged"
            )
        elif got.same_tokens(want) and _tiers(logged) != _tiers(billed):
            reasons.append(
                f"service tier: billed as {_tier_text(billed)}, logged as {_tier_text(logged)}"
            )
        elif got.same_tokens(want):
            reasons.append(
                f"a price change: same tokens, billed ${_money(billed.usd - billed.unmetered_usd)}"
                f" vs logged ${_money(logged.usd)}"
            )
    elif not billed.has_tokens and not logged.usd and abs(metered_gap) > allowed:
        reasons.append("billed, nothing logged: calls not made through costmeter")
    if not reasons:
        reasons.append("unexplained")
    return "; ".join(reasons)


def _tiers(cell: _Cell) -> dict[str, tuple[int, int, int]]:
    return {
        tier: (t.input, t.cached, t.output)
        for tier, t in cell.by_tier.items()
        if t.input or t.output
    }


def _tier_text(cell: _Cell) -> str:
    return "+".join(sorted(_tiers(cell))) or "-"


def _explain_day_edges(rows: list[Row], logged: dict[str, _Cell], billed: dict[str, _Cell]) -> None:
    """A day whose token gap the neighbouring day mirrors: calls counted on the other UTC day."""

    def gap(key: str) -> tuple[int, int, int] | None:
        got, want = logged.get(key), billed.get(key)
        if want is not None and not want.has_tokens:
            return None
        mine = got.tokens if got is not None else Tokens()
        if want is None:
            want = _NONE_BILLED
        return (
            want.tokens.input - mine.input,
            want.tokens.cached - mine.cached,
            want.tokens.output - mine.output,
        )

    for row in rows:
        if row.within_tolerance:
            continue
        here = gap(row.key)
        if not here or here == (0, 0, 0):
            continue
        day = date.fromisoformat(row.key)
        for neighbour in (day - _DAY, day + _DAY):
            there = gap(neighbour.isoformat())
            if there is not None and there == tuple(-n for n in here):
                row.explanation = (
                    f"time-zone edge: {abs(here[0]):,} input / {abs(here[2]):,} output tokens "
                    f"counted on {neighbour.isoformat()} by the {'bill' if here[0] < 0 else 'log'}"
                    " (days are UTC)"
                )
                break


# -- output --------------------------------------------------------------------------------------


def _money(value: Decimal) -> str:
    return f"{value:,.6f}"


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
    logged, stats, outside = _read_logged(files, start_at, end_at, engine)
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
    parser = subparsers.add_parser(
        "reconcile",
        help="compare the logged cost with OpenAI's bill (Usage and Costs APIs)",
        description=textwrap.fill(
            "Compare what costmeter logged with what the organization was billed, per UTC "
            "day, model, line item, project or API key: logged vs billed $, the difference, "
            "logged vs billed tokens (input, cached, output), and why they differ (calls not "
            "made through costmeter, a price change, a service tier billed differently, "
            "unmetered line items, time-zone edges). Reads the Costs and Usage APIs through "
            "the OpenAI SDK with OPENAI_ADMIN_KEY (OPENAI_BASE_URL is honoured).",
            width=80,
        ),
        epilog=(
            "examples:\n"
            "  costmeter reconcile costs.jsonl --since 2025-06-01\n"
            "  costmeter reconcile logs/*.jsonl.gz --since 2025-06-01 --until 2025-07-01 "
            "--by model\n"
            "  costmeter reconcile costs.jsonl --since 2025-06-01 --by line_item --format csv\n\n"
            "Days are UTC; --until is exclusive (default: up to and including today).\n"
            "The tolerance is per day (a --by model row spans every day of the window).\n"
            "exit codes: 0 every row within tolerance, 2 usage error (or no OPENAI_ADMIN_KEY),\n"
            "3 unreadable file, 5 the Usage/Costs API could not be read,\n"
            "6 some row differs by more than the tolerance."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
