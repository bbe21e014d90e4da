"""
Audio through the metered clients, over real loopback HTTP (`costmeter.testing.FakeOpenAI`):
transcriptions and translations (duration- and token-billed, every response format, streamed),
speech (per character and per token), budgets refusing long files before sending.

Published rates the expected costs are computed from (OpenAI pricing page, genai-prices):

* whisper-1: $0.006 a minute = $0.0001 a second.
* gpt-4o-transcribe: $2.50 / 1M text input, $6 / 1M audio input, $10 / 1M output tokens.
* gpt-4o-mini-transcribe: $1.25 / 1M text input, $3 / 1M audio input, $5 / 1M output tokens.
* tts-1: $15 / 1M characters; tts-1-hd: $30 / 1M characters.
* gpt-4o-mini-tts: $0.60 / 1M text input tokens, $12 / 1M audio output tokens.

The fake server reports ``ceil(duration)`` seconds for whisper-1 and ``ceil(10 * duration)``
audio tokens, ``len(prompt) // 4`` text tokens and 20 output tokens for the gpt-4o models.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from decimal import Decimal
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI

from . import endpoint_fixtures
from .helpers import calls, money
from .test_audiofile import webm_file

WHISPER_PER_SECOND = Decimal("0.006") / 60
MILLION = Decimal(1_000_000)


def wav_file(seconds: float, *, rate: int = 8_000) -> bytes:
    """A silent 8-bit mono WAV (rate bytes a second), written by the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(rate)
        writer.writeframes(b"\x80" * round(rate * seconds))
    return out.getvalue()


THREE_SECONDS = ("speech.wav", wav_file(3.0), "audio/wav")


client, aclient = endpoint_fixtures.client, endpoint_fixtures.aclient
_fresh_server = endpoint_fixtures._fresh_server


def _one_event(logs: list[dict[str, Any]]) -> dict[str, Any]:
    [event] = calls(logs)
    assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"])
    return event


def _gpt4o_transcribe(audio: int, text: int, output: int) -> Decimal:
    return (audio * Decimal(6) + text * Decimal("2.5") + output * Decimal(10)) / MILLION


