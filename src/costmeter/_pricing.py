"""
Exact prices and costs, in `Decimal`, from a documented chain of sources.

Source precedence (first that knows the model wins):

1. **Overrides in code** — `register_prices()`.
2. **Override file** — a TOML or JSON file named by ``COSTMETER_PRICES_FILE``.
3. **Plugged-in sources** — `add_price_source()`: any object with a ``name`` and a
   ``prices(model)`` method (`PriceSource`) answering with a `register_prices`-shaped entry, e.g.
   an internal price list or a proxy's negotiated rates. Consulted in the order added.
4. **genai-prices** — curated, dated price history, service-tier variants (flex, priority, fast,
   batch), long-context tiers, cache-write prices. Current prices win over stale ones: tokencost
   still has ``o1-mini-2024-09-12`` at its launch price ($3/$12 per 1M), genai-prices at today's
   $1.10/$4.40.
5. **tokencost** — its bundled price table (read as data; ``import tokencost`` itself costs ~1.2 s
   and is never done), for models genai-prices lacks. Where it has no cached-input price, cached
   tokens are billed at the full input rate: a missing discount is never assumed to be free.

Every price is USD per 1,000,000 tokens. Money is built from strings and never passes through
``float``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from costmeter._bundled_prices import from_genai, from_tokencost, with_audio_rates
from costmeter._errors import ConfigurationError, PricingError, UnknownModelError
from costmeter._model_names import ModelName, parse_model
from costmeter._price_types import (
    MILLION,
    STANDARD_TIERS,
    Cost,
    ModelPrice,
    UnpricedTokensError,
    normalize_tier,
)
from costmeter._usage import usage_from

__all__ = [
    "PRICES_FILE_ENV",
    "Cost",
    "ModelPrice",
    "PriceSource",
    "PricesFileError",
    "UnpricedTokensError",
    "add_price_source",
    "clear_price_overrides",
    "cost_of",
    "normalize_tier",
    "price_of",
    "price_with",
    "register_prices",
]

PRICES_FILE_ENV = "COSTMETER_PRICES_FILE"
_ZERO = Decimal(0)
# -- price sources -------------------------------------------------------------------------------

_lock = threading.Lock()
_overrides: dict[str, dict[str, Any]] = {}


def _money(value: object, where: str) -> Decimal:
    """A non-negative, finite price from a string/int/Decimal (floats via their repr)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: price must be a number, got {value!r}")
    try:
        if isinstance(value, float):
            value = repr(value)
        amount = Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise ConfigurationError(f"{where}: price must be a number, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{where}: price must be finite and >= 0, got {value!r}")
    return amount


