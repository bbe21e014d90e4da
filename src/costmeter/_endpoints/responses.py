"""
The Responses API: ``responses.create``/``parse``/``stream`` (and ``beta.responses``), background
responses billed when a later ``retrieve``/``cancel``/stream replay sees them finish, and
``responses.compact``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from costmeter._endpoints import Request, Reserve
from costmeter._endpoints._text import TextEndpoint, requested_price
from costmeter._endpoints._tools import tool_fees, tool_fees_bound, with_tool_usage
from costmeter._endpoints._websearch import search_fee, search_worst_case
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation
from costmeter._pricing import Cost, price_of
from costmeter._usage import Usage

__all__ = ["ENDPOINTS"]


class Responses(TextEndpoint):
    """Tokens, plus the hosted tools' fees (`costmeter._endpoints._tools`)."""

    api = "responses"
    paths = (("post", r"/responses"),)
    lookups = (("get", r"/responses/([^/]+)"), ("post", r"/responses/([^/]+)/cancel"))

    def worst_case(self, request: Request, *, bound: bool) -> Reserve:
        reserve = super().worst_case(request, bound=bound)
        if reserve.cost_usd is None or not request.body.get("tools"):
            return reserve
        price = requested_price(request, None)
        per_search = ZERO
        if price is not None:
            per_search = (
                search_worst_case(
                    request.body,
                    price.priced_as,  # the canonical name (a dated or Azure name is not)
                    price.web_search_per_call,
                    price.input_per_mtok,
                )
                or ZERO
            )
        with money_math():
            cost = reserve.cost_usd + tool_fees_bound(request.body, per_search)
        return replace(reserve, cost_usd=cost)

    def observe(self, seen: Observation, obj: Any) -> None:
        usage = seen.usage
        seen.take(obj)
        if seen.usage is not usage:  # a response (or a stream's terminal event) was taken
            with_tool_usage(seen)

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        searches = usage.web_search_calls  # priced here, by tool variant, not at one model rate
        unsearched = replace(usage, web_search_calls=0) if searches else usage
        cost = super().price(model, unsearched, request, service_tier)
        fees = tool_fees(usage, request.body)
        if searches:
            rates = price_of(model, service_tier=service_tier)
            with money_math():
                fees += search_fee(
                    request.body,
                    rates.priced_as,
                    searches,
                    usage.input_tokens,
                    rates.web_search_per_call,
                    rates.input_per_mtok,
                )
        if not fees:
            return cost
        with money_math():
            return replace(cost, tool_usd=cost.tool_usd + fees, total_usd=cost.total_usd + fees)


class Compact(TextEndpoint):
    api = "responses.compact"
    paths = (("post", r"/responses/compact"),)


ENDPOINTS = (Compact(), Responses())
