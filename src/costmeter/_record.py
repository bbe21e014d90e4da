"""
The ``costmeter.call`` event, defined once.

`CallRecord` *is* the event: its fields, in order, are the event's keys, and each field's
``doc`` is the README's schema row (a test checks the README table against `schema`). Fields
marked ``when`` are present only in the events where they apply, so a plain text call's event
keeps the same keys whatever else the library meters. Everything that reads or writes the event
(emit, OTel names, the report's reader, the README) derives from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

__all__ = ["OTEL_NAMES", "CallRecord", "kinds", "markdown_rows", "otel_key", "schema"]


def _f(doc: str, kind: str, *, when: str | None = None, default: Any = None) -> Any:
    return field(default=default, metadata={"doc": doc, "kind": kind, "when": when})


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """
    One billed API call, as logged (see the module docstring).

    Built once per call and never changed; not ``frozen``: a frozen dataclass's ``__init__``
    sets each of these ~55 fields through ``object.__setattr__``, 3x the cost (~6 µs per call).
    """

    api: str = _f(
        "the endpoint (`responses`, `chat.completions`, `embeddings`, `audio.speech`, ...: see"
        ' "Endpoints and what they bill")',
        "str",
    )
    model: str | None = _f("the model the request asked for", "str \\| null")
    response_model: str | None = _f(
        "the model the response names (usually a dated snapshot)", "str \\| null"
    )
    response_id: str | None = _f("the response's id", "str \\| null")
    request_id: str | None = _f("the `x-request-id` of the HTTP response", "str \\| null")
    stream: bool = _f("the call was streamed", "bool", default=False)
    background: bool = _f("a `background=True` Responses call (or a batch)", "bool", default=False)
    service_tier: str | None = _f(
        "the tier that served the call, as the response reports it", "str \\| null"
    )
    requested_service_tier: str | None = _f(
        "the tier the request asked for, when it differs from the one that served it",
        "str",
        when="the served tier differs from the requested one",
    )
    outcome: str = _f("`ok`, `incomplete`, `failed`, `cancelled` or `error`", "str", default="ok")
    error_type: str | None = _f(
        "the exception class when the call raised (e.g. `InternalServerError`)", "str \\| null"
    )
    input_tokens: int = _f(
        "all input tokens, cached and cache-write ones included", "int", default=0
    )
    cached_input_tokens: int = _f(
        "input tokens read from the prompt cache (part of `input_tokens`)", "int", default=0
    )
    cache_write_input_tokens: int = _f(
        "input tokens written to the cache (part of `input_tokens`)", "int", default=0
    )
    output_tokens: int = _f("all output tokens, reasoning included", "int", default=0)
    reasoning_tokens: int = _f(
        "reasoning tokens (part of `output_tokens`, never added twice)", "int", default=0
    )
    web_search_calls: int = _f("web search tool calls the response reports", "int", default=0)
    usage_source: str = _f(
        "`reported` (the API's usage), `estimated` (a response arrived without usable usage: "
        "input estimate + counted text) or `reserved` (the request reached the API but its "
        "response was lost, or its cost could not be computed: charged the reserved worst case)",
        "str",
        default="reported",
    )
    usage_problem: str | None = _f(
        "why the reported usage was unusable", "str", when="the reported usage was unusable"
    )
    estimated_input_tokens: int | None = _f(
        "the pre-flight input estimate; null when nothing counted it (no budget, or a budget "
        "with room to spare admitted the call on its UTF-8 bound)",
        "int \\| null",
    )
    estimated_cost_usd: Decimal | None = _f(
        "the worst case the budgets reserved (exact, or that bound)", "number \\| null"
    )
    estimate_complete: bool | None = _f(
        "false when the request carries context the client cannot see", "bool \\| null"
    )
    estimate_reasons: list[str] | None = _f(
        "what the estimate could not see (`previous_response_id`, `input_file_not_seen`, ...); "
        "with a null `estimated_cost_usd`, why no reservation was possible",
        "list",
        when="the estimate is incomplete",
    )
    cost_usd: Decimal | None = _f(
        "the exact cost; null when it cannot be computed (see `price_status`)", "number \\| null"
    )
    input_cost_usd: Decimal | None = _f("uncached input part", "number \\| null")
    cached_input_cost_usd: Decimal | None = _f("cached input part", "number \\| null")
    cache_write_cost_usd: Decimal | None = _f("cache-write part", "number \\| null")
    output_cost_usd: Decimal | None = _f("output part (reasoning included)", "number \\| null")
    tool_cost_usd: Decimal | None = _f(
        "hosted-tool fees (web search, file search, containers, image generation)",
        "number \\| null",
    )
    price_source: str | None = _f(
        "`override`, `file:<path>`, `genai-prices`, `tokencost` or an endpoint's table",
        "str \\| null",
    )
    priced_as: str | None = _f(
        "the price entry used (e.g. `gpt-5` for `gpt-5-2025-08-07`)", "str \\| null"
    )
    price_status: str = _f(
        "`ok`; `unknown_model`, `unmapped_deployment`, `unpriced_audio_tokens`, `error` (cost "
        "null); `undated_model` (Azure family name: best guess)",
        "str",
        default="ok",
    )
    duration_ms: int = _f(
        "from before sending to the end of the response (or stream)", "int", default=0
    )
    tags: dict[str, Any] = _f("the active `costmeter.tags(...)`", "object", default=None)
    audio_input_tokens: int | None = _f(
        "audio input tokens (part of `input_tokens`)", "int", when="audio tokens were billed"
    )
    audio_output_tokens: int | None = _f(
        "audio output tokens (part of `output_tokens`)", "int", when="audio tokens were billed"
    )
    audio_input_cost_usd: Decimal | None = _f(
        "the audio share of `input_cost_usd`", "number \\| null", when="audio tokens were billed"
    )
    audio_output_cost_usd: Decimal | None = _f(
        "the audio share of `output_cost_usd`", "number \\| null", when="audio tokens were billed"
    )
    image_input_tokens: int | None = _f(
        "image input tokens (part of `input_tokens`)", "int", when="image tokens were billed"
    )
    image_output_tokens: int | None = _f(
        "image output tokens (part of `output_tokens`)", "int", when="image tokens were billed"
    )
    images: int | None = _f("images generated", "int", when="priced per image")
    audio_seconds: Decimal | None = _f(
        "audio billed by duration, in seconds", "number", when="billed by duration"
    )
    input_characters: int | None = _f("input characters", "int", when="priced per character")
    file_search_calls: int | None = _f(
        "hosted file-search calls ($2.50 per 1,000, in `tool_cost_usd`)",
        "int",
        when="hosted tools were billed",
    )
    container_sessions: int | None = _f(
        "code interpreter / shell container sessions (in `tool_cost_usd`)",
        "int",
        when="hosted tools were billed",
    )
    image_gen_input_tokens: int | None = _f(
        "tokens the image-generation tool read (in `tool_cost_usd`)",
        "int",
        when="hosted tools were billed",
    )
    image_gen_output_tokens: int | None = _f(
        "tokens the image-generation tool wrote (in `tool_cost_usd`)",
        "int",
        when="hosted tools were billed",
    )
    region: str | None = _f(
        "the data-residency region the client's host bills in (`eu`, `us`, `jp`, ...; "
        "+10% on the cost)",
        "str",
        when="the client uses a regional host",
    )
    budget: str | None = _f("the innermost budget's name", "str", when="inside a budget")
    budget_spent_usd: Decimal | None = _f(
        "what that budget has spent, this call included", "number", when="inside a budget"
    )
    budget_remaining_usd: Decimal | None = _f(
        "what a new call may still reserve in it", "number", when="inside a budget"
    )
    budget_key: str | None = _f(
        'the key a per-key budget (`per="tag:user"`) charged, e.g. the user',
        "str \\| null",
        when="inside a budget",
    )
    charged_usd: Decimal | None = _f(
        "what the budgets were charged: `cost_usd`, or the reserved worst case when the cost "
        "could not be computed (never $0 for a billed call)",
        "number",
        when="inside a budget",
    )
    request_content: dict[str, Any] | None = _f(
        "the request's `instructions`/`input`/`messages`", "object", when="`log_content=True`"
    )
    output_text: str | None = _f("the output text", "str \\| null", when="`log_content=True`")

    def as_event(self, usd: Any) -> dict[str, Any]:
        """The event's fields, money rendered by *usd*; ``when`` fields only where set."""
        present = {when for name, when in _OPTIONAL if getattr(self, name) is not None}
        out: dict[str, Any] = {}
        for name, when, money in _PLAN:
            if when is not None and when not in present:
                continue  # a group of fields is shown whole, or not at all
            value = getattr(self, name)
            out[name] = usd(value) if money else value
        return out


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    kind: str
    doc: str
    when: str | None
    optional: bool
    money: bool


