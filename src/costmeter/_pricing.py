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
import gc
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from costmeter._errors import ConfigurationError, PricingError, UnknownModelError
from costmeter._model_names import ModelName, parse_model
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
    "genai_snapshot",
    "normalize_tier",
    "price_of",
    "register_prices",
]

PRICES_FILE_ENV = "COSTMETER_PRICES_FILE"
_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)

# Tiers billed at standard rates. "scale" is committed capacity billed outside per-token prices;
# costmeter prices its marginal tokens at the standard rate (documented in the README).
_STANDARD_TIERS = frozenset({"default", "auto", "scale", "standard"})
# Where a tier has no price of its own, the documented equivalent: flex is billed at Batch rates,
# and "fast" requests are served (and priced) as "priority".
_TIER_FALLBACKS: dict[str, tuple[tuple[str, str], ...]] = {
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
    if tier not in _STANDARD_TIERS and tier != "default":
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


def _from_genai(name: ModelName, tier: str) -> ModelPrice | None:
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
    if tier not in _STANDARD_TIERS:
        active = [
            variant.when
            for variant in (getattr(model_info, "price_variants", None) or ())
            if variant.constraint is None or variant.constraint.active(now)
        ]
        for key, value in _TIER_FALLBACKS.get(tier, (("service_tier", tier),)):
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


def _from_tokencost(name: ModelName, tier: str) -> ModelPrice | None:
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
    elif tier not in _STANDARD_TIERS:
        return None
    try:
        inp = entry[f"input_cost_per_token{suffix}"] * _MILLION
        out = entry[f"output_cost_per_token{suffix}"] * _MILLION
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
        cached_input_per_mtok=_plain(inp if suffix or cached is None else cached * _MILLION),
        cache_write_per_mtok=_plain(inp if write is None else write * _MILLION),
        output_per_mtok=_plain(out),
        audio_input_per_mtok=None if audio_in is None else _plain(audio_in * _MILLION),
        audio_output_per_mtok=None if audio_out is None else _plain(audio_out * _MILLION),
    )


def _plain(amount: Decimal) -> Decimal:
    """Strip float noise from a per-token price scaled to per-1M, without exponent notation."""
    amount = amount.normalize()
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount


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
    for source in (_from_genai, _from_tokencost):
        found = source(name, tier)
        if found is not None:
            return _with_audio_rates(found, name, tier)
    sources = (*_SOURCES[:2], *(plugged.name for plugged in _plugged), *_SOURCES[2:])
    raise UnknownModelError(model, sources, None if tier == "default" else tier)


def _with_audio_rates(price: ModelPrice, name: ModelName, tier: str) -> ModelPrice:
    """
    Complete a genai-prices entry that lacks audio rates from tokencost's entry for the *exact*
    dated name (``gpt-4o-audio-preview-2024-12-17``: $40/$80 per 1M audio tokens). Undated
    aliases are not completed: they moved between very different audio prices ($100 → $40).
    """
    dated = len(name.candidates()) > 1
    if price.audio_input_per_mtok is not None or price.source != "genai-prices" or not dated:
        return price
    entry = _tokencost_table().get(name.key)
    if not entry or tier not in _STANDARD_TIERS:
        return price
    audio_in = entry.get("input_cost_per_audio_token")
    audio_out = entry.get("output_cost_per_audio_token")
    if not isinstance(audio_in, Decimal) or not isinstance(audio_out, Decimal):
        return price
    return replace(
        price,
        audio_input_per_mtok=_plain(audio_in * _MILLION),
        audio_output_per_mtok=_plain(audio_out * _MILLION),
        source="genai-prices+tokencost(audio)",
    )


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
    prices_file = os.environ.get(PRICES_FILE_ENV) or None  # the one environment read
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
    return tokens * per_mtok / _MILLION if tokens else _ZERO


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
