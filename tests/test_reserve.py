"""
The worst case a budget reserves before sending (`reserve_usd`): every parameter that multiplies
billed output, audio rates, the dearest tier a request can be served at, and the long-context
price cliff within the estimator's error margin. Expected amounts are computed by hand from
published rates (USD per 1M tokens); the property test checks `cost_of` of any usage the request
can be billed for never exceeds the reservation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import costmeter
from costmeter import ModelPrice, UnknownModelError, Usage, cost_of, price_of
from costmeter._pricing import UnpricedTokensError
from costmeter._worst_case import input_margin, output_bound, reserve_usd, served_tiers

MILLION = 10**6
HI = [{"role": "user", "content": "hi"}]  # 3 + 1 ("user") + 1 ("hi") + 3 priming = 8 tokens


def prices(model: str) -> Callable[[str | None], ModelPrice | None]:
    def price_for(tier: str | None) -> ModelPrice | None:
        try:
            return price_of(model, service_tier=tier)
        except UnknownModelError:
            return None

    return price_for


def reserve(api: str, body: dict[str, Any], tokens: int, **kwargs: Any) -> Decimal | None:
    model = body["model"]
    return reserve_usd(api, body, model, tokens, prices(model), **kwargs)


class TestOutputMultipliers:
    def test_chat_n_reserves_every_choice(self) -> None:
        """n=8 x 1000 tokens: 8000 output tokens at gpt-4o-mini's $0.60 (input 8 + 65 margin)."""
        body: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": HI,
            "n": 8,
            "max_completion_tokens": 1000,
            "service_tier": "default",
        }

        estimate = costmeter.estimate(**body)

        assert (estimate.input_tokens, estimate.max_output_tokens) == (8, 8000)
        expected = (73 * Decimal("0.15") + 8000 * Decimal("0.60")) / MILLION
        assert estimate.cost_usd == expected == Decimal("0.00481095")
        assert reserve("chat.completions", body, 8) == expected

    def test_legacy_completions_bill_best_of_for_every_prompt(self) -> None:
        """
        Two prompts, best_of=3 (n=2): 2 x 3 candidates x max_tokens 10 = 60 output tokens at
        gpt-3.5-turbo-instruct's $2; input "a" + "b" = 2 tokens (+1 +64 margin) at $1.50.
        """
        body: dict[str, Any] = {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": ["a", "b"],
            "n": 2,
            "best_of": 3,
            "max_tokens": 10,
        }

        estimate = costmeter.estimate(api="completions", **body)

        assert (estimate.api, estimate.input_tokens, estimate.max_output_tokens) == (
            "completions",
            2,
            60,
        )
        assert estimate.cost_usd == (67 * Decimal("1.5") + 60 * Decimal(2)) / MILLION

    def test_legacy_completions_default_to_16_tokens(self) -> None:
        """Without max_tokens the legacy API stops at 16 tokens; n multiplies them."""
        assert output_bound("completions", {"prompt": "a"}) == (16, False)
        assert output_bound("completions", {"prompt": "a", "n": 3}) == (48, False)

    def test_prediction_tokens_are_reserved_as_output(self) -> None:
        """Predicted Outputs bill rejected prediction tokens as output: reserve them too."""
        body: dict[str, Any] = {"messages": HI, "max_completion_tokens": 100}
        prediction = {"type": "content", "content": "hello world"}  # 2 tokens

        assert output_bound("chat.completions", {**body, "prediction": prediction}, "gpt-4o") == (
            102,
            True,
        )


