"""
A request's worst-case cost: what a budget reserves before sending.

The worst case (`reserve_usd`, what a budget reserves before sending): the count plus the
estimator's error margin (`input_margin`: 5 % + 64 tokens) at the dearest input rate (cache
writes, audio input), the output bound times every parameter that multiplies billed output
(Chat ``n``, legacy ``best_of``/prompt lists, predictions) at the dearest output rate (audio
when the request can answer in audio), at the dearest tier the request can be served at
(`served_tiers`: no ``service_tier`` or ``"auto"`` may be served at priority), and at the
long-context rates when the margin reaches a model's threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeGuard

from costmeter._input_count import content_tokens, inputs_of, short_name
from costmeter._money import ZERO as _ZERO
from costmeter._money import money_math
from costmeter._pricing import ModelPrice, UnpricedTokensError

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "input_margin",
    "output_bound",
    "reserve_usd",
    "served_tiers",
    "worst_case_usd",
]

DEFAULT_MAX_OUTPUT_TOKENS: int = 4096
"""The output bound when a request sets none. A budget must reserve *some* worst case; 4096
covers the great majority of replies without reserving a model's whole output window."""

_MILLION = Decimal(1_000_000)
_BOUND_KEYS = ("max_output_tokens", "max_completion_tokens", "max_tokens")