def _validate_entry(model: str, entry: object, origin: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{origin}: prices for {model!r} must be a mapping")
    allowed = {
        "input",
        "cached_input",
        "cache_write",
        "output",
        "web_search_per_call",
        "audio_input",
        "audio_output",
        "tiers",
    }
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigurationError(
            f"{origin}: unknown price keys for {model!r}: {sorted(unknown)} "
            f"(allowed: {sorted(allowed)})"
        )
    for required in ("input", "output"):
        if required not in entry:
            raise ConfigurationError(f"{origin}: prices for {model!r} need {required!r}")
    clean: dict[str, Any] = {
        key: _money(entry[key], f"{origin} {model}.{key}") for key in entry if key != "tiers"
    }
    tiers = entry.get("tiers", {})
    if not isinstance(tiers, Mapping):
        raise ConfigurationError(f"{origin}: {model}.tiers must be a mapping of tier → prices")
    clean["tiers"] = {
        normalize_tier(tier): _validate_entry(f"{model}.tiers.{tier}", prices, origin)
        for tier, prices in tiers.items()
    }
    return clean


def register_prices(prices: Mapping[str, Mapping[str, object]]) -> None:
    """
    Add or replace prices in code; they take precedence over every other source.

    Args:
        prices: ``{model: {"input": "1.25", "output": "10", "cached_input": "0.125",
            "cache_write": "1.5625", "web_search_per_call": "0.01", "tiers": {"flex": {...}}}}``
            in USD per 1M tokens (strings, ints or Decimals). ``input`` and ``output`` are
            required; a missing ``cached_input`` or ``cache_write`` means the input rate.

    Raises:
        ConfigurationError: a price is negative, not a number, or a key is unknown.
    """
    validated = {
        parse_model(model).key: _validate_entry(model, entry, "register_prices()")
        for model, entry in prices.items()
    }
    with _lock:
        _overrides.update(validated)
    _forget_prices()


def clear_price_overrides() -> None:
    """Forget every `register_prices()` entry and re-read the override file on next use."""
    with _lock:
        _overrides.clear()
    _file_overrides.cache_clear()
    _forget_prices()


@runtime_checkable
class PriceSource(Protocol):
    """
    A source of prices to plug in with `add_price_source`: an internal price list, a gateway's
    negotiated rates, a database. Answers are cached per (model, tier) until the sources
    change (`add_price_source`, its remover, `clear_price_overrides`).

    Attributes:
        name: Shown as ``ModelPrice.source`` (and in events' pricing) for what it prices.
    """

    name: str

    def prices(self, model: str) -> Mapping[str, object] | None:
        """
        The prices of *model*, in `register_prices`'s entry shape (``input`` and ``output``
        required; ``cached_input``, ``cache_write``, ``audio_input``, ``audio_output``,
        ``web_search_per_call``, ``tiers``), or ``None`` if this source does not know it.

        *model* is normalised (lower case, router prefixes stripped, Azure spellings mapped);
        a dated snapshot is asked for first by its dated name, then by its alias.
        """


_plugged: tuple[PriceSource, ...] = ()


def add_price_source(source: PriceSource) -> Callable[[], None]:
    """
    Consult *source* for every model the code overrides and the price file do not price,
    before the bundled sources (genai-prices, tokencost); sources added earlier come first.
    Returns a function that removes it.

    Raises:
        ConfigurationError: *source* has no string ``name`` or no callable ``prices``.
    """
    global _plugged  # noqa: PLW0603
    name = getattr(source, "name", None)
    if not isinstance(name, str) or not name or not callable(getattr(source, "prices", None)):
        raise ConfigurationError(
            f"a price source needs a non-empty str `name` and a `prices(model)` method, "
            f"got {source!r}"
        )
    with _lock:
        _plugged = (*_plugged, source)
    _forget_prices()

    def remove() -> None:
        global _plugged  # noqa: PLW0603
        with _lock:
            _plugged = tuple(item for item in _plugged if item is not source)
        _forget_prices()

    return remove


def _forget_prices() -> None:
    _cached_price.cache_clear()
    _recent.clear()


def _from_plugged(name: ModelName, tier: str) -> ModelPrice | None:
    """The first plugged-in source's answer for *name*; a failing source is an error naming it
    (never read as "no price known", which would price the model elsewhere)."""
    for source in _plugged:
        for key in name.candidates():
            try:
                entry = source.prices(key)
            except Exception as exc:
                raise PricingError(
                    f"price source {source.name!r} failed for {key!r}: {type(exc).__name__}: {exc}"
                ) from exc
            if entry is not None:
                origin = f"price source {source.name!r}"
                return _from_override(name, tier, _validate_entry(key, entry, origin), source.name)
    return None


class PricesFileError(ConfigurationError):
    """
    The price file named by ``COSTMETER_PRICES_FILE`` is missing, unreadable or malformed.

    A broken override file must never read as "no price known" for the model: the prices the
    user meant to apply were not applied, so every lookup fails with this error, naming the
    file and the problem, until the file (or the variable) is fixed.

    Attributes:
        path: The file, as the environment variable gives it.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{PRICES_FILE_ENV}={path}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.problem))


@functools.lru_cache(maxsize=4)
def _file_overrides(path: str) -> dict[str, dict[str, Any]]:
    """The validated entries of the price file at *path* (cached per path; errors are not)."""
    origin = f"{PRICES_FILE_ENV}={path}"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PricesFileError(path, f"cannot read price file: {exc}") from None
    try:
        if path.lower().endswith(".toml"):
            raw = tomllib.loads(data.decode())
        else:
            raw = json.loads(data, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PricesFileError(path, f"cannot parse price file: {exc}") from None
    if not isinstance(raw, Mapping):
        raise PricesFileError(path, "the file must hold a mapping of model → prices")
    try:
        return {
            parse_model(model).key: _validate_entry(model, entry, origin)
            for model, entry in raw.items()
        }
    except ConfigurationError as exc:
        problem = str(exc).removeprefix(f"{origin}: ")
        raise PricesFileError(path, problem) from None


def _from_override(
    name: ModelName, tier: str, entry: dict[str, Any], source: str
) -> ModelPrice | None:
    if tier not in STANDARD_TIERS and tier != "default":
        entry = entry["tiers"].get(tier)
        if entry is None:
            return None
    inp = entry["input"]
    return ModelPrice(
        model=name.raw,
        priced_as=name.key,
        service_tier=tier,
        source=source,
        input_per_mtok=inp,
        cached_input_per_mtok=entry.get("cached_input", inp),
        cache_write_per_mtok=entry.get("cache_write", inp),
        output_per_mtok=entry["output"],
        web_search_per_call=entry.get("web_search_per_call", _ZERO),
        audio_input_per_mtok=entry.get("audio_input"),
        audio_output_per_mtok=entry.get("audio_output"),
    )


_SOURCES = ("overrides", PRICES_FILE_ENV, "genai-prices", "tokencost")


# `price_of`'s fast path, keyed by its arguments as given and the override file in force: two
# lookups per metered call (requested tier before sending, served tier after) cost one dict hit
# each. `_cached_price` below keys on the normalised tier; both are emptied whenever overrides
# change. Bounded by clearing: the key set is tiny in practice (models x tiers).
_RECENT_MAX = 1024
_recent: dict[tuple[str, object, str | None], ModelPrice] = {}


@functools.lru_cache(maxsize=1024)
def _cached_price(model: str, tier: str, prices_file: str | None) -> ModelPrice:
    name = parse_model(model)
    with _lock:
        entry = next((_overrides[k] for k in name.candidates() if k in _overrides), None)
    if entry is not None:
        found = _from_override(name, tier, entry, "override")
        if found is not None:
            return found
    if prices_file:
        file_table = _file_overrides(prices_file)
        entry = next((file_table[k] for k in name.candidates() if k in file_table), None)
        if entry is not None:
            found = _from_override(name, tier, entry, f"file:{prices_file}")
            if found is not None:
                return found
    found = _from_plugged(name, tier)
    if found is not None:
        return found
    for source in (from_genai, from_tokencost):
        found = source(name, tier)
        if found is not None:
            return with_audio_rates(found, name, tier)
    sources = (*_SOURCES[:2], *(plugged.name for plugged in _plugged), *_SOURCES[2:])
    raise UnknownModelError(model, sources, None if tier == "default" else tier)


def price_of(model: str, *, service_tier: str | None = None) -> ModelPrice:
    """
    The prices that apply to *model* served at *service_tier*, and where they came from.

    Args:
        model: A model name as a request or a response gives it (dated snapshots, any case,
            ``openai/`` prefixes, fine-tuned and Azure spellings are understood).
        service_tier: The tier the response reports as served; ``None``/``auto``/``default``
            mean standard rates. ``flex`` falls back to Batch rates where no flex price is
            published; ``fast`` and ``priority`` are interchangeable.

    Raises:
        UnknownModelError: no source prices the model at that tier (never a silent fallback).
        PricesFileError: ``COSTMETER_PRICES_FILE`` names a missing or malformed file.
        ConfigurationError: *model* is not a non-empty string.
    """
    return price_with(model, service_tier, os.environ.get(PRICES_FILE_ENV) or None)


def price_with(model: str, service_tier: str | None, prices_file: str | None) -> ModelPrice:
    """`price_of` with the ``COSTMETER_PRICES_FILE`` read by the caller: a caller looking up
    several tiers at once reads the environment once (~0.9 µs a read when the variable is
    unset: ``os.environ.get`` raises and catches a ``KeyError`` inside)."""
    key = (model, service_tier, prices_file)
    try:
        return _recent[key]
    except (KeyError, TypeError):  # not seen yet, or an unhashable argument: validate it
        pass
    parse_model(model)
    price = _cached_price(model, normalize_tier(service_tier), prices_file)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[key] = price
    return price


def _part(tokens: int, per_mtok: Decimal) -> Decimal:
    return tokens * per_mtok / MILLION if tokens else _ZERO


def cost_of(model: str | ModelPrice, usage: object, *, service_tier: str | None = None) -> Cost:
    """
    The exact cost of *usage* for *model* at the served *service_tier*.

    Args:
        model: A model name, or a `ModelPrice` already looked up.
        usage: An openai ``ResponseUsage`` or ``CompletionUsage``, a dict of either shape, or a
            `Usage`. Missing detail objects count as zero of that part.
        service_tier: The tier the response reports (ignored when *model* is a `ModelPrice`).

    Audio tokens (parts of the input and output counts) are billed at the audio rates, inside
    ``input_usd``/``output_usd``; ``audio_input_usd``/``audio_output_usd`` show that share.

    Raises:
        UnknownModelError: no price for the model at that tier.
        UnpricedTokensError: the usage has audio tokens and the source has no audio rate.
        UsageError: the usage has negative or inconsistent counts.
    """
    price = model if isinstance(model, ModelPrice) else price_of(model, service_tier=service_tier)
    normalized = usage_from(usage)
    rates = price.for_input(normalized.input_tokens)
    audio_in = min(normalized.audio_input_tokens, normalized.uncached_input_tokens)
    audio_out = min(normalized.audio_output_tokens, normalized.output_tokens)
    if (audio_in and rates.audio_input_per_mtok is None) or (
        audio_out and rates.audio_output_per_mtok is None
    ):
        raise UnpricedTokensError("audio", price.priced_as, price.source)
    audio_in_usd = _part(audio_in, rates.audio_input_per_mtok or _ZERO)
    audio_out_usd = _part(audio_out, rates.audio_output_per_mtok or _ZERO)
    input_usd = _part(normalized.uncached_input_tokens - audio_in, rates.input_per_mtok)
    input_usd += audio_in_usd
    cached_usd = _part(normalized.cached_input_tokens, rates.cached_input_per_mtok)
    write_usd = _part(normalized.cache_write_input_tokens, rates.cache_write_per_mtok)
    output_usd = _part(normalized.output_tokens - audio_out, rates.output_per_mtok) + audio_out_usd
    tool_usd = normalized.web_search_calls * price.web_search_per_call
    return Cost(
        input_usd=input_usd,
        cached_input_usd=cached_usd,
        cache_write_usd=write_usd,
        output_usd=output_usd,
        tool_usd=tool_usd,
        total_usd=input_usd + cached_usd + write_usd + output_usd + tool_usd,
        price_source=price.source,
        priced_as=price.priced_as,
        service_tier=price.service_tier,
        long_context=rates is not price,
        audio_input_usd=audio_in_usd,
        audio_output_usd=audio_out_usd,
    )