_FIELDS = tuple(
    _Spec(
        f.name,
        f.metadata["kind"],
        f.metadata["doc"],
        f.metadata["when"],
        f.metadata["when"] is not None,
        f.name.endswith("_usd"),
    )
    for f in fields(CallRecord)
)
# What `CallRecord.as_event` walks once per call: (name, when, money), and the optional fields.
_PLAN = tuple((s.name, s.when, s.money) for s in _FIELDS)
_OPTIONAL = tuple((s.name, s.when) for s in _FIELDS if s.optional)


def schema() -> tuple[tuple[str, str, str], ...]:
    """(key, type, description) of every field, in event order (the README's table)."""
    return tuple(
        (s.name, s.kind, f"only when {s.when}: {s.doc}" if s.when else s.doc) for s in _FIELDS
    )


def markdown_rows() -> str:
    """The README's schema table rows (regenerate with
    ``python -c "from costmeter._record import markdown_rows; print(markdown_rows())"``)."""
    return "\n".join(f"| `{key}` | {kind} | {doc} |" for key, kind, doc in schema())


#: The OpenTelemetry GenAI names of the fields that have one (`costmeter.otel_genai_keys` writes
#: them; every other field but ``tags`` becomes ``costmeter.<name>``, see `otel_key`).
OTEL_NAMES = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cached_input_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_input_tokens": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "response_id": "gen_ai.response.id",
    "service_tier": "openai.response.service_tier",
    "cost_usd": "gen_ai.usage.cost.amount",
}


def otel_key(name: str) -> str:
    """The key field *name* is logged under with `costmeter.otel_genai_keys`."""
    return OTEL_NAMES.get(name, "costmeter." + name)


def kinds() -> dict[str, str]:
    """{field: its JSON type as the README's table gives it}, in event order."""
    return {s.name: s.kind for s in _FIELDS}