class TestAudio:
    def test_audio_output_is_reserved_at_the_audio_rate(self) -> None:
        """gpt-audio answering in audio: 1000 output tokens at $64, not the $10 text rate."""
        body: dict[str, Any] = {
            "model": "gpt-audio",
            "messages": HI,
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "max_completion_tokens": 1000,
            "service_tier": "default",
        }

        assert (
            reserve("chat.completions", body, 8)
            == (73 * Decimal("2.5") + 1000 * Decimal(64)) / MILLION
        )

    def test_audio_models_reserve_audio_even_without_modalities(self) -> None:
        """An audio-native model may answer in audio: its dearer rate is the worst case."""
        body: dict[str, Any] = {
            "model": "gpt-audio-mini",
            "messages": HI,
            "max_completion_tokens": 10,
        }

        assert (
            reserve("chat.completions", body, 8)
            == (73 * Decimal("0.6") + 10 * Decimal(20)) / MILLION
        )

    def test_audio_input_is_reserved_at_the_audio_input_rate(self) -> None:
        """Audio parts in the input: every input token at gpt-audio's $32 audio input rate."""
        part = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
        body: dict[str, Any] = {
            "model": "gpt-audio",
            "messages": [{"role": "user", "content": [part]}],
            "max_completion_tokens": 10,
            "service_tier": "default",
        }

        assert (
            reserve("chat.completions", body, 100)
            == ((100 + 5 + 64) * Decimal(32) + 10 * Decimal(64)) / MILLION
        )

    def test_audio_asked_without_an_audio_rate_is_refused_by_name(self) -> None:
        """No audio rate known: the bill has no bound, and the error says why (not "unknown")."""
        body: dict[str, Any] = {
            "model": "gpt-4o-audio-preview",
            "messages": HI,
            "modalities": ["audio"],
        }

        with pytest.raises(UnpricedTokensError, match="audio"):
            reserve("chat.completions", body, 8)


class TestTiers:
    @pytest.mark.parametrize(
        ("requested", "served"),
        [
            (None, (None, "priority")),
            ("auto", (None, "priority")),
            ("default", (None,)),
            ("flex", ("flex",)),
            ("priority", ("priority",)),
        ],
    )
    def test_served_tiers(self, requested: str | None, served: tuple[str | None, ...]) -> None:
        """Only an explicit tier pins the rates; auto (or none) may be served at priority."""
        assert served_tiers(requested) == served

    def test_no_tier_reserves_priority(self) -> None:
        """gpt-5, no service_tier: priority's $2.50/$20, not standard's $1.25/$10."""
        body: dict[str, Any] = {"model": "gpt-5", "input": "hi", "max_output_tokens": 100}

        assert reserve("responses", body, 7) == (72 * Decimal("2.5") + 100 * Decimal(20)) / MILLION

    def test_unknown_explicit_tier_reserves_like_auto(self) -> None:
        """A tier no source prices reserves the dearest of standard and priority."""
        body: dict[str, Any] = {
            "model": "gpt-5",
            "input": "hi",
            "max_output_tokens": 100,
            "service_tier": "new",
        }

        assert reserve("responses", body, 7) == (72 * Decimal("2.5") + 100 * Decimal(20)) / MILLION

    def test_unknown_model_reserves_nothing(self) -> None:
        """No price at any tier: None (the caller decides), never a guess."""
        body: dict[str, Any] = {"model": "my-private-model", "input": "hi"}

        assert reserve("responses", body, 7) is None


class TestLongContextCliff:
    def test_input_just_under_the_threshold_reserves_long_context_rates(self) -> None:
        """
        gpt-5.4 reprices the whole request above 272k input tokens ($2.50/$15 -> $5/$22.50).
        An estimate of 271,990 is within the 5 % + 64 margin: 285,654 tokens at the long rates.
        """
        body: dict[str, Any] = {"model": "gpt-5.4", "input": "x", "max_output_tokens": 1000}
        body["service_tier"] = "default"

        reserved = reserve("responses", body, 271_990)

        assert input_margin(271_990) == 13_600 + 64
        assert reserved == (285_654 * Decimal(5) + 1000 * Decimal("22.5")) / MILLION
        billed = cost_of("gpt-5.4", Usage(input_tokens=272_001, output_tokens=1000)).total_usd
        assert billed == (272_001 * Decimal(5) + 1000 * Decimal("22.5")) / MILLION
        assert reserved is not None
        assert billed <= reserved

    def test_a_server_count_needs_no_margin(self) -> None:
        """An exact count (the server counted it) under the threshold keeps the base rates."""
        body: dict[str, Any] = {"model": "gpt-5.4", "input": "x", "max_output_tokens": 1000}
        body["service_tier"] = "default"

        assert (
            reserve("responses", body, 271_990, exact_input=True)
            == (271_990 * Decimal("2.5") + 1000 * Decimal(15)) / MILLION
        )


# -- the guarantee as a property -------------------------------------------------------------

