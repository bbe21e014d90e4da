"""
Building a call's ``costmeter.call`` record (`costmeter._record.CallRecord`) from what the call
decided and saw: tokens and costs, the estimate, the budget's numbers after the charge (from
the settling transaction, never a second ledger read), and the content only when opted in.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING

from costmeter._pricing import Cost, normalize_tier
from costmeter._record import CallRecord
from costmeter._reservation import Settled
from costmeter._usage import Usage

if TYPE_CHECKING:
    from costmeter._meter import Call

__all__ = ["LostAttempt", "call_record"]


class LostAttempt(Exception):
    """An attempt whose response was lost (recorded, not raised); named after its error."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def call_record(
    call: Call,
    outcome: str,
    error: BaseException | None,
    usage: Usage,
    source: str,
    cost: Cost | None,
    price_status: str,
    total: Decimal | None,
    charged: Decimal | None,
    settled: list[Settled],
) -> CallRecord:
    """The ``costmeter.call`` event of one billed request (or of one lost attempt of it)."""
    seen = call.seen
    served = normalize_tier(seen.served_tier) if seen.served_tier else None
    requested = call.request.body.get("service_tier")
    requested = normalize_tier(requested) if isinstance(requested, str) else "default"
    audio = bool(usage.audio_input_tokens or usage.audio_output_tokens)
    images = bool(usage.image_input_tokens or usage.image_output_tokens)
    tools = bool(
        usage.file_search_calls
        or usage.container_sessions
        or usage.image_gen_input_tokens
        or usage.image_gen_output_tokens
    )
    content = call.config.log_content
    inner = call.budgets[-1] if call.budgets else None
    after = next((e for e in reversed(settled) if e.budget is inner), None)
    if inner is not None and after is None:  # nothing settled (not reserved): read it
        spent, remaining, key = inner.spent_usd, inner.remaining_usd, None
    elif after is not None:
        spent, remaining, key = after.spent_usd, after.remaining_usd, after.budget_key
    estimate = call.estimate
    held = estimate or call.bound  # admitted on a bound and never counted: what was held
    return CallRecord(
        api=call.api,
        model=call.model or seen.response_model,
        response_model=seen.response_model,
        response_id=seen.response_id,
        request_id=seen.request_id,
        stream=call.stream,
        background=seen.background,
        service_tier=served,
        requested_service_tier=requested if served and served != requested else None,
        outcome=outcome,
        error_type=_error_type(error),
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_input_tokens=usage.cache_write_input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        web_search_calls=usage.web_search_calls,
        usage_source=source,
        usage_problem=seen.usage_problem,
        estimated_input_tokens=None if estimate is None else estimate.input_tokens,
        estimated_cost_usd=None if held is None else held.cost_usd,
        estimate_complete=None if held is None else held.complete,
        estimate_reasons=list(held.reasons) if held is not None and not held.complete else None,
        cost_usd=total,
        input_cost_usd=cost.input_usd if cost else None,
        cached_input_cost_usd=cost.cached_input_usd if cost else None,
        cache_write_cost_usd=cost.cache_write_usd if cost else None,
        output_cost_usd=cost.output_usd if cost else None,
        tool_cost_usd=cost.tool_usd if cost else None,
        price_source=cost.price_source if cost else None,
        priced_as=cost.priced_as if cost else None,
        price_status=price_status,
        duration_ms=int((time.perf_counter() - call.started) * 1000),
        tags=dict(call.tags),
        audio_input_tokens=usage.audio_input_tokens if audio else None,
        audio_output_tokens=usage.audio_output_tokens if audio else None,
        audio_input_cost_usd=cost.audio_input_usd if audio and cost else None,
        audio_output_cost_usd=cost.audio_output_usd if audio and cost else None,
        image_input_tokens=usage.image_input_tokens if images else None,
        image_output_tokens=usage.image_output_tokens if images else None,
        images=usage.images or None,
        audio_seconds=usage.audio_seconds or None,
        input_characters=usage.input_characters or None,
        file_search_calls=usage.file_search_calls if tools else None,
        container_sessions=usage.container_sessions if tools else None,
        image_gen_input_tokens=usage.image_gen_input_tokens if tools else None,
        image_gen_output_tokens=usage.image_gen_output_tokens if tools else None,
        region=call.config.region,
        budget=inner.name if inner else None,
        budget_spent_usd=spent if inner else None,
        budget_remaining_usd=remaining if inner else None,
        budget_key=key if inner else None,
        charged_usd=charged if inner else None,
        request_content=(
            {
                k: call.request.body[k]
                for k in ("instructions", "input", "messages", "prompt")
                if k in call.request.body
            }
            if content
            else None
        ),
        output_text=(("".join(seen.deltas) or seen.final_text()) if content else None),
    )


def _error_type(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.name if isinstance(error, LostAttempt) else type(error).__name__
