"""
Audio: ``audio.transcriptions``, ``audio.translations`` and ``audio.speech``.

How OpenAI bills them, and so how costmeter prices them:

* **Transcriptions and translations** are billed either by **duration** (whisper-1 at
  $0.006 a minute, gpt-transcribe; genai-prices' ``audio_seconds`` rate) or by **tokens**
  (gpt-4o-transcribe, gpt-4o-mini-transcribe, -diarize: audio input tokens at the audio rate,
  the prompt's text tokens at the text input rate, the transcript at the output rate). The
  response says which: ``usage.type`` is ``"duration"`` (``seconds``) or ``"tokens"``. Text,
  SRT and VTT bodies, translations, and verbose JSON without ``usage`` report nothing; the call
  is then billed as estimated (see `fallback_usage`) from the reported ``duration`` or the
  uploaded file's own duration.
* **Speech** returns audio bytes and no usage (except the ``speech.audio.done`` event of an
  SSE stream). tts-1/tts-1-hd are billed per input character, exactly known before sending;
  gpt-4o-mini-tts by text input tokens plus audio output tokens, estimated from the text.

The worst case before sending comes from the uploaded file's duration
(`costmeter._endpoints._audiofile`), converted with these documented rates:

* `AUDIO_TOKENS_PER_SECOND_BOUND` = 20. OpenAI tokenizes user audio at 10 tokens a second and
  model audio at 20 (1 token per 100 ms / 50 ms, Realtime API; community measurements, e.g.
  community.openai.com/t/971012). Reserving at the denser rate stays above the bill whichever
  the transcribe models use; OpenAI's own "~$0.006 / minute" estimate for gpt-4o-transcribe
  ($6 / 1M audio tokens) implies at most 1,000 audio tokens a minute, 16.7 a second.
* `TEXT_TOKENS_PER_SECOND_BOUND` = 10 transcript tokens per second of audio, plus
  `TEXT_TOKENS_FLOOR` (64): fast speech is ~4 words (~5.3 o200k tokens) a second in English;
  the margin covers languages that tokenize at up to twice that, and short clips.
* Estimates after the fact (no usage reported) use the typical rates instead:
  `AUDIO_TOKENS_PER_SECOND` = 10 audio input tokens a second, and the transcript's own tokens.

Speech (gpt-4o-mini-tts) audio output is 20 tokens per second of speech
(`SPEECH_TOKENS_PER_SECOND`, $12 / 1M = OpenAI's "~$0.015 / minute"). One measurement of
4,096 characters read in 268 s (sanand0's "OpenAI TTS cost", 2025-11-02) gives
15.3 characters a second: the estimate after the fact bills 4/3 audio tokens per character
(`SPEECH_TOKENS_PER_CHAR`), the worst case 5/2 (`SPEECH_TOKENS_PER_CHAR_BOUND`: 8 characters a
second, a slow narration), both divided by ``speed`` when it slows the speech down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar

from costmeter._endpoints import Endpoint, FilePart, Request, Reserve
from costmeter._endpoints._audiofile import worst_seconds
from costmeter._endpoints._common import first_rates, parts_cost
from costmeter._errors import ConfigurationError, PricingError, UnknownModelError
from costmeter._money import ZERO, money_math, parse_amount
from costmeter._observe import Observation, field_of
from costmeter._pricing import Cost, ModelPrice, cost_of, price_of
from costmeter._rates import UnitRates
from costmeter._usage import Usage

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "AUDIO_TOKENS_PER_SECOND_BOUND",
    "ENDPOINTS",
    "SPEECH_TOKENS_PER_CHAR",
    "SPEECH_TOKENS_PER_CHAR_BOUND",
    "SPEECH_TOKENS_PER_SECOND",
    "TEXT_TOKENS_FLOOR",
    "TEXT_TOKENS_PER_SECOND_BOUND",
    "SpeechEndpoint",
    "TranscriptionEndpoint",
    "TranslationEndpoint",
]

AUDIO_TOKENS_PER_SECOND_BOUND = 20
AUDIO_TOKENS_PER_SECOND = 10
TEXT_TOKENS_PER_SECOND_BOUND = 10
TEXT_TOKENS_FLOOR = 64
#: Words a second of typical speech (150 a minute), for transcripts the client never saw.
_TYPICAL_TEXT_TOKENS_PER_SECOND = Fraction(13, 4)  # 2.5 words x 1.3 tokens a word
SPEECH_TOKENS_PER_SECOND = 20
SPEECH_TOKENS_PER_CHAR = Fraction(4, 3)
SPEECH_TOKENS_PER_CHAR_BOUND = Fraction(5, 2)
#: known_speaker_references samples last 2 to 10 seconds each (API reference).
_SPEAKER_SAMPLE_SECONDS = 10


def _count_text(text: str, model: str) -> int:
    from costmeter._tokenizer import count_tokens  # noqa: PLC0415  (tokenizer: lazy)

    return count_tokens(text, model=model) if text else 0


def _texts(value: object) -> list[str]:
    """A form field's text values (repeated fields arrive as lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [v for v in value if isinstance(v, str)]
    return []


