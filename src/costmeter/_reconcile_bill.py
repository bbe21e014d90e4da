"""
The two sides of ``costmeter reconcile``: what costmeter logged (`read_logged`, from the logs)
and what OpenAI billed (`fetch_bill`: the organization's Costs API, ``1d`` buckets by line item
and project, and the completions Usage API, tokens per model, tier and batch flag, read through
the SDK with an admin key, pages followed to the end, amounts as exact Decimals).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from costmeter._money import money_math
from costmeter._report import ReadStats, UsageError, event_time, read_events

__all__ = ["Bill", "BillUnavailable", "Tokens", "fetch_bill", "read_logged"]

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


def read_logged(
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
