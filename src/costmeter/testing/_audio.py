"""
The fake server's audio routes: ``/v1/audio/transcriptions``, ``/v1/audio/translations`` and
``/v1/audio/speech``, answering in the SDK's own shapes (``openai.types.audio``).

Deterministic numbers (request headers are the knobs):

* Audio duration: ``x-fake-audio-seconds``, else the uploaded WAV's length as the standard
  library's ``wave`` reads it; any other file is refused with a 400, like an unsupported format.
* Duration-billed models (``whisper-1``, ``gpt-transcribe``: names without ``4o``) report
  ``usage = {"type": "duration", "seconds": ceil(duration)}``.
* Token-billed models (``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ...) report
  ``usage = {"type": "tokens", ...}`` with ``audio_tokens = ceil(10 * duration)``,
  ``text_tokens = len(prompt) // 4``, ``output_tokens = x-fake-output-tokens`` (default 20),
  the transcript being that many words.
* ``x-fake-omit-usage: 1`` leaves ``usage`` out. Translations never report usage (the SDK's
  ``Translation`` types have none), nor do ``text``/``srt``/``vtt`` bodies (plain text).
* ``stream=true`` on a token model streams ``transcript.text.delta`` events (one a word) and a
  ``transcript.text.done`` carrying the usage; whisper-1 ignores ``stream``, as the API does.
* Speech returns ``32 * len(input)`` bytes of the requested format (``audio/mpeg`` for mp3).
  With ``stream_format: "sse"`` it streams two ``speech.audio.delta`` events and a
  ``speech.audio.done`` with ``input_tokens = (len(input) + len(instructions)) // 4 + 1`` and
  ``output_tokens = x-fake-output-tokens``, else ``20 * ceil(len(input) / 15)`` (20 audio
  tokens a second at 15 characters a second).
"""

from __future__ import annotations

import base64
import io
import math
import wave
from collections.abc import Mapping
from typing import Any

from costmeter.testing._api import FakeAPI
from costmeter.testing._reply import Reply
from costmeter.testing._routing import _Call, add_route
from costmeter.testing._usage import _deltas
from costmeter.testing._wire import JSONDict, _error_body, _int_header, _sse_frames

__all__: list[str] = []

_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def _duration(call: _Call) -> float | None:
    given = call.headers.get("x-fake-audio-seconds")
    if given is not None:
        return float(given)
    upload = call.body.get("file")
    if not isinstance(upload, Mapping) or not isinstance(upload.get("data"), bytes):
        return None
    try:
        with wave.open(io.BytesIO(upload["data"])) as reader:
            frames, rate = int(reader.getnframes()), int(reader.getframerate())
    except (wave.Error, EOFError):
        return None
    return frames / rate


def _by_duration(model: str) -> bool:
    return "4o" not in model


def _timestamp(seconds: float, sep: str) -> str:
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}{sep}{millis:03d}"


def _subtitles(text: str, seconds: float, fmt: str) -> str:
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(seconds, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(seconds, '.')}\n{text}\n\n"


def _segment(text: str, seconds: float) -> JSONDict:
    return {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": seconds,
        "text": text,
        "tokens": [1, 2, 3],
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }


def _usage(call: _Call, model: str, seconds: float, output_tokens: int) -> JSONDict:
    if _by_duration(model):
        return {"type": "duration", "seconds": math.ceil(seconds)}
    prompt = call.body.get("prompt")
    text_tokens = len(prompt) // 4 if isinstance(prompt, str) else 0
    audio_tokens = math.ceil(10 * seconds)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens + text_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + text_tokens + output_tokens,
    }


def _speech_to_text(fake: FakeAPI, reply: Reply, call: _Call, *, translate: bool) -> None:
    model = call.body.get("model")
    if not isinstance(model, str) or not model:
        reply.send_json(400, _error_body(400, "Missing required parameter: 'model'."))
        return
    seconds = _duration(call)
    if seconds is None:
        reply.send_json(400, _error_body(400, "Invalid file format. Supported formats: ['wav']"))
        return
    count = _int_header(call.headers, "x-fake-output-tokens")
    words = _deltas(20 if count is None else count)
    text = "".join(words)
    usage = None if translate else _usage(call, model, seconds, len(words))
    if call.headers.get("x-fake-omit-usage") == "1":
        usage = None
    fmt = call.body.get("response_format") or "json"
    if call.body.get("stream") == "true" and not translate and not _by_duration(model):
        events: list[JSONDict] = [{"type": "transcript.text.delta", "delta": w} for w in words]
        done: JSONDict = {"type": "transcript.text.done", "text": text}
        if usage is not None:
            done["usage"] = usage
        reply.send_stream(_sse_frames([*events, done], done=False))
        return
    if fmt == "text":
        reply.send_raw(200, text.encode(), "text/plain; charset=utf-8")
        return
    if fmt in ("srt", "vtt"):
        reply.send_raw(200, _subtitles(text, seconds, fmt).encode(), "text/plain; charset=utf-8")
        return
    body: JSONDict = {"text": text}
    if fmt == "verbose_json":
        body = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [_segment(text, seconds)],
        }
    elif fmt == "diarized_json":
        segment = {
            "type": "transcript.text.segment",
            "id": "seg_0",
            "start": 0.0,
            "end": seconds,
            "speaker": "A",
            "text": text,
        }
        body = {"task": "transcribe", "duration": seconds, "text": text, "segments": [segment]}
    if usage is not None:
        body["usage"] = usage
    reply.send_json(200, body)


def _transcriptions(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    _speech_to_text(fake, reply, call, translate=False)


def _translations(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    _speech_to_text(fake, reply, call, translate=True)


def _speech(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    body: Mapping[str, Any] = call.body
    model, text = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model or not isinstance(text, str):
        reply.send_json(400, _error_body(400, "Missing required parameter: 'model' or 'input'."))
        return
    fmt = body.get("response_format") or "mp3"
    audio = (b"\xff\xf3\x44\xc4" * 8) * len(text)
    if body.get("stream_format") == "sse":
        instructions = body.get("instructions")
        extra = len(instructions) if isinstance(instructions, str) else 0
        given = _int_header(call.headers, "x-fake-output-tokens")
        output = 20 * math.ceil(len(text) / 15) if given is None else given
        input_tokens = (len(text) + extra) // 4 + 1
        half = len(audio) // 2
        events: list[JSONDict] = [
            {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
            for chunk in (audio[:half], audio[half:])
        ]
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output,
            "total_tokens": input_tokens + output,
        }
        events.append({"type": "speech.audio.done", "usage": usage})
        reply.send_stream(_sse_frames(events, done=False))
        return
    reply.send_raw(200, audio, _CONTENT_TYPES.get(str(fmt), "application/octet-stream"))


add_route("POST", r"/v1/audio/transcriptions", _transcriptions)
add_route("POST", r"/v1/audio/translations", _translations)
add_route("POST", r"/v1/audio/speech", _speech)
