"""
The running totals of one report group (`Totals`: calls, tokens, exact cost, cache savings,
estimate accuracy) and today's cache discounts (`Prices`), which the savings are priced at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costmeter._money import money_math
from costmeter._report_decode import Fields

__all__ = ["TIE", "Prices", "Totals", "bucket"]

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
TIE = 1e-6  # an error * 100 this close to a rounding tie is bucketed by round() itself
_NOT_TIE = 1 - TIE
_MISSING: Any = object()


@dataclass(slots=True)
class Totals:
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = _ZERO
    unpriced_calls: int = 0
    estimated_usage_calls: int = 0
    saved_unknown_calls: int = 0
    # Cached tokens per (input rate - cached rate): the savings are sum(tokens * gap) / 1M, the
    # exact sum of the per-call savings, computed once at the end instead of per call.
    saved_tokens: dict[Decimal, int] = field(default_factory=dict)
    accuracy_calls: int = 0
    accuracy_sum: float = 0.0
    # |error| in percent, bucketed to 0.01 pp below 100 % (1 pp above): bounded memory.
    accuracy_hist: Counter[float] = field(default_factory=Counter)

    def add_rows(self, rows: Iterable[Fields], prices: Prices) -> None:
        """
        Count *rows*' calls (inside `money_math`): the report's hot loop, so the sums are kept
        in local variables and written back once (half the cost per call of updating the
        attributes call by call).
        """
        calls = self.calls
        inputs, cached_sum = self.input_tokens, self.cached_input_tokens
        writes, outputs, reasoning = (
            self.cache_write_input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
        )
        cost_sum = self.cost_usd
        unpriced, estimated_calls, unknown = (
            self.unpriced_calls,
            self.estimated_usage_calls,
            self.saved_unknown_calls,
        )
        accuracy_calls, accuracy_sum = self.accuracy_calls, self.accuracy_sum
        saved, hist, gap_of = self.saved_tokens, self.accuracy_hist, prices.gaps.get
        hundredths: dict[int, int] = {}
        for row in rows:
            calls += 1
            input_tokens = row.input_tokens or 0
            cached = row.cached_input_tokens or 0
            inputs += input_tokens
            writes += row.cache_write_input_tokens or 0
            outputs += row.output_tokens or 0
            reasoning += row.reasoning_tokens or 0
            cost = row.cost_usd
            if cost is None:
                unpriced += 1
            else:
                cost_sum += cost
            source = row.usage_source
            if source == "estimated":
                estimated_calls += 1
            if cached:
                cached_sum += cached
                # an unpriced call (cost null) has no savings either: its price was unknown
                entry = None
                if cost is not None:
                    key = (row.priced_as, row.response_model, row.model, row.service_tier)
                    entry = gap_of(key, _MISSING)
                    if entry is _MISSING:
                        entry = prices.gap_entry(key)
                if entry is None:
                    unknown += 1
                else:
                    gap, threshold, long_gap = entry
                    if threshold is not None and input_tokens > threshold:
                        gap = long_gap
                    saved[gap] = saved.get(gap, 0) + cached
            estimated = row.estimated_input_tokens
            if source == "reported" and input_tokens > 0 and estimated is not None:
                error = abs(estimated - input_tokens) * 100.0 / input_tokens
                accuracy_calls += 1
                accuracy_sum += error
                # round(error, 2) is k / 100 for the integer k nearest error * 100, which the
                # float product gives exactly unless it is within TIE of a tie (far cheaper
                # than round(); _report_duckdb_sql buckets the same way); k counted here
                scaled = error * 100.0 + 0.5
                nearest = int(scaled)
                if error < 100 and TIE < scaled - nearest < _NOT_TIE:
                    hundredths[nearest] = hundredths.get(nearest, 0) + 1
                else:
                    hist[bucket(error)] += 1
        for nearest, count in hundredths.items():
            hist[nearest / 100] += count
        self.calls = calls
        self.input_tokens, self.cached_input_tokens = inputs, cached_sum
        self.cache_write_input_tokens, self.output_tokens = writes, outputs
        self.reasoning_tokens, self.cost_usd = reasoning, cost_sum
        self.unpriced_calls, self.estimated_usage_calls = unpriced, estimated_calls
        self.saved_unknown_calls = unknown
        self.accuracy_calls, self.accuracy_sum = accuracy_calls, accuracy_sum

    def merge(self, other: Totals) -> None:
        """Add *other*'s counts to these (inside `money_math`)."""
        for name in (
            "calls",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "unpriced_calls",
            "estimated_usage_calls",
            "saved_unknown_calls",
            "accuracy_calls",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_usd += other.cost_usd
        for gap, tokens in other.saved_tokens.items():
            self.saved_tokens[gap] = self.saved_tokens.get(gap, 0) + tokens
        self.accuracy_sum += other.accuracy_sum
        self.accuracy_hist.update(other.accuracy_hist)

    @property
    def saved_usd(self) -> Decimal:
        """Money saved by cached input, at today's prices (exact)."""
        with money_math():
            return (
                sum((gap * tokens for gap, tokens in sorted(self.saved_tokens.items())), _ZERO)
                / _MILLION
            )

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else None

    @property
    def error_mean_pct(self) -> float | None:
        return self.accuracy_sum / self.accuracy_calls if self.accuracy_calls else None

    @property
    def error_median_pct(self) -> float | None:
        n = self.accuracy_calls
        if not n:
            return None
        wanted = [(n - 1) // 2, n // 2]  # 0-based ranks of the middle value(s)
        found: list[float] = []
        seen = 0
        for value in sorted(self.accuracy_hist):
            seen += self.accuracy_hist[value]
            while wanted and wanted[0] < seen:
                found.append(value)
                wanted.pop(0)
            if not wanted:
                break
        return sum(found) / len(found)


def bucket(error: float) -> float:
    """The histogram bucket of an estimate error (percent): 0.01 pp below 100 %, 1 pp above."""
    return round(error, 2) if error < 100 else float(round(error))


class Prices:
    """Today's cache discount per model and tier, from `price_of`, looked up once per model."""

    def __init__(self) -> None:
        #: (priced_as, response_model, model, tier) -> (gap, long-context threshold, its gap),
        #: or ``None`` when unpriced; filled by `gap_entry`
        self.gaps: dict[tuple[Any, Any, Any, Any], tuple[Decimal, int | None, Decimal] | None]
        self.gaps = {}

    def gap_entry(
        self, key: tuple[Any, Any, Any, Any]
    ) -> tuple[Decimal, int | None, Decimal] | None:
        """
        Input rate minus cached-input rate (USD per 1M tokens), the long-context threshold and
        the gap above it, for *key* (``gaps``' key), or ``None`` when unpriced; looked up once.
        """
        entry = self.gaps[key] = self._lookup(*key)
        return entry

    def cache_gap(self, row: Fields, input_tokens: int) -> Decimal | None:
        """Input rate minus cached-input rate (USD per 1M tokens), or ``None`` when unpriced."""
        key = (row.priced_as, row.response_model, row.model, row.service_tier)
        entry = self.gaps[key] if key in self.gaps else self.gap_entry(key)
        if entry is None:
            return None
        gap, threshold, long_gap = entry
        return long_gap if threshold is not None and input_tokens > threshold else gap

    @staticmethod
    def _lookup(
        priced_as: Any, response_model: Any, model: Any, tier: Any
    ) -> tuple[Decimal, int | None, Decimal] | None:
        name = priced_as or response_model or model
        if not isinstance(name, str) or not name:
            return None
        from costmeter._errors import CostmeterError  # noqa: PLC0415
        from costmeter._pricing import price_of  # noqa: PLC0415

        try:
            price = price_of(name, service_tier=tier if isinstance(tier, str) else None)
        except CostmeterError:
            return None
        gap = price.input_per_mtok - price.cached_input_per_mtok
        long = price.long_context
        if long is None or price.long_context_threshold is None:
            return gap, None, gap
        return gap, price.long_context_threshold, long.input_per_mtok - long.cached_input_per_mtok
