"""
The organization's bill, as `FakeAPI` serves it: the admin Usage and Costs endpoints
(``GET /v1/organization/usage/completions`` and ``GET /v1/organization/costs``, the SDK's
``client.admin.organization.usage.completions`` / ``.costs``), in the shapes of the SDK's
``UsageCompletionsResponse`` / ``UsageCostsResponse``, computed from the calls the server actually
answered, so ``costmeter reconcile`` can be tested end to end offline.

Every response the fake generates is billed once (streams cut short and background responses
included, as by the API) at the prices costmeter knows (`costmeter.price_of`), per UTC day, with
line items ``"<model>, input_tokens"``, ``"<model>, cached_input_tokens"`` and
``"<model>, output_tokens"`` (tier other than ``default`` in brackets after the model). Knobs on
`Bill` (``bill(server)``) make the bill differ from the logs the way real bills do: calls made
without costmeter (`Bill.add_call`), a price change on a day (`Bill.price_factor`), a tier billed
differently from what the response said (`Bill.billed_tier`), unmetered line items
(`Bill.add_line_item`) and short pages (`Bill.page_limit`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from costmeter._money import money_math
from costmeter.testing._api import FakeAPI
from costmeter.testing._reply import Reply
from costmeter.testing._routing import _BILLING_HOOKS, _Call, add_route
from costmeter.testing._usage import _Plan
from costmeter.testing._wire import _error_body

__all__ = ["Bill", "BilledCall", "bill"]

_DAY = 86_400
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class BilledCall:
    """One billed model request: when (Unix seconds), what, and how many tokens."""

    at: float
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    service_tier: str = "default"
    project_id: str = "proj_fake"
    api_key_id: str = "key_fake"
    batch: bool = False
    endpoint: str = "responses"


@dataclass
class Bill:
    """What the fake organization is billed. Thread-safe; change the knobs before querying."""

    calls: list[BilledCall] = field(default_factory=list)
    #: Multiply the amounts of a UTC day (``"YYYY-MM-DD"``) by this factor (a price change).
    price_factor: dict[str, Decimal] = field(default_factory=dict)
    #: Bill a served tier as another (e.g. ``{"default": "flex"}``): a tier mismatch.
    billed_tier: dict[str, str] = field(default_factory=dict)
    #: Extra line items: (UTC day, name, amount USD, project id). Storage, fine-tuning, ...
    line_items: list[tuple[str, str, Decimal, str]] = field(default_factory=list)
    #: At most this many buckets per page, whatever ``limit`` asks (to exercise paging).
    page_limit: int | None = None
    #: Project and API key ids given to the calls the server answers.
    project_id: str = "proj_fake"
    api_key_id: str = "key_fake"
    pages_served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_call(
        self,
        *,
        at: float | datetime,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        service_tier: str = "default",
        project_id: str | None = None,
        api_key_id: str | None = None,
        batch: bool = False,
    ) -> None:
        """A call billed to the organization that the server did not answer (made elsewhere)."""
        when = at.timestamp() if isinstance(at, datetime) else float(at)
        self.record(
            BilledCall(
                at=when,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_input_tokens,
                service_tier=service_tier,
                project_id=project_id or self.project_id,
                api_key_id=api_key_id or self.api_key_id,
                batch=batch,
            )
        )

    def add_line_item(
        self, day: str, name: str, amount: str | Decimal, project_id: str | None = None
    ) -> None:
        """An unmetered line item (e.g. ``"vector store storage"``) billed on *day*."""
        with self._lock:
            self.line_items.append((day, name, Decimal(amount), project_id or self.project_id))

    def record(self, call: BilledCall) -> None:
        with self._lock:
            self.calls.append(call)

    def clear(self) -> None:
        """Forget every billed call and line item (the knobs stay)."""
        with self._lock:
            self.calls.clear()
            self.line_items.clear()
            self.pages_served = 0

    def snapshot(self) -> tuple[list[BilledCall], list[tuple[str, str, Decimal, str]]]:
        with self._lock:
            self.pages_served += 1
            return list(self.calls), list(self.line_items)

    def amounts(self, call: BilledCall) -> dict[str, Decimal]:
        """The call's line items and their amounts (USD), at costmeter's prices for its tier."""
        from costmeter._errors import CostmeterError  # noqa: PLC0415
        from costmeter._pricing import price_of  # noqa: PLC0415

        tier = self.billed_tier.get(call.service_tier, call.service_tier)
        try:
            price = price_of(call.model, service_tier=tier).for_input(call.input_tokens)
        except CostmeterError:
            return {}
        factor = self.price_factor.get(_day(call.at), Decimal(1))
        name = call.model if tier == "default" else f"{call.model} ({tier})"
        uncached = call.input_tokens - call.cached_input_tokens
        with money_math():
            return {
                f"{name}, input_tokens": uncached * price.input_per_mtok * factor / _MILLION,
                f"{name}, cached_input_tokens": (
                    call.cached_input_tokens * price.cached_input_per_mtok * factor / _MILLION
                ),
                f"{name}, output_tokens": call.output_tokens
                * price.output_per_mtok
                * factor
                / _MILLION,
            }


def bill(server: FakeAPI) -> Bill:
    """The bill of *server*'s organization (created on first use, kept as long as the server)."""
    return server._state_of(Bill)