# -- pricing kinds -------------------------------------------------------------------------------


def _rates_for(request: Request, model: str | None = None) -> tuple[str, UnitRates | None]:
    """The model to price by and genai-prices' unit rates for it (first name that has them)."""
    names = (model, *request.price_models()) if model else request.price_models()
    found = first_rates(names)
    return found if found is not None else ((names[0] if names else ""), None)


def _seconds_rate(rates: UnitRates | None) -> Decimal | None:
    """USD per second of audio for a duration-billed model (whisper-1), else ``None``."""
    if rates is None or rates.get("input_audio_tokens") is not None:
        return None
    return rates.get("audio_seconds") or rates.get("input_audio_seconds")


def _token_price(model: str) -> ModelPrice | None:
    try:
        return price_of(model)
    except (UnknownModelError, ConfigurationError):
        return None


def _unit_cost(quantity: Decimal | int, rate: Decimal, rates: UnitRates, *, audio: bool) -> Cost:
    """The cost of an input billed per unit (seconds of *audio*, or characters of text)."""
    with money_math():
        amount = quantity * rate
    return parts_cost(
        source=rates.source,
        priced_as=rates.priced_as,
        input_usd=amount,
        audio_input_usd=amount if audio else ZERO,
    )


def _whole_seconds(seconds: Fraction | Decimal) -> Decimal:
    """
    Seconds billed for a duration costmeter measured itself: OpenAI rounds whisper-1 to the
    nearest second; rounding up is the side that never under-bills, and never bills $0.
    """
    return Decimal(max(math.ceil(seconds), 1))


# -- usage shapes --------------------------------------------------------------------------------


def _usage_of(usage: Any) -> Usage:
    """
    A transcription usage object (``type: "tokens"`` or ``"duration"``) or a speech
    ``speech.audio.done`` usage (tokens, all output audio) as a `Usage`.

    Raises:
        ConfigurationError: a count is negative or not a number (a `UsageError` for counts).
    """
    if field_of(usage, "type") == "duration":
        seconds = field_of(usage, "seconds")
        return Usage(audio_seconds=parse_amount(seconds, "usage.seconds"))
    details = field_of(usage, "input_token_details")
    audio = field_of(details, "audio_tokens")
    return Usage(
        input_tokens=field_of(usage, "input_tokens") or 0,
        output_tokens=field_of(usage, "output_tokens") or 0,
        audio_input_tokens=audio or 0,
    )


def _take(seen: Observation, usage: Usage | Any) -> None:
    try:
        seen.take_usage(usage if isinstance(usage, Usage) else _usage_of(usage))
    except ConfigurationError as exc:
        seen.usage_problem = str(exc)


# -- transcriptions and translations -------------------------------------------------------------


def _audio_file(request: Request) -> FilePart | None:
    return next((f for f in request.files if f.field == "file"), None)