class TestTranscriptions:
    def test_whisper_duration_usage(self, client: costmeter.OpenAI) -> None:
        """whisper-1 reports 3 s of duration usage: 3 x $0.0001."""
        with capture_logs() as logs:
            result = client.audio.transcriptions.create(model="whisper-1", file=THREE_SECONDS)

        assert isinstance(result, openai.types.audio.Transcription)
        event = _one_event(logs)
        assert {
            "api": "audio.transcriptions",
            "model": "whisper-1",
            "usage_source": "reported",
            "price_status": "ok",
            "outcome": "ok",
        }.items() <= event.items()
        assert Decimal(3) == Decimal(str(event["audio_seconds"]))
        assert Decimal("0.0003") == 3 * WHISPER_PER_SECOND == money(event["cost_usd"])
        # The WAV header says 3 s: the reservation is exactly the bill.
        assert Decimal("0.0003") == money(event["estimated_cost_usd"])

    def test_token_usage_with_prompt(self, client: costmeter.OpenAI) -> None:
        """gpt-4o-transcribe: 30 audio tokens at $6, 3 prompt tokens at $2.50, 20 out at $10."""
        prompt = "Names: Ada, Grace."  # 18 characters: the fake reports 18 // 4 = 4 text tokens
        with capture_logs() as logs:
            client.audio.transcriptions.create(
                model="gpt-4o-transcribe", file=THREE_SECONDS, prompt=prompt
            )

        event = _one_event(logs)
        assert (34, 30, 20) == (
            event["input_tokens"],
            event["audio_input_tokens"],
            event["output_tokens"],
        )
        expected = (30 * Decimal(6) + 4 * Decimal("2.5") + 20 * Decimal(10)) / MILLION
        assert Decimal("0.00039") == expected == money(event["cost_usd"])

    def test_streamed_sync(self, client: costmeter.OpenAI) -> None:
        """The usage of the transcript.text.done event: 30 audio at $3, 20 out at $5 per 1M."""
        with capture_logs() as logs:
            stream = client.audio.transcriptions.create(
                model="gpt-4o-mini-transcribe", file=THREE_SECONDS, stream=True
            )
            kinds = [event.type for event in stream]

        assert "transcript.text.done" == kinds[-1]
        event = _one_event(logs)
        assert (True, "reported") == (event["stream"], event["usage_source"])
        assert Decimal("0.00019") == (30 * 3 + 20 * 5) / MILLION == money(event["cost_usd"])

    async def test_streamed_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            stream = await aclient.audio.transcriptions.create(
                model="gpt-4o-transcribe", file=THREE_SECONDS, stream=True
            )
            async for _ in stream:
                pass

        event = _one_event(logs)
        assert "reported" == event["usage_source"]
        assert _gpt4o_transcribe(30, 0, 20) == money(event["cost_usd"])

    async def test_async_whisper(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.audio.transcriptions.create(model="whisper-1", file=THREE_SECONDS)

        assert Decimal("0.0003") == money(_one_event(logs)["cost_usd"])

    @pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
    def test_plain_text_formats_bill_the_file_duration(
        self, client: costmeter.OpenAI, fmt: str
    ) -> None:
        """No usage in a text body: the WAV header's 3 s, flagged as estimated."""
        with capture_logs() as logs:
            result = client.audio.transcriptions.create(
                model="whisper-1", file=THREE_SECONDS, response_format=fmt
            )

        assert isinstance(result, str)
        event = _one_event(logs)
        assert "estimated" == event["usage_source"]
        assert Decimal("0.0003") == money(event["cost_usd"])

    def test_verbose_json_without_usage_bills_the_reported_duration(
        self, client: costmeter.OpenAI
    ) -> None:
        """duration 2.5 s and no usage: billed 3 whole seconds (rounded up), estimated."""
        file = ("clip.wav", wav_file(2.5), "audio/wav")
        with capture_logs() as logs:
            result = client.audio.transcriptions.create(
                model="whisper-1",
                file=file,
                response_format="verbose_json",
                extra_headers={"x-fake-omit-usage": "1"},
            )

        assert 2.5 == result.duration
        event = _one_event(logs)
        assert "estimated" == event["usage_source"]
        assert Decimal("0.0003") == money(event["cost_usd"])

    def test_raw_response(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            raw = client.audio.transcriptions.with_raw_response.create(
                model="gpt-4o-mini-transcribe", file=THREE_SECONDS
            )
            raw.parse()

        event = _one_event(logs)
        assert "reported" == event["usage_source"]
        assert Decimal("0.00019") == money(event["cost_usd"])

    def test_token_model_without_usage_is_estimated_from_the_file(
        self, client: costmeter.OpenAI
    ) -> None:
        """
        No usage: 3 s at 10 audio tokens a second (30 x $6) plus the transcript received
        ("The quick brown fox": 4 o200k tokens x $10) per 1M.
        """
        with capture_logs() as logs:
            client.audio.transcriptions.create(
                model="gpt-4o-transcribe",
                file=THREE_SECONDS,
                extra_headers={"x-fake-omit-usage": "1", "x-fake-output-tokens": "4"},
            )

        event = _one_event(logs)
        assert "estimated" == event["usage_source"]
        assert _gpt4o_transcribe(30, 0, 4) == money(event["cost_usd"])

    def test_open_file_is_read_and_rewound(self, client: costmeter.OpenAI, tmp_path: Any) -> None:
        """
        An open (seekable) file: its header is read and the file rewound before the SDK sends
        it, so the worst case is exact (3 s x $0.0001) and the upload is whole.
        """
        path = tmp_path / "speech.wav"
        path.write_bytes(THREE_SECONDS[1])
        with capture_logs() as logs, path.open("rb") as handle:
            handle.read(10)  # the SDK sends from the current position: so do we
            handle.seek(0)
            client.audio.transcriptions.create(model="whisper-1", file=handle)

        event = _one_event(logs)
        assert (True, "reported") == (event["estimate_complete"], event["usage_source"])
        assert Decimal("0.0003") == money(event["estimated_cost_usd"]) == money(event["cost_usd"])

    def test_unreadable_file_bounded_by_the_upload_limit(self, client: costmeter.OpenAI) -> None:
        """
        A file that cannot be read before sending (a pipe-like stream): the worst case is the
        25 MB upload limit at 6 kbit/s, 34,952.5 s -> 34,953 whole seconds x $0.0001.
        """

        class Unseekable(io.RawIOBase):
            def __init__(self, data: bytes) -> None:
                self.inner = io.BytesIO(data)

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                return self.inner.readinto(buffer)

        with capture_logs() as logs:
            client.audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", Unseekable(THREE_SECONDS[1]))
            )

        event = _one_event(logs)
        assert (False, "reported") == (event["estimate_complete"], event["usage_source"])
        assert (
            Decimal("3.4953") == 34_953 * WHISPER_PER_SECOND == money(event["estimated_cost_usd"])
        )
        assert Decimal("0.0003") == money(event["cost_usd"])

    def test_path_is_read(self, client: costmeter.OpenAI, tmp_path: Any) -> None:
        """A path: the SDK reads the bytes before sending, so the header is read: exact."""
        path = tmp_path / "speech.wav"
        path.write_bytes(THREE_SECONDS[1])
        with capture_logs() as logs:
            client.audio.transcriptions.create(model="whisper-1", file=path)

        event = _one_event(logs)
        assert Decimal("0.0003") == money(event["estimated_cost_usd"]) == money(event["cost_usd"])

    def test_webm_duration_is_read(self, client: costmeter.OpenAI) -> None:
        """A WebM whose Segment Info says 4,000 ms: reserved 4 s x $0.0001, exact."""
        data = webm_file(struct.pack(">d", 4000.0))
        with capture_logs() as logs:
            client.audio.transcriptions.create(
                model="whisper-1",
                file=("speech.webm", data, "audio/webm"),
                extra_headers={"x-fake-audio-seconds": "4"},
            )

        event = _one_event(logs)
        assert (True, Decimal("0.0004")) == (
            event["estimate_complete"],
            money(event["estimated_cost_usd"]),
        )
        assert 4 * WHISPER_PER_SECOND == money(event["cost_usd"])

    def test_unusable_usage_falls_back_to_the_file(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A negative duration cannot be billed: the WAV's 3 s are, and the event says why."""
        server.replay_next(
            {"text": "hi", "usage": {"type": "duration", "seconds": -1}},
            stream=False,
            path="/v1/audio/transcriptions",
        )
        with capture_logs() as logs:
            client.audio.transcriptions.create(model="whisper-1", file=THREE_SECONDS)

        event = _one_event(logs)
        assert "estimated" == event["usage_source"]
        assert "usage.seconds" in event["usage_problem"]
        assert Decimal("0.0003") == money(event["cost_usd"])

    def test_speaker_references_are_reserved(self, client: costmeter.OpenAI) -> None:
        """
        gpt-4o-transcribe-diarize with two known speaker samples (up to 10 s each): reserved
        (3 + 2 x 10) s x 20 = 460 audio tokens x $6 and 3 x 10 + 64 = 94 output tokens x $10;
        billed the reported 30 audio and 20 output tokens.
        """
        sample = "data:audio/wav;base64,UklGRg=="
        with capture_logs() as logs:
            client.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize",
                file=THREE_SECONDS,
                response_format="diarized_json",
                chunking_strategy="auto",
                known_speaker_names=["agent", "customer"],
                known_speaker_references=[sample, sample],
            )

        event = _one_event(logs)
        assert _gpt4o_transcribe(460, 0, 94) == money(event["estimated_cost_usd"])
        assert _gpt4o_transcribe(30, 0, 20) == money(event["cost_usd"])


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK deprecates it
class TestTranslations:
    def test_json_bills_the_file_duration(self, client: costmeter.OpenAI) -> None:
        """Translations report no usage at all: whisper-1 billed the WAV's 3 s, estimated."""
        with capture_logs() as logs:
            client.audio.translations.create(model="whisper-1", file=THREE_SECONDS)

        event = _one_event(logs)
        assert ("audio.translations", "estimated") == (event["api"], event["usage_source"])
        assert Decimal("0.0003") == money(event["cost_usd"])

    async def test_async_verbose(self, aclient: costmeter.AsyncOpenAI) -> None:
        file = ("clip.wav", wav_file(61.2), "audio/wav")
        with capture_logs() as logs:
            await aclient.audio.translations.create(
                model="whisper-1", file=file, response_format="verbose_json"
            )

        event = _one_event(logs)
        assert Decimal("0.0062") == 62 * WHISPER_PER_SECOND == money(event["cost_usd"])


class TestSpeech:
    def test_tts1_per_character(self, client: costmeter.OpenAI) -> None:
        """tts-1: 28 characters x $15 / 1M, known exactly before sending."""
        text = "Hello world, this is a test."
        with capture_logs() as logs:
            audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text)

        assert 32 * len(text) == len(audio.content)
        event = _one_event(logs)
        assert {"api": "audio.speech", "usage_source": "estimated"}.items() <= event.items()
        assert 28 == event["input_characters"]
        assert Decimal("0.00042") == 28 * Decimal(15) / MILLION == money(event["cost_usd"])
        assert money(event["estimated_cost_usd"]) == money(event["cost_usd"])

    async def test_tts1_hd_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.audio.speech.create(
                model="tts-1-hd", voice="onyx", input=("Narrate me. " * 84)[:1000]
            )

        assert (
            Decimal("0.03") == 1000 * Decimal(30) / MILLION == money(_one_event(logs)["cost_usd"])
        )

    def test_gpt4o_mini_tts_estimated_from_the_text(self, client: costmeter.OpenAI) -> None:
        """
        "Hello world": 2 o200k input tokens x $0.60, and 11 characters x 4/3 = 15 audio
        tokens (20 a second at 15 characters a second) x $12, per 1M.
        """
        with capture_logs() as logs:
            client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input="Hello world")

        event = _one_event(logs)
        assert "estimated" == event["usage_source"]
        assert (2, 15) == (event["input_tokens"], event["output_tokens"])
        expected = (2 * Decimal("0.6") + 15 * Decimal(12)) / MILLION
        assert Decimal("0.0001812") == expected == money(event["cost_usd"])

    def test_raw_response(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            raw = client.audio.speech.with_raw_response.create(
                model="tts-1", voice="alloy", input="Hello world"
            )
            audio = raw.parse()

        assert 32 * 11 == len(audio.content)
        event = _one_event(logs)
        assert (11, "estimated") == (event["input_characters"], event["usage_source"])
        assert Decimal("0.000165") == 11 * Decimal(15) / MILLION == money(event["cost_usd"])

    def test_sse_stream_reports_its_usage(self, client: costmeter.OpenAI) -> None:
        """
        ``stream_format="sse"``: the SDK returns the body as bytes, but its ``speech.audio.done``
        event reports usage (fake: 41 characters -> 41 // 4 + 1 = 11 input tokens, 60 output),
        billed as reported: 11 x $0.60 + 60 x $12, per 1M.
        """
        text = "Read this sentence aloud, please, slowly."
        with capture_logs() as logs:
            client.audio.speech.create(
                model="gpt-4o-mini-tts", voice="coral", input=text, stream_format="sse"
            )

        event = _one_event(logs)
        assert ("reported", 11, 60) == (
            event["usage_source"],
            event["input_tokens"],
            event["output_tokens"],
        )
        expected = (11 * Decimal("0.6") + 60 * Decimal(12)) / MILLION
        assert Decimal("0.0007266") == expected == money(event["cost_usd"])

    def test_slow_speech_reserves_more(self, client: costmeter.OpenAI) -> None:
        """
        speed 0.5 doubles the audio: 2 input tokens x $0.60 plus 11 x 5/2 x 2 = 55 audio
        tokens x $12 reserved; 11 x 4/3 x 2 = 30 (rounded up) billed, per 1M.
        """
        with capture_logs() as logs:
            client.audio.speech.create(
                model="gpt-4o-mini-tts", voice="coral", input="Hello world", speed=0.5
            )

        event = _one_event(logs)
        reserved = (2 * Decimal("0.6") + 55 * Decimal(12)) / MILLION
        billed = (2 * Decimal("0.6") + 30 * Decimal(12)) / MILLION
        assert (reserved, billed) == (
            money(event["estimated_cost_usd"]),
            money(event["cost_usd"]),
        )

    def test_streaming_response(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="streamed"
            ) as response:
                data = b"".join(response.iter_bytes())

        assert 32 * 8 == len(data)
        assert (
            Decimal("0.00012") == 8 * Decimal(15) / MILLION == money(_one_event(logs)["cost_usd"])
        )


class TestBudgets:
    def test_long_file_refused_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """120 s of whisper-1 is $0.012: a $0.01 budget refuses it; nothing is sent."""
        long = ("long.wav", wav_file(120.0), "audio/wav")
        with capture_logs() as logs, pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.01", name="audio"):
                client.audio.transcriptions.create(model="whisper-1", file=long)

        assert 0 == server.calls
        assert [] == calls(logs)

    async def test_token_model_refused_async(
        self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI
    ) -> None:
        """
        120 s of gpt-4o-transcribe: 2,400 audio tokens (20 a second) x $6 plus a transcript of
        at most 1,264 tokens (10 a second + 64) x $10, per 1M: $0.02704 > $0.02.
        """
        long = ("long.wav", wav_file(120.0), "audio/wav")
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.02"):
                await aclient.audio.transcriptions.create(model="gpt-4o-transcribe", file=long)

        assert 0 == server.calls
        with costmeter.budget("0.03") as b:
            await aclient.audio.transcriptions.create(model="gpt-4o-transcribe", file=long)
        assert _gpt4o_transcribe(1200, 0, 20) == b.spent_usd

    def test_unreadable_file_bounded_by_its_size(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """
        75,000 bytes of unknown format: at most 100 s at 6 kbit/s, $0.01 for whisper-1; a
        $0.009 budget refuses it before sending.
        """
        blob = ("voice.webm", b"\x1a\x45\xdf\xa3" + os.urandom(74_996), "audio/webm")
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.009"):
                client.audio.transcriptions.create(model="whisper-1", file=blob)

        assert 0 == server.calls

    def test_speech_refused_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """4,096 characters of tts-1-hd: $0.12288 > $0.1."""
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.1"):
                client.audio.speech.create(
                    model="tts-1-hd", voice="alloy", input=("Too long to say. " * 241)[:4096]
                )

        assert 0 == server.calls

    def test_budget_spends_the_bill(self, client: costmeter.OpenAI) -> None:
        with costmeter.budget("0.0003") as b:
            client.audio.transcriptions.create(model="whisper-1", file=THREE_SECONDS)
        assert Decimal("0.0003") == b.spent_usd
