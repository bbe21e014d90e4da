"""
Web search fees by tool variant: what each billable search of a Responses call costs.

OpenAI prices the web search tool by the tool's version and the model's type, not by model
alone (API pricing, "Built-in tools" → "Web search tool call": developers.openai.com/api/docs/
pricing and openai.com/api/pricing; read 2026-12-03 from stored copies of both pages, the docs
page's source as of 2026-06-27):

=========================================  =================  ================================
tool version                               per call           search content tokens
=========================================  =================  ================================
``web_search`` (all models)                $10.00 / 1k calls  at the model's input rate [1]
``web_search_preview``, reasoning models   $10.00 / 1k calls  at the model's input rate
``web_search_preview``, non-reasoning      $25.00 / 1k calls  free
=========================================  =================  ================================

[1] gpt-4o-mini and gpt-4.1-mini with the non-preview tool: "search content tokens are charged as
a fixed block of 8,000 input tokens per call".

How costmeter applies it:

* The variant is the request's web search tool type (``web_search``/``web_search_2025_08_26``
  or ``web_search_preview``/``web_search_preview_2025_03_11``); a request offering both is priced
  at the dearer. Reasoning models are the o-series, gpt-5* and later (costmeter's one rule,
  shared with the estimator).
* Billable calls are ``tool_usage.web_search.num_requests`` ("discounted searches and actions
  such as opening a page are excluded"); a response without that field counts its
  ``web_search_call`` output items whose action is a ``search`` (opening or finding in a page
  is not a search).
* Content tokens billed at model rates arrive inside the response's ``input_tokens`` and are
  priced with them; the free ones of the non-reasoning preview are not in ``input_tokens``
  (recorded gpt-4.1 traffic: a 300-token prompt reports ~300 input tokens after a search). For
  the fixed-block models the input billed is at least 8,000 tokens per call: a usage reporting
  fewer is charged the shortfall at the model's input rate.
* The $10 rate is the price source's own per-search rate where it publishes one for the model
  (genai-prices ``web_searches``, or a prices file's ``web_search_per_call``), else the table's.
* Before sending, each search's worst case is its per-call fee plus, on the fixed-block models,
  the 8,000 input tokens; other content tokens have no published bound (the estimate says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from costmeter._money import ZERO, money_math
from costmeter._usage import field_of

__all__ = [
    "FIXED_BLOCK_TOKENS",
    "WebSearchRate",
    "counted_searches",
    "rate_for",
    "search_fee",
    "search_worst_case",
    "variant_rates",
]

_MILLION = Decimal(1_000_000)
STANDARD_PER_CALL = Decimal("0.01")  # $10.00 / 1k calls
PREVIEW_NON_REASONING_PER_CALL = Decimal("0.025")  # $25.00 / 1k calls
FIXED_BLOCK_TOKENS = 8000
_FIXED_BLOCK_MODELS = ("gpt-4o-mini", "gpt-4.1-mini")
_TOOL_TYPES: Mapping[str, str] = {
    "web_search": "web_search",
    "web_search_2025_08_26": "web_search",
    "web_search_preview": "web_search_preview",
    "web_search_preview_2025_03_11": "web_search_preview",
}


@dataclass(frozen=True, slots=True)
class WebSearchRate:
    """One variant's price: the fee per billable call and the input tokens billed per call."""

    variant: str
    per_call: Decimal
    content: str  # "model rates", "free" or "8,000 input tokens per call"
    fixed_input_tokens: int = 0


def _is_reasoning(model: str) -> bool:
    from costmeter._input_count import is_reasoning as rule  # noqa: PLC0415  (tokenizer: lazy)

    return rule(model)


def _fixed_block(model: str) -> bool:
    name = model.lower().rsplit("/", 1)[-1]
    return any(name == m or name.startswith(f"{m}-20") for m in _FIXED_BLOCK_MODELS)


def rate_for(tool: str, model: str, published: Decimal | None = None) -> WebSearchRate:
    """
    The price of one search with tool type *tool* on *model*; *published* is the price source's
    own per-search rate for the model (used for the $10 variants when non-zero).
    """
    standard = published or STANDARD_PER_CALL
    if _TOOL_TYPES.get(tool) == "web_search_preview":
        if _is_reasoning(model):
            return WebSearchRate("web_search_preview (reasoning)", standard, "model rates")
        return WebSearchRate(
            "web_search_preview (non-reasoning)", PREVIEW_NON_REASONING_PER_CALL, "free"
        )
    if _fixed_block(model):
        return WebSearchRate(
            "web_search", standard, "8,000 input tokens per call", FIXED_BLOCK_TOKENS
        )
    return WebSearchRate("web_search", standard, "model rates")


def variant_rates(model: str, published: Decimal | None = None) -> tuple[WebSearchRate, ...]:
    """Both tool versions' rates on *model* (for ``costmeter price``)."""
    return tuple(rate_for(tool, model, published) for tool in ("web_search", "web_search_preview"))


def _request_rate(
    body: Mapping[str, Any], model: str, published: Decimal | None
) -> WebSearchRate | None:
    """The dearest rate among the web search tools the request offers; ``None``: it offers none."""
    tools = body.get("tools")
    kinds = {
        tool.get("type")
        for tool in (tools if isinstance(tools, list) else ())
        if isinstance(tool, Mapping) and tool.get("type") in _TOOL_TYPES
    }
    rates = [rate_for(str(kind), model, published) for kind in sorted(kinds, key=str)]
    return max(rates, key=lambda r: (r.per_call, r.fixed_input_tokens), default=None)


def search_worst_case(
    body: Mapping[str, Any], model: str, published: Decimal | None, input_per_mtok: Decimal
) -> Decimal | None:
    """The most one search of the request can cost (fee + fixed-block tokens); ``None``: the
    request offers no web search tool."""
    rate = _request_rate(body, model, published)
    if rate is None:
        return None
    with money_math():
        return rate.per_call + rate.fixed_input_tokens * input_per_mtok / _MILLION


def search_fee(
    body: Mapping[str, Any],
    model: str,
    calls: int,
    input_tokens: int,
    published: Decimal | None,
    input_per_mtok: Decimal,
) -> Decimal:
    """
    What *calls* billable searches cost on top of the tokens priced from the usage: the
    variant's per-call fee, plus the fixed block's shortfall when *input_tokens* (the usage's
    input) is below 8,000 per call on a fixed-block model.
    """
    if calls <= 0:
        return ZERO
    rate = _request_rate(body, model, published) or rate_for("web_search", model, published)
    with money_math():
        shortfall = max(0, rate.fixed_input_tokens * calls - input_tokens)
        return calls * rate.per_call + shortfall * input_per_mtok / _MILLION


def counted_searches(response: Any) -> int | None:
    """
    The billable searches of *response*: ``tool_usage.web_search.num_requests`` when reported,
    else its ``web_search_call`` items whose action is a search; ``None``: neither is there.
    """
    reported = field_of(field_of(field_of(response, "tool_usage"), "web_search"), "num_requests")
    if isinstance(reported, int) and not isinstance(reported, bool):
        return max(reported, 0)
    items = [
        i for i in field_of(response, "output") or () if field_of(i, "type") == "web_search_call"
    ]
    if not items:
        return None
    actions = [field_of(field_of(i, "action"), "type") for i in items]
    return sum(1 for action in actions if action in (None, "search"))
