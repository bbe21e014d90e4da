"""
Small pieces every endpoint module prices with: reading a count from a usage object, finding the
first model name that has published unit rates, and building a `Cost` from its parts.

Endpoints priced per unit (images, audio seconds, characters, Realtime token kinds) have no
cache writes, no hosted-tool fees and one service tier, so their `Cost` is its input, cached
input and output parts and the exact sum of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from costmeter._money import ZERO, money_math
from costmeter._pricing import Cost
from costmeter._rates import UnitRates, unit_rates
from costmeter._usage import field_of

__all__ = ["count", "first_rates", "parts_cost"]


def count(obj: Any, key: str) -> int:
    """The integer *key* of a usage object (SDK model or dict); anything else counts 0."""
    value = field_of(obj, key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def first_rates(models: Iterable[str]) -> tuple[str, UnitRates] | None:
    """The first of *models* genai-prices publishes unit rates for, with them; ``None``: none."""
    for model in models:
        rates = unit_rates(model)
        if rates is not None:
            return model, rates
    return None


def parts_cost(
    *,
    source: str,
    priced_as: str,
    input_usd: Decimal = ZERO,
    cached_input_usd: Decimal = ZERO,
    output_usd: Decimal = ZERO,
    audio_input_usd: Decimal = ZERO,
    audio_output_usd: Decimal = ZERO,
) -> Cost:
    """A standard-tier `Cost` of these parts (audio shares are inside input and output)."""
    with money_math():
        total = input_usd + cached_input_usd + output_usd
    return Cost(
        input_usd=input_usd,
        cached_input_usd=cached_input_usd,
        cache_write_usd=ZERO,
        output_usd=output_usd,
        tool_usd=ZERO,
        total_usd=total,
        price_source=source,
        priced_as=priced_as,
        service_tier="default",
        audio_input_usd=audio_input_usd,
        audio_output_usd=audio_output_usd,
    )