def _on_generated(server: FakeAPI, plan: _Plan, headers: Mapping[str, str]) -> None:
    usage = plan.usage()
    chat = plan.endpoint == "chat.completions"
    details = usage.get("prompt_tokens_details" if chat else "input_tokens_details") or {}
    owner = bill(server)
    owner.record(
        BilledCall(
            at=time.time(),
            model=plan.model,
            input_tokens=int(usage["prompt_tokens" if chat else "input_tokens"]),
            output_tokens=int(usage["completion_tokens" if chat else "output_tokens"]),
            cached_input_tokens=int(details.get("cached_tokens") or 0),
            service_tier=plan.service_tier,
            project_id=headers.get("openai-project") or owner.project_id,
            api_key_id=owner.api_key_id,
            endpoint=plan.endpoint,
        )
    )


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).date().isoformat()


# -- the endpoints -------------------------------------------------------------------------------


def _query(call: _Call) -> dict[str, list[str]]:
    """The query with repeated keys kept (the SDK sends lists as ``key[]=a&key[]=b``)."""
    out: dict[str, list[str]] = {}
    for key, values in parse_qs(call.query_string).items():
        out.setdefault(key.removesuffix("[]"), []).extend(values)
    return out


def _window(
    reply: Reply, query: dict[str, list[str]], max_limit: int
) -> tuple[list[int], int, int] | None:
    """Bucket starts, page start index and page size; ``None`` after answering 400."""
    try:
        start = int(query["start_time"][0])
        end = int(query["end_time"][0]) if "end_time" in query else int(time.time())
        limit = int(query.get("limit", ["7"])[0])
        first = int(query["page"][0].removeprefix("page_")) if "page" in query else 0
    except (KeyError, ValueError):
        reply.send_json(
            400, _error_body(400, "start_time is required; times, limit, page integers")
        )
        return None
    if query.get("bucket_width", ["1d"])[0] != "1d" or not 1 <= limit <= max_limit:
        reply.send_json(400, _error_body(400, f"only 1d buckets; limit 1..{max_limit}"))
        return None
    return list(range(start, end, _DAY)), first, limit


@dataclass(frozen=True)
class _Bucket:
    """One day bucket of a usage or costs page, and what its results are drawn from."""

    knobs: Bill
    calls: list[BilledCall]
    items: list[tuple[str, str, Decimal, str]]
    begin: int
    query: dict[str, list[str]]


def _page(server: FakeAPI, reply: Reply, call: _Call, max_limit: int, results_of: Any) -> None:
    """One page of day buckets, each with ``results_of(bucket)``."""
    query = _query(call)
    window = _window(reply, query, max_limit)
    if window is None:
        return
    starts, first, size = window
    knobs = bill(server)
    if knobs.page_limit is not None:
        size = min(size, knobs.page_limit)
    calls, items = knobs.snapshot()
    chosen = starts[first : first + size]
    data = [
        {
            "object": "bucket",
            "start_time": begin,
            "end_time": begin + _DAY,
            "results": results_of(_Bucket(knobs, calls, items, begin, query)),
        }
        for begin in chosen
    ]
    more = first + len(chosen) < len(starts)
    body = {
        "object": "page",
        "data": data,
        "has_more": more,
        "next_page": f"page_{first + len(chosen)}" if more else None,
    }
    reply.send_raw(200, _exact_json(body), "application/json")


