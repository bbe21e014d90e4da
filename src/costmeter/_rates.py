"""
Unit rates beyond per-token text prices: image tokens, audio hours, characters, per-call fees.

genai-prices publishes every rate under a unit name (``input_image_mtok``, ``audio_hours``,
``input_mchars``, ``web_searches_kcount``, ...) with its own divisor. `unit_rates` turns a model's
published prices into USD per *single* unit (one token, one second, one character, one call), so
an endpoint module prices its usage by multiplying, without knowing each unit's scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from costmeter._bundled_prices import genai_snapshot
from costmeter._model_names import parse_model
from costmeter._money import money_math

__all__ = ["UnitRates", "unit_rates"]


@dataclass(frozen=True, slots=True)
class UnitRates:
    """
    A model's published rates in USD per single unit, keyed by genai-prices unit name
    (``input_tokens``, ``input_image_tokens``, ``output_image_tokens``, ``audio_seconds``,
    ``input_characters``, ``web_searches``, ...). A missing key: no rate published.
    """

    priced_as: str
    source: str
    rates: dict[str, Decimal]

    def get(self, unit: str) -> Decimal | None:
        return self.rates.get(unit)


@functools.lru_cache(maxsize=256)
def unit_rates(model: str) -> UnitRates | None:
    """The standard-tier unit rates genai-prices publishes for *model*; ``None`` if unknown."""
    snapshot = genai_snapshot()
    if snapshot is None:  # pragma: no cover - genai-prices is a hard dependency
        return None
    from genai_prices.data_units import unit_data  # noqa: PLC0415  (lazy, as the snapshot)

    info: Any = None
    for key in parse_model(model).candidates():
        try:
            _provider, info = snapshot.find_provider_model(key, None, "openai", None)
            break
        except LookupError:
            continue
    if info is None:
        return None
    prices = info.get_prices(datetime.now(timezone.utc), None)
    rates: dict[str, Decimal] = {}
    with money_math():
        for unit, spec in unit_data.items():
            value = getattr(prices, spec["price_key"], None)
            base = getattr(value, "base", value)  # tiered values: the base rate
            if isinstance(base, Decimal):
                rates[unit] = base / Decimal(spec["per"])
    return UnitRates(priced_as=info.id, source="genai-prices", rates=rates)
