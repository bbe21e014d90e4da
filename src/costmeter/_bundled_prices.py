"""
The bundled price sources: genai-prices (curated, dated, tiered) and tokencost's table (read as
data: ``import tokencost`` costs ~1.2 s and is never done). See `costmeter._pricing` for the
precedence between them and the user's own prices.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from costmeter._errors import ConfigurationError
from costmeter._model_names import ModelName
from costmeter._price_types import MILLION, STANDARD_TIERS, TIER_FALLBACKS, ModelPrice

__all__ = ["from_genai", "from_tokencost", "genai_snapshot", "with_audio_rates"]

_ZERO = Decimal(0)
_AUDIO_NAME_PARTS = frozenset({"audio", "realtime", "transcribe"})


def _tiered(value: Any) -> tuple[Decimal | None, int | None, Decimal | None]:
    """Split a genai-prices value into (base, tier threshold, tier price)."""
    if value is None or isinstance(value, Decimal):
        return value, None, None
    tiers = getattr(value, "tiers", None) or []
    if len(tiers) > 1:  # pragma: no cover - no OpenAI model has more than one tier today
        raise ConfigurationError("multi-step price tiers are not supported")
    base = value.base
    return (base, tiers[0].start, tiers[0].price) if tiers else (base, None, None)


def genai_snapshot() -> Any:
    """
    genai-prices' price snapshot (its bundled data, or the one its user set); ``None`` when
    genai-prices cannot be imported.

    The bundled data is one ~1.6 MB module of literals (~100k objects, no reference cycles),
    loaded with its package on the first metered call. In a process whose heap already holds
    the SDK's pydantic schemas, those allocations trigger several full cyclic collections that
    each walk that whole heap: package and data took ~55 ms beside the SDK against ~26 ms with
    the collector paused, most of a first call's overhead. So the first load pauses the
    collector (if it was enabled) and restores it right after; nothing that load creates is
    garbage, so nothing is collected late. (Once per process; another thread that disables the
    collector during those ~25 ms finds it enabled again.)
    """
    if "genai_prices.data" in sys.modules:  # loaded: the snapshot is one cached lookup
        from genai_prices import data_snapshot  # noqa: PLC0415

        return data_snapshot.get_snapshot()
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        from genai_prices import data_snapshot  # noqa: PLC0415  (lazy: ~25 ms)

        return data_snapshot.get_snapshot()
    except ImportError:  # pragma: no cover - a hard dependency, but be safe
        return None
    finally:
        if paused:
            gc.enable()


def from_genai(name: ModelName, tier: str) -> ModelPrice | None:
    snapshot = genai_snapshot()
    if snapshot is None:  # pragma: no cover - genai-prices is a hard dependency
        return None
    model_info = None
    for key in name.candidates():
        try:
            _provider, model_info = snapshot.find_provider_model(key, None, "openai", None)
            break
        except LookupError:
            continue
    if model_info is None:
        return None
    now = datetime.now(timezone.utc)
    context: dict[str, str] | None = None
    if tier not in STANDARD_TIERS:
        active = [
            variant.when
            for variant in (getattr(model_info, "price_variants", None) or ())
            if variant.constraint is None or variant.constraint.active(now)
        ]
        for key, value in TIER_FALLBACKS.get(tier, (("service_tier", tier),)):
            if {key: value} in active:
                context = {key: value}
                break
        else:
            return None
    prices = model_info.get_prices(now, context)
    inp, threshold, inp_tier = _tiered(prices.input_mtok)
    out, _, out_tier = _tiered(prices.output_mtok)
    if inp is None:
        return None
    if out is None:  # embedding models publish no output price: they produce no output tokens
        out = _ZERO
    cached, _, cached_tier = _tiered(prices.cache_read_mtok)
    write, _, write_tier = _tiered(prices.cache_write_mtok)
    audio_in, _, _ = _tiered(getattr(prices, "input_audio_mtok", None))
    audio_out, _, _ = _tiered(getattr(prices, "output_audio_mtok", None))
    searches = getattr(prices, "web_searches_kcount", None)
    per_search = searches / 1000 if isinstance(searches, Decimal) else _ZERO
    price = ModelPrice(
        model=name.raw,
        priced_as=model_info.id,
        service_tier=tier,
        source="genai-prices",
        input_per_mtok=inp,
        cached_input_per_mtok=inp if cached is None else cached,
        cache_write_per_mtok=inp if write is None else write,
        output_per_mtok=out,
        web_search_per_call=per_search,
        audio_input_per_mtok=audio_in,
        audio_output_per_mtok=audio_out,
    )
    if threshold is not None and inp_tier is not None:
        long = replace(
            price,
            input_per_mtok=inp_tier,
            cached_input_per_mtok=cached_tier or inp_tier,
            cache_write_per_mtok=write_tier or inp_tier,
            output_per_mtok=out_tier or out,
        )
        price = replace(price, long_context_threshold=threshold, long_context=long)
    return price


@functools.cache
def _tokencost_table() -> dict[str, Any]:
    """tokencost's bundled table, read as data without importing tokencost."""
    spec = importlib_util.find_spec("tokencost")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices.json"
    try:
        with path.open("rb") as fh:
            table: dict[str, Any] = json.load(fh, parse_float=Decimal, parse_int=Decimal)
    except (OSError, ValueError):  # pragma: no cover - a broken tokencost install
        return {}
    return table