def _exact_json(value: Any) -> bytes:
    """JSON with Decimals written as exact numbers (not quoted, not through binary floats)."""
    text = json.dumps(value, default=lambda d: f"\x00{d}\x00" if isinstance(d, Decimal) else d)
    return re.sub(r'"\\u0000([^"\\]*)\\u0000"', r"\1", text).encode()


def _wanted(call: BilledCall, query: dict[str, list[str]]) -> bool:
    return not (
        ("project_ids" in query and call.project_id not in query["project_ids"])
        or ("api_key_ids" in query and call.api_key_id not in query["api_key_ids"])
        or ("models" in query and call.model not in query["models"])
        or ("batch" in query and call.batch != (query["batch"][0] == "true"))
    )


def _usage_results(bucket: _Bucket) -> list[dict[str, Any]]:
    knobs, calls, begin, query = bucket.knobs, bucket.calls, bucket.begin, bucket.query
    group_by = set(query.get("group_by", []))
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for call in calls:
        if not begin <= call.at < begin + _DAY or call.endpoint == "embeddings":
            continue
        if not _wanted(call, query):
            continue
        tier = knobs.billed_tier.get(call.service_tier, call.service_tier)
        labels = {
            "project_id": call.project_id,
            "api_key_id": call.api_key_id,
            "model": call.model,
            "batch": call.batch,
            "service_tier": tier,
            "user_id": None,
            "api_source": "unlabeled",
        }
        shown = {k: (v if k in group_by else None) for k, v in labels.items()}
        row = groups.setdefault(
            tuple(shown.values()),
            {
                "object": "organization.usage.completions.result",
                "input_tokens": 0,
                "output_tokens": 0,
                "input_cached_tokens": 0,
                "input_uncached_tokens": 0,
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "num_model_requests": 0,
                **shown,
            },
        )
        row["input_tokens"] += call.input_tokens
        row["output_tokens"] += call.output_tokens
        row["input_cached_tokens"] += call.cached_input_tokens
        row["input_uncached_tokens"] += call.input_tokens - call.cached_input_tokens
        row["num_model_requests"] += 1
    return list(groups.values())


def _cost_results(bucket: _Bucket) -> list[dict[str, Any]]:
    knobs, calls, begin, query = bucket.knobs, bucket.calls, bucket.begin, bucket.query
    group_by = set(query.get("group_by", []))
    day = _day(begin)
    amounts: dict[tuple[Any, ...], Decimal] = {}

    def add(line_item: str, project_id: str, api_key_id: str | None, amount: Decimal) -> None:
        if "line_items" in query and line_item not in query["line_items"]:
            return
        key = (
            line_item if "line_item" in group_by else None,
            project_id if "project_id" in group_by else None,
            api_key_id if "api_key_id" in group_by else None,
        )
        with money_math():
            amounts[key] = amounts.get(key, Decimal(0)) + amount

    for call in calls:
        if begin <= call.at < begin + _DAY and _wanted(call, query):
            for line_item, amount in knobs.amounts(call).items():
                add(line_item, call.project_id, call.api_key_id, amount)
    for item_day, name, amount, project_id in bucket.items:
        if item_day == day and ("project_ids" not in query or project_id in query["project_ids"]):
            add(name, project_id, None, amount)
    return [
        {
            "object": "organization.costs.result",
            "amount": {"value": amount, "currency": "usd"},
            "line_item": line_item,
            "project_id": project_id,
            "api_key_id": api_key_id,
            "quantity": None,
            "quantity_unit": None,
            "user_id": None,
            "api_source": None,
        }
        for (line_item, project_id, api_key_id), amount in amounts.items()
    ]


def _usage_route(server: FakeAPI, reply: Reply, call: _Call) -> None:
    _page(server, reply, call, 31, _usage_results)


def _costs_route(server: FakeAPI, reply: Reply, call: _Call) -> None:
    _page(server, reply, call, 180, _cost_results)


add_route("GET", r"/v1/organization/usage/completions", _usage_route, billed=False)
add_route("GET", r"/v1/organization/costs", _costs_route, billed=False)
_BILLING_HOOKS.append(_on_generated)