def input_margin(input_tokens: int) -> int:
    """
    The estimator's error margin on a locally counted input: 5 % + 64 tokens.

    Plain text is counted exactly; function tools and schemas land within a few percent (worst
    recorded: -10 % on a nested ``$ref`` schema, -32 tokens). The margin is reserved on top of
    the count, and a long-context price cliff within it is reserved at the dearer rates: an
    input estimated 8 tokens under gpt-5.4's 272k threshold and billed over it costs ~2x.
    """
    return -(-input_tokens * 5 // 100) + 64


def output_bound(api: str, body: Mapping[str, Any], model: str = "") -> tuple[int, bool]:
    """
    The most output tokens the request can be billed for, and whether the request said so.

    Per choice: the request's own limit (``max_output_tokens``/``max_completion_tokens``/
    ``max_tokens``, which include reasoning and audio tokens, so it is a true worst case), else
    `DEFAULT_MAX_OUTPUT_TOKENS` (legacy completions: the API's own default of 16). Times every
    parameter that multiplies billed output: Chat ``n`` choices; legacy completions bill
    ``best_of`` candidates (at least ``n``) for each prompt of a list. Plus a Chat
    ``prediction``'s tokens (Predicted Outputs bill rejected prediction tokens as output; the
    API does not say the limit caps them). Embeddings have no output.
    """
    if api == "embeddings":
        return 0, True
    per_choice, from_request = (
        (16, False) if api == "completions" else (DEFAULT_MAX_OUTPUT_TOKENS, False)
    )
    for key in _BOUND_KEYS:
        value = body.get(key)
        if is_count(value, 0):
            per_choice, from_request = value, True
            break
    choices = _count_param(body, "n")
    if api == "completions":
        choices = max(choices, _count_param(body, "best_of")) * max(
            1, len(inputs_of(body.get("prompt")))
        )
    extra = 0
    prediction = body.get("prediction")
    if api == "chat.completions" and isinstance(prediction, Mapping):
        extra = content_tokens(model, prediction.get("content"))
    return per_choice * choices + extra * choices, from_request


def is_count(value: object, minimum: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _count_param(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    return value if is_count(value, 1) else 1


def worst_case_usd(price: ModelPrice, input_tokens: int, max_output_tokens: int) -> Decimal:
    """
    The most a text request can cost at one price: every input token at the dearest input rate
    (no cache hit is assumed, and a cache write can cost more than plain input, e.g. gpt-5.6),
    plus the whole output bound, at the long-context rates when the input crosses their
    threshold. `reserve_usd` adds the tiers, audio, output multipliers and the error margin.
    """
    with money_math():
        rates = price.for_input(input_tokens)
        input_rate = max(rates.input_per_mtok, rates.cache_write_per_mtok)
        return (input_tokens * input_rate + max_output_tokens * rates.output_per_mtok) / _MILLION


_STANDARD_REQUEST_TIERS = frozenset({"default", "standard"})
_AUTO_TIERS = (None, "priority")


def served_tiers(service_tier: object) -> tuple[str | None, ...]:
    """
    The tiers a request can be served (and billed) at, for its ``service_tier``.

    Absent or ``"auto"``: the project's default tier, which a project can set to ``priority``
    (billed ~2x standard), so both standard and priority are possible and the worst case is
    the dearer; a response served at ``priority`` that nobody asked for must not pass a cap.
    An explicit ``"default"`` is served at standard rates; an explicit ``"flex"``,
    ``"priority"`` or other tier at that tier (a priority request may be downgraded to
    standard, which is cheaper). Send ``service_tier="default"`` to reserve at standard rates.
    """
    if service_tier is None:
        return _AUTO_TIERS
    tier = str(service_tier).strip().lower()
    if tier in ("", "auto"):
        return _AUTO_TIERS
    if tier in _STANDARD_REQUEST_TIERS:
        return (None,)
    return (tier,)


def _audio_model(model: str) -> bool:
    """Audio-native models (gpt-audio, gpt-4o-audio-preview, gpt-realtime) can answer in audio."""
    parts = short_name(model).split("-")
    return "audio" in parts or "realtime" in parts


def _audio_output_requested(body: Mapping[str, Any]) -> bool:
    modalities = body.get("modalities")
    return bool(body.get("audio")) or (isinstance(modalities, list) and "audio" in modalities)


def _audio_input(body: Mapping[str, Any]) -> bool:
    """Audio content parts (or a Chat assistant turn's audio) anywhere in the input."""
    turns = body.get("messages") or body.get("input") or ()
    for turn in turns if isinstance(turns, list) else ():
        if not isinstance(turn, dict) and not isinstance(turn, Mapping):
            continue
        content = turn.get("content")
        if content is None:
            content = turn.get("output")
        if type(content) is str and not turn.get("audio"):  # the common case, kept cheap
            continue
        if turn.get("audio") or any(
            isinstance(part, Mapping) and part.get("type") in ("input_audio", "audio")
            for part in (content if isinstance(content, list) else ())
        ):
            return True
    return False


def reserve_usd(
    api: str,
    body: Mapping[str, Any],
    model: str,
    input_tokens: int,
    price_for: Callable[[str | None], ModelPrice | None],
    *,
    exact_input: bool = False,
    output: int | None = None,
) -> Decimal | None:
    """
    The dearest cost a request can be billed at: what a budget reserves before sending it.

    The maximum over every tier the request can be served at (`served_tiers`; *price_for*
    gives the model's price at a tier, ``None`` for standard, and returns ``None`` where it has
    none) of:

    * input: *input_tokens* plus `input_margin` (none when *exact_input*, i.e. the server
      counted them), every token at the dearest input rate: plain, cache write (dearer on
      gpt-5.6), and audio when the input carries audio; at the long-context rates when the
      margin reaches the model's threshold (the cliff reprices the whole request);
    * output: `output_bound` (per-choice limit x ``n``/``best_of``/prompts, plus predictions;
      *output* when the caller computed it already) at the output rate, or the audio output
      rate when the request can answer in audio (``modalities`` with ``"audio"``, an ``audio``
      parameter, or an audio-native model).

    An explicit tier no price source knows reserves as an absent one (standard or priority).
    Returns ``None`` when no tier of the model is priced at all.

    Raises:
        UnpricedTokensError: the request asks for audio (audio parts, ``modalities``, ``audio``)
            and the price source has no audio rate for the model: its bill cannot be bounded.
    """
    tiers = served_tiers(body.get("service_tier"))
    prices = [price for price in map(price_for, tiers) if price is not None]
    if not prices and tiers != _AUTO_TIERS:
        prices = [price for price in map(price_for, _AUTO_TIERS) if price is not None]
    if not prices:
        return None
    padded = input_tokens + (0 if exact_input else input_margin(input_tokens))
    if output is None:
        output, _ = output_bound(api, body, model)
    audio_in = _audio_input(body)
    audio_out_asked = _audio_output_requested(body)
    audio_out = audio_out_asked or _audio_model(model)
    worst = _ZERO
    with money_math():
        for price in prices:
            long = price.for_input(padded)
            for rates in (price,) if long is price else (price, long):
                in_rate = max(rates.input_per_mtok, rates.cache_write_per_mtok)
                out_rate = rates.output_per_mtok
                if audio_in:
                    if rates.audio_input_per_mtok is None:
                        raise UnpricedTokensError("audio", price.priced_as, price.source)
                    in_rate = max(in_rate, rates.audio_input_per_mtok)
                if audio_out:
                    if rates.audio_output_per_mtok is not None:
                        out_rate = max(out_rate, rates.audio_output_per_mtok)
                    elif audio_out_asked:
                        raise UnpricedTokensError("audio", price.priced_as, price.source)
                worst = max(worst, (padded * in_rate + output * out_rate) / _MILLION)
    return worst
