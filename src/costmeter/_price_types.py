"""
What a price is: `ModelPrice` (per-1M-token rates of one model at one tier, and where they came
from), `Cost` (one call's bill in parts), the tiers and how they fall back, and the error for
tokens a price has no rate for. Every amount is a `Decimal` built from strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from costmeter._errors import ConfigurationError, PricingError

__all__ = [
    "MILLION",
    "STANDARD_TIERS",
    "TIER_FALLBACKS",
    "Cost",
    "ModelPrice",
    "UnpricedTokensError",
    "normalize_tier",
]

MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)

# Tiers billed at standard rates. "scale" is committed capacity billed outside per-token prices;
# costmeter prices its marginal tokens at the standard rate (documented in the README).
STANDARD_TIERS = frozenset({"default", "auto", "scale", "standard"})
# Where a tier has no price of its own, the documented equivalent: flex is billed at Batch rates,
# and "fast" requests are served (and priced) as "priority".
TIER_FALLBACKS: dict[str, tuple[tuple[str, str], ...]] = {
    "flex": (("service_tier", "flex"), ("processing", "batch")),
    "batch": (("processing", "batch"),),
    "priority": (("service_tier", "priority"), ("service_tier", "fast")),
    "fast": (("service_tier", "fast"), ("service_tier", "priority")),
}


def normalize_tier(service_tier: object) -> str:
    """``None``/``auto``/``default`` → ``"default"``; other tiers lower-cased as given."""
    if service_tier is None:
        return "default"
    if not isinstance(service_tier, str):
        raise ConfigurationError(f"service_tier must be a str, got {service_tier!r}")
    tier = service_tier.strip().lower()
    return "default" if tier in ("", "auto", "standard") else tier


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """
    What one model costs at one service tier, in USD per 1M tokens.

    ``cached_input_per_mtok`` equals ``input_per_mtok`` where the source publishes no discount,
    and ``cache_write_per_mtok`` equals it where writes carry no surcharge (every model before
    GPT-5.6). ``long_context`` holds the rates that apply to the *whole* request once its input
    exceeds ``long_context_threshold`` tokens.
    """

    model: str
    priced_as: str
    service_tier: str
    source: str
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    output_per_mtok: Decimal
    web_search_per_call: Decimal = _ZERO
    long_context_threshold: int | None = None
    long_context: ModelPrice | None = field(default=None, repr=False)
    # Audio tokens have their own, much higher rates (gpt-audio: $32/$64 vs $2.5/$10 text).
    # ``None``: the source publishes none, and audio tokens are then never priced as text.
    audio_input_per_mtok: Decimal | None = None
    audio_output_per_mtok: Decimal | None = None

    def for_input(self, input_tokens: int) -> ModelPrice:
        """The rates that apply to a request with *input_tokens* input tokens (cliff tiers)."""
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and input_tokens > self.long_context_threshold
        ):
            return self.long_context
        return self


@dataclass(frozen=True, slots=True)
class Cost:
    """
    The exact cost of one usage. ``total_usd`` is the sum of the parts; nothing is rounded.

    ``input_usd`` covers only uncached input; cached reads and cache writes have their own parts.
    Reasoning tokens are inside ``output_usd``. Audio tokens are inside ``input_usd`` and
    ``output_usd`` at their own rates; ``audio_input_usd``/``audio_output_usd`` are that share.
    """

    input_usd: Decimal
    cached_input_usd: Decimal
    cache_write_usd: Decimal
    output_usd: Decimal
    tool_usd: Decimal
    total_usd: Decimal
    price_source: str
    priced_as: str
    service_tier: str
    long_context: bool = False
    audio_input_usd: Decimal = _ZERO
    audio_output_usd: Decimal = _ZERO


class UnpricedTokensError(PricingError):
    """
    The model is priced, but the usage holds tokens of a kind its price source has no rate for
    (audio). Billing them at the text rate would be silently wrong, so no total is given.

    Attributes:
        kind: The token kind without a price (``"audio"``).
        priced_as: The model entry that lacks the rate.
    """

    def __init__(self, kind: str, priced_as: str, source: str) -> None:
        self.kind = kind
        self.priced_as = priced_as
        self.source = source
        super().__init__(
            f"{source} has no {kind} token price for {priced_as!r}; register one with "
            f"register_prices({{{priced_as!r}: {{..., '{kind}_input': ..., '{kind}_output': ...}}}})"
        )
