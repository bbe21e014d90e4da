"""
Hosted-tool fees of the Responses API: what a response costs beyond the model's own tokens.

OpenAI bills hosted tools separately from the model (platform.openai.com/docs/pricing, "Built-in
tools", rates as of 2026-12-03):

* web search: per call, by tool version and model type (`costmeter._endpoints._websearch`),
  counted from ``tool_usage.web_search.num_requests`` (else the ``web_search_call`` items);
* file search: $2.50 per 1,000 calls, counted from the ``file_search_call`` output items;
* code interpreter (and hosted shell) containers: per container session, by the container's
  memory limit (1g $0.03, 4g $0.12, 16g $0.48, 64g $1.92), one session per distinct container
  a response used;
* the image generation tool: its ``tool_usage.image_gen`` tokens at the image model's rates
  (the tool's ``model``, ``gpt-image-1`` by default).

Before sending, the worst case of each hosted tool in the request is ``max_tool_calls`` calls
(when the request sets it) or `DEFAULT_TOOL_CALLS` calls (it does not: OpenAI publishes no
bound, so this is costmeter's documented assumption, like the default output bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from costmeter._endpoints._common import count
from costmeter._endpoints._websearch import counted_searches, variant_rates
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation
from costmeter._rates import unit_rates
from costmeter._usage import Usage, field_of

__all__ = [
    "DEFAULT_TOOL_CALLS",
    "hosted_tool_rates",
    "tool_fees",
    "tool_fees_bound",
    "with_tool_usage",
]

DEFAULT_TOOL_CALLS = 10
FILE_SEARCH_PER_CALL = Decimal("0.0025")
CONTAINER_PER_SESSION: Mapping[str, Decimal] = {
    "1g": Decimal("0.03"),
    "4g": Decimal("0.12"),
    "16g": Decimal("0.48"),
    "64g": Decimal("1.92"),
}
IMAGE_TOOL_MODEL = "gpt-image-1"
# The largest image one image-generation call can produce (gpt-image-1, high, 1536x1024).
IMAGE_TOOL_MAX_OUTPUT_TOKENS = 6240
_WEB_SEARCH_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26"})


def _hosted(body: Mapping[str, Any], kinds: frozenset[str] | str) -> list[Mapping[str, Any]]:
    tools = body.get("tools")
    names = {kinds} if isinstance(kinds, str) else kinds
    return [
        tool
        for tool in (tools if isinstance(tools, list) else ())
        if isinstance(tool, Mapping) and tool.get("type") in names
    ]


def _container_rate(body: Mapping[str, Any]) -> Decimal:
    """The per-session rate of the request's code interpreter container (1g by default)."""
    rate = CONTAINER_PER_SESSION["1g"]
    for tool in _hosted(body, frozenset({"code_interpreter", "shell"})):
        container = tool.get("container")
        limit = container.get("memory_limit") if isinstance(container, Mapping) else None
        rate = max(rate, CONTAINER_PER_SESSION.get(str(limit), rate))
    return rate


def _image_model(body: Mapping[str, Any]) -> str:
    for tool in _hosted(body, "image_generation"):
        model = tool.get("model")
        if isinstance(model, str) and model:
            return model
    return IMAGE_TOOL_MODEL


def with_tool_usage(seen: Observation) -> None:
    """Add the hosted-tool counts of the response just observed to its usage."""
    response = seen.final_response
    usage = seen.usage
    if usage is None or response is None:
        return
    file_searches = 0
    containers: set[str] = set()
    for item in field_of(response, "output") or ():
        kind = field_of(item, "type")
        if kind == "file_search_call":
            file_searches += 1
        elif kind in ("code_interpreter_call", "shell_call"):
            container = field_of(item, "container_id")
            containers.add(container if isinstance(container, str) else f"#{len(containers)}")
    image_gen = field_of(field_of(response, "tool_usage"), "image_gen")
    searches = counted_searches(response)
    if searches is not None and searches != usage.web_search_calls:
        usage = seen.usage = replace(usage, web_search_calls=searches)
    if not (file_searches or containers or image_gen):
        return
    seen.usage = replace(
        usage,
        file_search_calls=file_searches,
        container_sessions=len(containers),
        image_gen_input_tokens=max(count(image_gen, "input_tokens"), 0),
        image_gen_output_tokens=max(count(image_gen, "output_tokens"), 0),
    )


def tool_fees(usage: Usage, body: Mapping[str, Any]) -> Decimal:
    """The hosted-tool fees of *usage* beyond web search (which the model's price carries)."""
    if not (
        usage.file_search_calls
        or usage.container_sessions
        or usage.image_gen_input_tokens
        or usage.image_gen_output_tokens
    ):
        return ZERO
    with money_math():
        fees = usage.file_search_calls * FILE_SEARCH_PER_CALL
        fees += usage.container_sessions * _container_rate(body)
        if usage.image_gen_input_tokens or usage.image_gen_output_tokens:
            fees += _image_tokens_usd(
                _image_model(body), usage.image_gen_input_tokens, usage.image_gen_output_tokens
            )
    return fees


def _image_tokens_usd(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    rates = unit_rates(model)
    if rates is None:
        from costmeter._errors import UnknownModelError  # noqa: PLC0415

        raise UnknownModelError(model, ("genai-prices",))
    input_rate = rates.get("input_tokens") or ZERO
    output_rate = rates.get("output_image_tokens") or rates.get("output_tokens") or ZERO
    return input_tokens * input_rate + output_tokens * output_rate


def tool_fees_bound(body: Mapping[str, Any], web_search_per_call: Decimal) -> Decimal:
    """The most the request's hosted tools can add: `DEFAULT_TOOL_CALLS` or ``max_tool_calls``
    calls of the dearest tool it offers."""
    limit = body.get("max_tool_calls")
    calls = (
        limit
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        else DEFAULT_TOOL_CALLS
    )
    per_call: list[Decimal] = []
    with money_math():
        if _hosted(body, _WEB_SEARCH_TOOLS):
            per_call.append(web_search_per_call)
        if _hosted(body, "file_search"):
            per_call.append(FILE_SEARCH_PER_CALL)
        if _hosted(body, frozenset({"code_interpreter", "shell"})):
            per_call.append(_container_rate(body))
        if _hosted(body, "image_generation"):
            per_call.append(_image_tokens_usd(_image_model(body), 0, IMAGE_TOOL_MAX_OUTPUT_TOKENS))
        return calls * max(per_call, default=ZERO)


def hosted_tool_rates(model: str, web_search_per_call: Decimal | None) -> dict[str, str]:
    """
    Every hosted-tool rate a Responses call on *model* can be billed, as ``{what: "$X / unit"}``
    (for ``costmeter price``): each web search variant, file search, each container tier.
    *web_search_per_call* is the price source's own per-search rate for the model: the web
    search variants are listed only for a model the source prices searches for (the sign that
    it offers the tool; gpt-3.5, embeddings and realtime models do not).
    """
    rates = {
        rate.variant.split(" ")[0]: f"${rate.per_call:f} / call + content tokens: {rate.content}"
        for rate in (variant_rates(model, web_search_per_call) if web_search_per_call else ())
    }
    rates["file search"] = f"${FILE_SEARCH_PER_CALL:f} / call"
    for memory, per_session in CONTAINER_PER_SESSION.items():
        rates[f"container {memory}"] = f"${per_session:f} / session"
    return rates