class TranscriptionEndpoint(Endpoint):
    """``POST /audio/transcriptions``: a file in, text out; billed by duration or tokens."""

    api = "audio.transcriptions"
    paths: ClassVar[Sequence[tuple[str, str]]] = (("post", r"/audio/transcriptions"),)

    def estimate(self, request: Request) -> Reserve:
        """
        The dearest bill the file can produce: its duration (read from its header, else
        bounded from its size) at the model's duration rate, or as audio tokens at
        `AUDIO_TOKENS_PER_SECOND_BOUND` plus the prompt and a transcript bounded at
        `TEXT_TOKENS_PER_SECOND_BOUND`.
        """
        seconds, reasons = self.audio_seconds(request)
        model, rates = _rates_for(request)
        rate = _seconds_rate(rates)
        if rate is not None and rates is not None:
            cost = _unit_cost(_whole_seconds(seconds), rate, rates, audio=True).total_usd
            return Reserve(cost, input_tokens=0, complete=not reasons, reasons=tuple(reasons))
        price = _token_price(model) if model else None
        prompt = _count_text(self._prompt(request), model or "whisper-1")
        speakers = len(_texts(request.body.get("known_speaker_references")))
        audio = math.ceil(
            (seconds + speakers * _SPEAKER_SAMPLE_SECONDS) * AUDIO_TOKENS_PER_SECOND_BOUND
        )
        if price is None:
            return Reserve(
                None, input_tokens=audio + prompt, complete=not reasons, reasons=tuple(reasons)
            )
        output = math.ceil(seconds * TEXT_TOKENS_PER_SECOND_BOUND) + TEXT_TOKENS_FLOOR
        usage = Usage(input_tokens=audio + prompt, audio_input_tokens=audio, output_tokens=output)
        cost = self._token_cost(price, usage).total_usd
        return Reserve(
            cost, input_tokens=audio + prompt, complete=not reasons, reasons=tuple(reasons)
        )

    def audio_seconds(self, request: Request) -> tuple[Fraction, list[str]]:
        """
        The longest the request's audio can play, and why that is not exact (no reasons: read
        from the uploaded file's header).
        """
        part = _audio_file(request)
        seconds, exact = worst_seconds(part.content if part is not None else None)
        reasons: list[str] = []
        if part is None:
            reasons.append("no audio file in the request: bounded by the 25 MB upload limit")
        elif part.content is None:
            reasons.append("audio file not readable before sending: 25 MB upload limit bound")
        elif not exact:
            reasons.append("audio duration not readable: bounded from the file size")
        return seconds, reasons

    @staticmethod
    def _prompt(request: Request) -> str:
        return " ".join(_texts(request.body.get("prompt")) + _texts(request.body.get("keywords")))

    def observe(self, seen: Observation, obj: Any) -> None:
        """
        A `Transcription`/`TranscriptionVerbose`/`TranscriptionDiarized`/`Translation*` model,
        a ``transcript.text.delta``/``.done`` event, a plain-text body (``str``), or any of
        them as a JSON dict.
        """
        seen.received = True
        if isinstance(obj, str):  # text, srt and vtt bodies: the transcript, no usage
            seen.deltas.append(obj)
            seen.take_status("completed")
            return
        kind = field_of(obj, "type")
        if kind == "transcript.text.delta":
            delta = field_of(obj, "delta")
            if isinstance(delta, str):
                seen.deltas.append(delta)
            return
        if kind == "transcript.text.segment":
            return
        text = field_of(obj, "text")
        if kind == "transcript.text.done" or text is not None:
            seen.final_response = obj
            if isinstance(text, str) and text and not seen.deltas:
                seen.deltas.append(text)
            seen.take_status("completed")
        usage = field_of(obj, "usage")
        if usage is not None:
            _take(seen, usage)
        if seen.request_id is None:
            request_id = getattr(obj, "_request_id", None)
            if isinstance(request_id, str):
                seen.request_id = request_id

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """
        No usage came back (text/srt/vtt, translations, verbose JSON without it). Duration
        models: the ``duration`` the response reported, else the file's own, in whole seconds
        rounded up. Token models: the duration at the typical `AUDIO_TOKENS_PER_SECOND`, the
        prompt's tokens, and the transcript's tokens (when the client saw no transcript, a
        typical 150 words a minute).
        """
        reported = field_of(seen.final_response, "duration")
        if isinstance(reported, (int, float)) and not isinstance(reported, bool) and reported >= 0:
            seconds: Fraction | Decimal = parse_amount(reported, "duration")
        else:
            seconds = self.audio_seconds(request)[0]
        model, rates = _rates_for(request)
        if _seconds_rate(rates) is not None:
            return Usage(audio_seconds=_whole_seconds(seconds))
        model = model or "gpt-4o-transcribe"
        audio = max(math.ceil(Fraction(seconds) * AUDIO_TOKENS_PER_SECOND), 1)
        prompt = _count_text(self._prompt(request), model)
        text = "".join(seen.deltas)
        output = (
            _count_text(text, model)
            if text
            else math.ceil(Fraction(seconds) * _TYPICAL_TEXT_TOKENS_PER_SECOND)
        )
        return Usage(input_tokens=audio + prompt, audio_input_tokens=audio, output_tokens=output)

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        """Duration usage at the per-second rate; token usage at the text and audio rates."""
        if usage.audio_seconds:
            _name, rates = _rates_for(request, model)
            rate = _seconds_rate(rates)
            if rate is None or rates is None:
                raise PricingError(
                    f"no per-second audio price for {model!r}: it reported duration usage"
                )
            return _unit_cost(usage.audio_seconds, rate, rates, audio=True)
        return self._token_cost(price_of(model, service_tier=service_tier), usage)

    @staticmethod
    def _token_cost(price: ModelPrice, usage: Usage) -> Cost:
        return cost_of(price, usage)