def from_tokencost(name: ModelName, tier: str) -> ModelPrice | None:
    table = _tokencost_table()
    entry = None
    for key in name.candidates():
        entry = table.get(key) or table.get(f"openai/{key}")
        if entry is not None:
            priced_as = key
            break
    if entry is None:
        return None
    suffix = ""
    if tier in ("flex", "batch"):
        suffix = "_batches"  # flex is billed at Batch API rates
    elif tier not in STANDARD_TIERS:
        return None
    try:
        inp = entry[f"input_cost_per_token{suffix}"] * MILLION
        out = entry[f"output_cost_per_token{suffix}"] * MILLION
    except (KeyError, TypeError):
        return None
    cached = entry.get("cache_read_input_token_cost")
    write = entry.get("cache_creation_input_token_cost")
    audio_in = None if suffix else entry.get("input_cost_per_audio_token")
    audio_out = None if suffix else entry.get("output_cost_per_audio_token")
    return ModelPrice(
        model=name.raw,
        priced_as=priced_as,
        service_tier=tier,
        source="tokencost",
        input_per_mtok=_plain(inp),
        # No published discount (or a batch rate, which has none): cached tokens cost full input.
        cached_input_per_mtok=_plain(inp if suffix or cached is None else cached * MILLION),
        cache_write_per_mtok=_plain(inp if write is None else write * MILLION),
        output_per_mtok=_plain(out),
        audio_input_per_mtok=None if audio_in is None else _plain(audio_in * MILLION),
        audio_output_per_mtok=None if audio_out is None else _plain(audio_out * MILLION),
    )


def _plain(amount: Decimal) -> Decimal:
    """Strip float noise from a per-token price scaled to per-1M, without exponent notation."""
    amount = amount.normalize()
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount


def with_audio_rates(price: ModelPrice, name: ModelName, tier: str) -> ModelPrice:
    """
    Complete a genai-prices entry that lacks audio rates from tokencost's entry for the *exact*
    dated name (``gpt-4o-audio-preview-2024-12-17``: $40/$80 per 1M audio tokens). Undated
    aliases are not completed: they moved between very different audio prices ($100 → $40).
    Only models named for audio (``audio``, ``realtime``, ``transcribe``) have audio rates: no
    other name makes the first call of a process read tokencost's table (~6 ms).
    """
    dated = len(name.candidates()) > 1
    if price.audio_input_per_mtok is not None or price.source != "genai-prices" or not dated:
        return price
    if _AUDIO_NAME_PARTS.isdisjoint(name.key.split("-")):
        return price
    entry = _tokencost_table().get(name.key)
    if not entry or tier not in STANDARD_TIERS:
        return price
    audio_in = entry.get("input_cost_per_audio_token")
    audio_out = entry.get("output_cost_per_audio_token")
    if not isinstance(audio_in, Decimal) or not isinstance(audio_out, Decimal):
        return price
    return replace(
        price,
        audio_input_per_mtok=_plain(audio_in * MILLION),
        audio_output_per_mtok=_plain(audio_out * MILLION),
        source="genai-prices+tokencost(audio)",
    )