# Priority prices (gpt-5, gpt-4.1, gpt-4o-mini), long-context cliffs (gpt-5.4, gpt-5.6, also a
# cache-write surcharge), audio rates (gpt-audio, gpt-audio-mini, a dated audio preview).
MODELS = [
    "gpt-5",
    "gpt-4.1",
    "gpt-4o-mini",
    "gpt-5.4",
    "gpt-5.6",
    "gpt-audio",
    "gpt-audio-mini",
    "gpt-4o-audio-preview-2024-12-17",
]
TIERS = [None, "auto", "default", "flex", "priority"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any], int]:
    """A request and its estimated input: near a long-context threshold half of the time."""
    api = draw(st.sampled_from(["chat.completions", "responses", "completions"]))
    if api == "completions":  # legacy: prompts x best_of (>= n) candidates x max_tokens
        body: dict[str, Any] = {
            "model": draw(st.sampled_from(["gpt-3.5-turbo-instruct", "davinci-002"])),
            "prompt": ["a"] * draw(st.integers(1, 3)),
            "n": draw(st.integers(1, 4)),
            "best_of": draw(st.integers(1, 6)),
        }
        if draw(st.booleans()):
            body["max_tokens"] = draw(st.integers(0, 5_000))
        return api, body, draw(st.integers(0, 100_000))
    model = draw(st.sampled_from(MODELS))
    body = {"model": model}
    tier = draw(st.sampled_from(TIERS))
    if tier is not None:
        body["service_tier"] = tier
    bound = draw(st.integers(0, 50_000))
    if draw(st.booleans()):  # audio in the input
        part = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
        turn = {"role": "user", "content": [part]}
        body["messages" if api == "chat.completions" else "input"] = [turn]
    if api == "chat.completions":
        body.setdefault("messages", HI)
        body["max_completion_tokens"] = bound
        body["n"] = draw(st.integers(1, 8))
        if draw(st.booleans()):
            body["modalities"] = ["text", "audio"]
    else:
        body.setdefault("input", "hi")
        body["max_output_tokens"] = bound
    if draw(st.booleans()):
        tokens = draw(st.integers(255_000, 272_000))  # just under gpt-5.4/5.6's 272k cliff
    else:
        tokens = draw(st.integers(0, 300_000))
    return api, body, tokens


def _served(model: str, requested: str | None) -> list[str | None]:
    tiers = [t for t in served_tiers(requested) if prices(model)(t) is not None]
    return tiers or [t for t in (None, "priority") if prices(model)(t) is not None]


# 300 examples in CI; a longer hunt: COSTMETER_RESERVE_EXAMPLES=20000 pytest tests/test_reserve.py
EXAMPLES = int(os.environ.get("COSTMETER_RESERVE_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(request=requests(), data=st.data())
def test_no_billable_usage_exceeds_the_reservation(
    request: tuple[str, dict[str, Any], int], data: st.DataObject
) -> None:
    """
    For any usage the request can be billed for (input up to the estimate plus the margin,
    split between plain, cached, cache-write and audio tokens; output up to the bound times
    ``n``, part of it audio when audio is possible; any tier the request can be served at),
    the exact cost is at most the reservation.
    """
    api, body, tokens = request
    model = body["model"]
    try:
        reserved = reserve(api, body, tokens)
    except UnpricedTokensError:  # audio asked of a model with no audio rate: no bound exists
        assert price_of(model).audio_output_per_mtok is None
        return
    assert reserved is not None
    served = data.draw(st.sampled_from(_served(model, body.get("service_tier"))))
    price = price_of(model, service_tier=served)
    audio_in_possible = isinstance(body.get("messages", body.get("input")), list) and (
        body.get("messages") is not HI
    )
    audio_out_possible = "modalities" in body or "audio" in model.split("-")
    billed_in = data.draw(st.integers(0, tokens + input_margin(tokens)))
    cached = data.draw(st.integers(0, billed_in))
    written = data.draw(st.integers(0, billed_in - cached))
    uncached = billed_in - cached - written
    audio_in = data.draw(st.integers(0, uncached)) if audio_in_possible else 0
    if api == "completions":
        candidates = max(body["n"], body["best_of"]) * len(body["prompt"])
        out_bound = body.get("max_tokens", 16) * candidates
    else:
        out_bound = body.get("max_completion_tokens", body.get("max_output_tokens")) * body.get(
            "n", 1
        )
    billed_out = data.draw(st.integers(0, out_bound))
    audio_out = data.draw(st.integers(0, billed_out)) if audio_out_possible else 0
    usage = Usage(
        input_tokens=billed_in,
        cached_input_tokens=cached,
        cache_write_input_tokens=written,
        output_tokens=billed_out,
        audio_input_tokens=audio_in,
        audio_output_tokens=audio_out,
    )

    assert cost_of(price, usage).total_usd <= reserved
