"""
Realtime input audio transcription (api ``realtime.transcription``) against the loopback
`FakeRealtime`: each ``conversation.item.input_audio_transcription.completed`` is one
``costmeter.call`` priced at the session's transcription model's rates, in transcription-only
sessions and in conversation sessions with input transcription turned on.

Rates (genai-prices): gpt-4o-transcribe $2.50 text in, $6 audio in, $10 out per 1M tokens;
whisper-1 $0.006 a minute ($0.0001 a second). The fake's usage (`transcription_usage`): the audio
appended since the last commit S seconds (pcm16, 24 kHz: 48,000 bytes a second), token models
``ceil(10 S)`` audio tokens + ``len(prompt) // 4`` text tokens + 20 output tokens; whisper-1
``S`` seconds.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeRealtime
from tests.helpers import calls, money
from tests.test_endpoint_realtime import _client, _until, server

__all__ = ["server"]  # the loopback FakeRealtime fixture, shared

M = Decimal(1_000_000)
DONE = "conversation.item.input_audio_transcription.completed"


def seconds_of_audio(seconds: float) -> str:
    """Base64 of *seconds* of pcm16 at 24 kHz: 48,000 bytes (64,000 base64 characters) a second."""
    return "A" * int(64_000 * seconds)


def _transcription(model: str, prompt: str | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {"model": model}
    if prompt is not None:
        settings["prompt"] = prompt
    return {"type": "transcription", "audio": {"input": {"transcription": settings}}}


TRANSCRIBE = {"intent": "transcription"}


class TestTranscriptionSession:
    def test_each_transcription_is_one_call(self, server: FakeRealtime) -> None:
        """
        gpt-4o-transcribe, prompt "Names: Ada" (10 characters: 2 text tokens):
        1.5 s -> 15 audio tokens x $6 + 2 x $2.50 + 20 out x $10 = $0.000295;
        then 0.5 s -> 5 x $6 + 2 x $2.50 + 20 x $10 = $0.000235.
        """
        client: costmeter.OpenAI = _client(server, costmeter.OpenAI)
        with (
            capture_logs() as logs,
            costmeter.budget("1") as spend,
            client.realtime.connect(extra_query=TRANSCRIBE) as conn,
        ):
            conn.session.update(session=_transcription("gpt-4o-transcribe", "Names: Ada"))
            _until(conn, "session.updated")
            conn.input_audio_buffer.append(audio=seconds_of_audio(1.5))
            conn.input_audio_buffer.commit()
            _until(conn, DONE)
            conn.input_audio_buffer.append(audio=seconds_of_audio(0.5))
            conn.input_audio_buffer.commit()
            _until(conn, DONE)

        first, second = calls(logs)
        expected = (
            (15 * Decimal(6) + 2 * Decimal("2.5") + 20 * Decimal(10)) / M,
            (5 * Decimal(6) + 2 * Decimal("2.5") + 20 * Decimal(10)) / M,
        )
        assert ("realtime.transcription", "gpt-4o-transcribe") == (first["api"], first["model"])
        assert (15, 20) == (first["audio_input_tokens"], first["output_tokens"])
        assert expected == (money(first["cost_usd"]), money(second["cost_usd"]))
        assert spend.spent_usd == sum(expected)
        assert "response.create" not in server.types_received()
        for event in (first, second):  # the worst case: every second appended since the last
            assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"])
            assert event["estimate_complete"] is False

    async def test_async_whisper_by_duration(self, server: FakeRealtime) -> None:
        """whisper-1 reports 2 s of duration usage: 2 x $0.0001."""
        client: costmeter.AsyncOpenAI = _client(server, costmeter.AsyncOpenAI)
        with capture_logs() as logs:
            async with client.realtime.connect(extra_query=TRANSCRIBE) as conn:
                await conn.session.update(session=_transcription("whisper-1"))
                await conn.input_audio_buffer.append(audio=seconds_of_audio(2))
                await conn.input_audio_buffer.commit()
                async for event in conn:
                    if event.type == DONE:
                        break

        [event] = calls(logs)
        assert ("realtime.transcription", "whisper-1") == (event["api"], event["model"])
        assert (Decimal(2), 2 * Decimal("0.0001")) == (
            Decimal(str(event["audio_seconds"])),
            money(event["cost_usd"]),
        )
        assert money(event["estimated_cost_usd"]) == money(event["cost_usd"])

    def test_usage_knob(self, server: FakeRealtime) -> None:
        """A reported usage priced verbatim: 100 audio x $6 + 10 text x $2.50 + 7 out x $10."""
        usage = {
            "type": "tokens",
            "input_tokens": 110,
            "input_token_details": {"audio_tokens": 100, "text_tokens": 10},
            "output_tokens": 7,
            "total_tokens": 117,
        }
        client: costmeter.OpenAI = _client(server, costmeter.OpenAI)
        with (
            capture_logs() as logs,
            client.realtime.connect(
                extra_query=TRANSCRIBE, extra_headers={"x-fake-usage": json.dumps(usage)}
            ) as conn,
        ):
            conn.session.update(session=_transcription("gpt-4o-transcribe"))
            conn.input_audio_buffer.append(audio=seconds_of_audio(1))
            conn.input_audio_buffer.commit()
            _until(conn, DONE)

        [event] = calls(logs)
        cost = (100 * Decimal(6) + 10 * Decimal("2.5") + 7 * Decimal(10)) / M
        assert cost == money(event["cost_usd"])


def test_conversation_session_with_input_transcription(server: FakeRealtime) -> None:
    """
    A gpt-realtime session transcribing its input with whisper-1: the committed 3 s turn bills
    its response (api ``realtime``) and, separately, its transcription (3 x $0.0001).
    """
    client: costmeter.OpenAI = _client(server, costmeter.OpenAI)
    with capture_logs() as logs, client.realtime.connect(model="gpt-realtime") as conn:
        conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            }
        )
        conn.input_audio_buffer.append(audio=seconds_of_audio(3))
        conn.input_audio_buffer.commit()
        _until(conn, "response.done")

    by_api = {event["api"]: event for event in calls(logs)}
    assert {"realtime", "realtime.transcription"} == set(by_api)
    transcription = by_api["realtime.transcription"]
    assert ("whisper-1", 3 * Decimal("0.0001")) == (
        transcription["model"],
        money(transcription["cost_usd"]),
    )
