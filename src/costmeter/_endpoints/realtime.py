"""
The WebSocket APIs: ``realtime.connect()`` (api ``realtime``) and ``responses.connect()`` (api
``responses.websocket``). One ``costmeter.call`` per *response* the connection produces.

No HTTP request carries them, so they have no `paths`: `costmeter._realtime` watches the
connection's frames and drives a `costmeter._meter.Call` per ``response.create`` with these
endpoints.

**Realtime pricing.** A Realtime ``response.done`` reports usage in its own shape::

    usage: {input_tokens, output_tokens,
            input_token_details: {text_tokens, audio_tokens, image_tokens, cached_tokens,
                                  cached_tokens_details: {text_tokens, audio_tokens, image_tokens}},
            output_token_details: {text_tokens, audio_tokens}}

Each kind is billed at its own genai-prices rate: uncached text, audio and image input at
``input_tokens``/``input_audio_tokens``/``input_image_tokens``; cached reads at
``cache_read_tokens``/``cache_audio_read_tokens``/``cache_image_read_tokens`` (a kind with no
published cache rate is billed at its uncached rate: never under); output text and audio at
``output_tokens``/``output_audio_tokens``. Missing detail objects: the rest of the input is text.

**Realtime worst case.** The conversation lives on the server, so the estimate is never complete:
its input is bounded by what *this connection* sent so far (`Conversation`): the text of
instructions and items (counted with the model's tokenizer), audio appended or sent in items at
`AUDIO_TOKENS_PER_SECOND` (10: user audio is one token per 100 ms) from its byte length and the
session's input format, and every earlier response's reported output (it becomes input of later
turns). All of it is priced at the dearest input rate of its kind, uncached. Output is the
response's ``max_output_tokens`` (the session's, or ``"inf"``: `DEFAULT_MAX_OUTPUT_TOKENS`),
at the *audio* output rate when the output modalities include audio (the session default).
Images sent in items are not counted (``images_not_counted``).

**Responses over WebSocket** bill exactly like ``POST /responses``: the ``response.create``
event's fields are the request body.

**Input audio transcription** (api ``realtime.transcription``): a transcription session
(``type: "transcription"``, ``intent=transcription``) — or a conversation session with
``audio.input.transcription`` turned on — transcribes each committed audio item on a separate
ASR model, billed "according to the ASR model's pricing rather than the realtime model's"
(SDK: ``ConversationItemInputAudioTranscriptionCompletedEvent.usage``). Each
``conversation.item.input_audio_transcription.completed`` event is one call, priced like
``audio.transcriptions`` from its usage (``type: "tokens"`` at the model's text/audio rates,
``type: "duration"`` per second). The model is the session's transcription model. The server
starts transcriptions itself, so nothing can be refused; the call reserves what the budgets
allow of its worst case: all the audio the connection appended since the last transcription,
bounded like an uploaded file of that length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._endpoints._common import count, parts_cost
from costmeter._endpoints.audio import TranscriptionEndpoint
from costmeter._endpoints.responses import Responses
from costmeter._errors import UnknownModelError
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation, field_of
from costmeter._pricing import Cost, UnpricedTokensError
from costmeter._rates import UnitRates, unit_rates
from costmeter._usage import Usage
from costmeter._worst_case import DEFAULT_MAX_OUTPUT_TOKENS

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "CONVERSATION_KEY",
    "ENDPOINTS",
    "Realtime",
    "RealtimeTranscription",
    "RealtimeUsage",
    "ResponsesWebSocket",
    "realtime_usage",
]

#: User audio is tokenized at one token per 100 ms (Realtime API; community.openai.com/t/971012).
AUDIO_TOKENS_PER_SECOND = 10
#: The request-body key (costmeter's own, never sent) carrying what the connection sent so far.
CONVERSATION_KEY = "costmeter_conversation"


@dataclass(frozen=True, slots=True)
class RealtimeUsage(Usage):
    """
    A `Usage` with the Realtime split of cached input: ``cached_input_tokens`` is their sum,
    and each kind has its own cache rate.
    """

    cached_audio_input_tokens: int = 0
    cached_image_input_tokens: int = 0


def realtime_usage(usage: Any) -> RealtimeUsage:
    """A Realtime ``response.done`` usage (SDK model or dict) as a `RealtimeUsage`."""
    details = field_of(usage, "input_token_details")
    cached = field_of(details, "cached_tokens_details")
    out = field_of(usage, "output_token_details")
    cached_audio, cached_image = count(cached, "audio_tokens"), count(cached, "image_tokens")
    return RealtimeUsage(
        input_tokens=count(usage, "input_tokens"),
        cached_input_tokens=max(count(details, "cached_tokens"), cached_audio + cached_image),
        output_tokens=count(usage, "output_tokens"),
        audio_input_tokens=count(details, "audio_tokens"),
        image_input_tokens=count(details, "image_tokens"),
        audio_output_tokens=count(out, "audio_tokens"),
        cached_audio_input_tokens=cached_audio,
        cached_image_input_tokens=cached_image,
    )


def _rates(model: str) -> UnitRates:
    rates = unit_rates(model)
    if rates is None or rates.get("input_tokens") is None or rates.get("output_tokens") is None:
        raise UnknownModelError(model, ("genai-prices",))
    return rates


def _rate(rates: UnitRates, *units: str, kind: str) -> Decimal:
    """The first published rate of *units*; none: the tokens cannot be priced."""
    for unit in units:
        rate = rates.get(unit)
        if rate is not None:
            return rate
    raise UnpricedTokensError(kind, rates.priced_as, rates.source)


class Realtime(Endpoint):
    """One Realtime response (``response.create`` or server VAD) of a ``realtime.connect()``."""

    api = "realtime"

    def estimate(self, request: Request) -> Reserve:
        model = next(iter(request.price_models()), "")
        rates = _rates(model)
        sent = request.body.get(CONVERSATION_KEY)
        sent = sent if isinstance(sent, Mapping) else {}
        text, audio = int(sent.get("text_tokens", 0)), int(sent.get("audio_tokens", 0))
        limit = request.body.get("max_output_tokens")
        output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_OUTPUT_TOKENS
        modalities = request.body.get("output_modalities") or ("audio",)
        out_rate = (
            _rate(rates, "output_audio_tokens", kind="audio")
            if "audio" in modalities
            else _rate(rates, "output_tokens", kind="text")
        )
        reasons = ["server_side_conversation"]
        if sent.get("images"):
            reasons.append("images_not_counted")
        with money_math():
            cost = (
                text * _rate(rates, "input_tokens", kind="text")
                + audio * _rate(rates, "input_audio_tokens", kind="audio")
                + output * out_rate
            )
        return Reserve(cost, text + audio, False, tuple(reasons))

    def observe(self, seen: Observation, obj: Any) -> None:
        seen.received = True
        kind = field_of(obj, "type")
        if isinstance(kind, str) and kind.endswith(".delta"):
            delta = field_of(obj, "delta")
            if isinstance(delta, str) and "audio" not in kind:
                seen.deltas.append(delta)
            return
        response = field_of(obj, "response")
        if response is None:
            return
        seen.response_id = field_of(response, "id") or seen.response_id
        if kind == "response.done":
            seen.take_status(field_of(response, "status"))
            seen.final_response = response
        usage = field_of(response, "usage")
        if usage is not None:
            seen.take_usage(realtime_usage(usage))

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        rates = _rates(model)
        cached_audio = cached_image = 0
        if isinstance(usage, RealtimeUsage):
            cached_audio, cached_image = (
                usage.cached_audio_input_tokens,
                usage.cached_image_input_tokens,
            )
        cached_text = usage.cached_input_tokens - cached_audio - cached_image
        audio_in = max(usage.audio_input_tokens - cached_audio, 0)
        image_in = max(usage.image_input_tokens - cached_image, 0)
        text_in = usage.input_tokens - usage.cached_input_tokens - audio_in - image_in
        audio_out = usage.audio_output_tokens
        text_out = usage.output_tokens - audio_out
        if min(cached_text, text_in, text_out) < 0:
            raise UnpricedTokensError("inconsistent", rates.priced_as, rates.source)
        with money_math():
            audio_in_usd = (
                audio_in * _rate(rates, "input_audio_tokens", kind="audio") if audio_in else ZERO
            )
            image_usd = (
                image_in * _rate(rates, "input_image_tokens", kind="image") if image_in else ZERO
            )
            input_usd = text_in * _rate(rates, "input_tokens", kind="text") + audio_in_usd
            input_usd += image_usd
            cached_usd = cached_text * _rate(
                rates, "cache_read_tokens", "input_tokens", kind="text"
            )
            if cached_audio:
                cached_usd += cached_audio * _rate(
                    rates, "cache_audio_read_tokens", "input_audio_tokens", kind="audio"
                )
            if cached_image:
                cached_usd += cached_image * _rate(
                    rates, "cache_image_read_tokens", "input_image_tokens", kind="image"
                )
            audio_out_usd = (
                audio_out * _rate(rates, "output_audio_tokens", kind="audio") if audio_out else ZERO
            )
            output_usd = text_out * _rate(rates, "output_tokens", kind="text") + audio_out_usd
        return parts_cost(
            source=rates.source,
            priced_as=rates.priced_as,
            input_usd=input_usd,
            cached_input_usd=cached_usd,
            output_usd=output_usd,
            audio_input_usd=audio_in_usd,
            audio_output_usd=audio_out_usd,
        )


_HTTP_RESPONSES = Responses()


class ResponsesWebSocket(Endpoint):
    """A ``response.create`` sent over ``responses.connect()``: billed as ``POST /responses``."""

    api = "responses.websocket"

    def estimate(self, request: Request) -> Reserve:
        return _HTTP_RESPONSES.estimate(request)

    def observe(self, seen: Observation, obj: Any) -> None:
        _HTTP_RESPONSES.observe(seen, obj)

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        return _HTTP_RESPONSES.price(model, usage, request, service_tier)


class RealtimeTranscription(TranscriptionEndpoint):
    """One input audio transcription of a Realtime session (see the module docstring)."""

    api = "realtime.transcription"
    paths = ()  # no HTTP request carries it: `costmeter._realtime` drives it

    def audio_seconds(self, request: Request) -> tuple[Fraction, list[str]]:
        """The audio appended since the last transcription: no item can be longer."""
        sent = request.body.get(CONVERSATION_KEY)
        seconds = sent.get("audio_seconds") if isinstance(sent, Mapping) else None
        try:
            return max(Fraction(str(seconds)), Fraction(0)), ["server_side_audio_items"]
        except (ValueError, ZeroDivisionError):
            return Fraction(0), ["server_side_audio_items", "audio_not_seen"]

    def observe(self, seen: Observation, obj: Any) -> None:
        """A ``...input_audio_transcription.completed`` event: the transcript and its usage."""
        item = field_of(obj, "item_id")
        seen.response_id = item if isinstance(item, str) else seen.response_id  # no response
        transcript = field_of(obj, "transcript")
        text = transcript if isinstance(transcript, str) else ""
        super().observe(seen, {"text": text, "usage": field_of(obj, "usage")})


def audio_tokens(byte_count: int, bytes_per_second: int) -> int:
    """Audio input tokens of *byte_count* bytes of audio (`AUDIO_TOKENS_PER_SECOND`), rounded up."""
    return math.ceil(byte_count * AUDIO_TOKENS_PER_SECOND / max(bytes_per_second, 1))


ENDPOINTS = (Realtime(), ResponsesWebSocket(), RealtimeTranscription())
