"""
Comparing the two sides of ``costmeter reconcile``: one `Row` per day, model, line item, project
or API key, with the gap and its explanation (calls not made through costmeter, a tier billed
differently, a price change, unmetered line items, a UTC-day edge, or unexplained).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from costmeter._money import money_math
from costmeter._reconcile_bill import (
    _DAY,
    _KINDS,
    _NONE_BILLED,
    Bill,
    Tokens,
    _Cell,
    _line_item_name,
    _line_item_parts,
    _Logged,
)

__all__ = ["Reconciliation", "Row", "compare"]


def _money(value: Decimal) -> str:
    return f"{value:,.6f}"


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
