"""``costmeter.estimate(api=...)`` covers every metered endpoint through its own module."""

from __future__ import annotations

import io
import wave
from decimal import Decimal

import pytest

import costmeter


def _wav(seconds: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(b"\x80" * 8000 * seconds)
    return out.getvalue()


def test_images_worst_case() -> None:
    """gpt-image-1, n=2, high 1024x1024: 2 x 4,160 output tokens x $40/1M, plus the prompt."""
    estimate = costmeter.estimate(
        api="images.generate", model="gpt-image-1", prompt="a cat", n=2, quality="high",
        size="1024x1024",
    )  # fmt: skip

    assert estimate.cost_usd is not None
    assert 2 * 4160 * Decimal(40) / 1_000_000 <= estimate.cost_usd < Decimal("0.334")


def test_transcription_from_the_file() -> None:
    """whisper-1 by duration: 3 s of WAV x $0.006/min."""
    estimate = costmeter.estimate(
        api="audio.transcriptions", model="whisper-1", file=("a.wav", _wav(3))
    )

    assert Decimal("0.0003") == estimate.cost_usd


def test_speech_per_character() -> None:
    """tts-1: 11 characters x $15/1M."""
    estimate = costmeter.estimate(api="audio.speech", model="tts-1", input="Hello world")

    assert Decimal("0.000165") == estimate.cost_usd


def test_unknown_api_names_the_known_ones() -> None:
    with pytest.raises(costmeter.ConfigurationError, match=r"images\.generate"):
        costmeter.estimate(api="telepathy", model="gpt-5")