class TranslationEndpoint(TranscriptionEndpoint):
    """``POST /audio/translations``: billed like a transcription (whisper-1, by duration)."""

    api = "audio.translations"
    paths = (("post", r"/audio/translations"),)


# -- speech --------------------------------------------------------------------------------------


def _speech_slowdown(body: Mapping[str, Any]) -> Fraction:
    """How many times longer than normal ``speed`` makes the speech (>= 1: never shorter)."""
    speed = body.get("speed")
    if isinstance(speed, (int, float)) and not isinstance(speed, bool) and 0 < speed < 1:
        return 1 / Fraction(repr(float(speed)))
    return Fraction(1)


class SpeechEndpoint(Endpoint):
    """``POST /audio/speech``: text in, audio bytes out; no usage in the body."""

    api = "audio.speech"
    paths = (("post", r"/audio/speech"),)

    @staticmethod
    def _input(request: Request) -> str:
        text = request.body.get("input")
        return text if isinstance(text, str) else ""

    def _usage(self, request: Request, tokens_per_char: Fraction) -> Usage:
        model, rates = _rates_for(request)
        text = self._input(request)
        if rates is not None and rates.get("input_characters") is not None:
            return Usage(input_characters=len(text))
        instructions = request.body.get("instructions")
        prompt = text + (instructions if isinstance(instructions, str) else "")
        audio = math.ceil(len(text) * tokens_per_char * _speech_slowdown(request.body))
        return Usage(
            input_tokens=_count_text(prompt, model or "gpt-4o-mini-tts"),
            output_tokens=audio,
            audio_output_tokens=audio,
        )

    def estimate(self, request: Request) -> Reserve:
        """
        tts-1/-hd: exactly the input's characters at the per-character rate. gpt-4o-mini-tts:
        the input and instructions' tokens, and audio output at `SPEECH_TOKENS_PER_CHAR_BOUND`.
        """
        usage = self._usage(request, SPEECH_TOKENS_PER_CHAR_BOUND)
        model = request.price_models()[0] if request.price_models() else ""
        try:
            cost = self.price(model, usage, request, None).total_usd
        except (PricingError, ConfigurationError):
            return Reserve(None, input_tokens=usage.input_tokens)
        return Reserve(cost, input_tokens=usage.input_tokens)

    def observe(self, seen: Observation, obj: Any) -> None:
        """Audio bytes (nothing to read), or the SSE stream's ``speech.audio.done`` usage."""
        seen.received = True
        if field_of(obj, "type") == "speech.audio.done":
            seen.take_status("completed")
            usage = field_of(obj, "usage")
            if usage is not None:
                _take(seen, self._speech_usage(usage))

    @staticmethod
    def _speech_usage(usage: Any) -> Usage | Any:
        """A ``speech.audio.done`` usage: every output token is audio."""
        try:
            tokens = _usage_of(usage)
        except ConfigurationError:
            return usage
        return replace(tokens, audio_output_tokens=tokens.output_tokens)

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """The characters sent (exact), or the text's tokens and `SPEECH_TOKENS_PER_CHAR`."""
        return self._usage(request, SPEECH_TOKENS_PER_CHAR)

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        """
        Per character (tts-1: genai-prices ``input_characters``), else per token. genai-prices
        publishes gpt-4o-mini-tts's audio output price as its output rate: where a price has
        no separate audio output rate, the output tokens are billed at the output rate and the
        event shows all of it as audio.
        """
        if usage.input_characters:
            _name, rates = _rates_for(request, model)
            per_char = rates.get("input_characters") if rates is not None else None
            if per_char is None or rates is None:
                raise PricingError(f"no per-character price for {model!r}")
            return _unit_cost(usage.input_characters, per_char, rates, audio=False)
        price = price_of(model, service_tier=service_tier)
        if price.audio_output_per_mtok is not None:
            return cost_of(price, usage)
        cost = cost_of(price, replace(usage, audio_output_tokens=0))
        return replace(cost, audio_output_usd=cost.output_usd)


ENDPOINTS = (TranscriptionEndpoint(), TranslationEndpoint(), SpeechEndpoint())
