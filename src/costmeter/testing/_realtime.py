"""
`FakeRealtime`: a loopback WebSocket server speaking enough of the Realtime API
(``/v1/realtime``) and of the Responses WebSocket API (``/v1/responses``) for the unmodified SDK.

Point a client at it with ``websocket_base_url=server.ws_url``. Needs ``websockets`` (the
``realtime`` extra).

Realtime (shapes from ``openai.types.realtime``): on connect the server sends
``session.created`` (model from the ``?model=`` query, ``output_modalities: ["audio"]``). Each
client ``response.create`` is answered ``response.created``, one ``response.output_text.delta``
(``"hi"``) and ``response.done`` with status ``completed`` and `REALTIME_USAGE`. Each
``input_audio_buffer.commit`` makes the server start a response *itself* (as server VAD does):
the same three events with no ``response.create``.

Input audio transcription (``ConversationItemInputAudioTranscriptionCompletedEvent``): a
connection with ``?intent=transcription`` is a transcription session (``session.created`` of
``type: "transcription"``); a ``session.update`` there is echoed as ``session.updated``. When
the session's ``audio.input.transcription`` (or beta ``input_audio_transcription``) names a
model, each ``input_audio_buffer.commit`` is answered ``input_audio_buffer.committed``, one
``conversation.item.input_audio_transcription.delta`` (``"hello"``) and ``...completed`` with
transcript ``"hello"`` and `transcription_usage` (in a transcription session ``x-fake-usage``
replaces it verbatim): for duration-billed models (names without
``4o``, e.g. ``whisper-1``) ``{"type": "duration", "seconds": S}``, else ``{"type": "tokens"}``
with ``audio_tokens = ceil(10 * S)``, ``text_tokens = len(prompt) // 4`` and 20 output tokens,
where S is the audio appended since the previous commit (pcm16 at 24 kHz: 48,000 bytes a
second). A conversation session then also starts its response, as before.

Responses (``openai.types.responses``): each ``response.create`` is answered
``response.created``, ``response.output_text.delta`` and ``response.completed`` with
`RESPONSES_USAGE` and the request's ``model``.

Knobs are connection headers (``connect(extra_headers=...)``):

* ``x-fake-usage``: a JSON usage object replacing the default usage verbatim;
* ``x-fake-reject: 1``: answer each ``response.create`` with an ``error`` event instead
  (Realtime: naming the client event's ``event_id``);
* ``x-fake-pad: N``: ``response.done`` carries an output message of *N* characters (a large
  frame);
* ``x-fake-hang: 1``: answer ``response.created`` and the delta, never the terminal event (a
  response cut off when the connection closes).

Every client event is recorded, parsed, in `FakeRealtime.received` (in arrival order).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["REALTIME_USAGE", "RESPONSES_USAGE", "FakeRealtime", "transcription_usage"]

#: The Realtime ``response.done`` usage the fake reports by default.
REALTIME_USAGE: dict[str, Any] = {
    "total_tokens": 1500,
    "input_tokens": 1000,
    "output_tokens": 500,
    "input_token_details": {
        "text_tokens": 300,
        "audio_tokens": 600,
        "image_tokens": 100,
        "cached_tokens": 200,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 80, "image_tokens": 20},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}
#: The Responses ``response.completed`` usage the fake reports by default.
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 40,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 10,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 50,
}


#: Bytes a second of the fake's input audio (pcm16, 24 kHz, mono).
_PCM_BYTES_PER_SECOND = 48_000


def transcription_usage(model: str, seconds: float, prompt: str = "") -> dict[str, Any]:
    """The usage the fake reports for transcribing *seconds* of audio with *model*."""
    if "4o" not in model:
        return {"type": "duration", "seconds": seconds}
    audio, text = math.ceil(10 * seconds), len(prompt) // 4
    return {
        "type": "tokens",
        "input_tokens": audio + text,
        "input_token_details": {"audio_tokens": audio, "text_tokens": text},
        "output_tokens": 20,
        "total_tokens": audio + text + 20,
    }


class FakeRealtime:
    """The loopback WebSocket server (see the module docstring); a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.received: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def ws_url(self) -> str:
        """The ``websocket_base_url`` to give a client."""
        if self._server is None:
            raise RuntimeError("FakeRealtime is not started")
        port = self._server.socket.getsockname()[1]
        return f"ws://{self.host}:{port}/v1"

    def start(self) -> FakeRealtime:
        from websockets.sync.server import serve  # noqa: PLC0415  (optional dependency)

        self._server = serve(self._handle, self.host, 0, compression=None, max_size=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakeRealtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def types_received(self) -> list[str]:
        """The ``type`` of every client event received so far."""
        with self._lock:
            return [str(e.get("type")) for e in self.received]

    # -- the protocol ------------------------------------------------------------------------
    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        url = urlsplit(ws.request.path)
        headers = ws.request.headers
        realtime = url.path.rstrip("/").endswith("/realtime")
        query = parse_qs(url.query)
        model = (query.get("model") or ["gpt-realtime"])[0]
        transcribing = query.get("intent") == ["transcription"]
        audio = {"bytes": 0, "transcription": {}}  # appended since the last commit; settings
        knobs = {
            "usage": json.loads(headers["x-fake-usage"]) if "x-fake-usage" in headers else None,
            "hang": headers.get("x-fake-hang") == "1",
            "reject": headers.get("x-fake-reject") == "1",
            "pad": int(headers.get("x-fake-pad", "0")),
        }
        try:
            if realtime:
                session = _transcription_session() if transcribing else _session(model)
                self._send(ws, "session.created", session=session)
            for message in ws:
                event = json.loads(message)
                with self._lock:
                    self.received.append(event)
                kind = event.get("type")
                if realtime and kind in ("session.update", "input_audio_buffer.append"):
                    self._take_audio(ws, event, audio, echo=transcribing)
                if realtime and kind == "input_audio_buffer.commit" and audio["transcription"]:
                    self._transcribe(ws, audio, knobs["usage"] if transcribing else None)
                if transcribing:
                    continue
                if kind == "response.create" and knobs["reject"]:
                    error = {"type": "invalid_request_error", "message": "rejected"}
                    self._send(ws, "error", error={**error, "event_id": event.get("event_id")})
                elif realtime and kind in ("response.create", "input_audio_buffer.commit"):
                    self._realtime_response(ws, model, knobs)
                elif not realtime and kind == "response.create":
                    self._responses_response(ws, event, knobs)
        except ConnectionClosed:
            return

    def _send(self, ws: Any, kind: str, **fields: Any) -> None:
        ws.send(json.dumps({"type": kind, "event_id": f"event_{next(self._ids)}", **fields}))

    def _take_audio(
        self, ws: Any, event: dict[str, Any], audio: dict[str, Any], *, echo: bool
    ) -> None:
        if event.get("type") == "input_audio_buffer.append":
            data = str(event.get("audio") or "")
            try:
                audio["bytes"] += len(base64.b64decode(data))
            except ValueError:  # not base64: the length it would have
                audio["bytes"] += len(data) * 3 // 4
            return
        session = event.get("session") or {}
        settings = ((session.get("audio") or {}).get("input") or {}).get("transcription")
        settings = settings or session.get("input_audio_transcription")
        if isinstance(settings, dict):
            audio["transcription"] = settings
        if echo:
            updated = _transcription_session()
            updated["audio"]["input"]["transcription"] = audio["transcription"] or None
            self._send(ws, "session.updated", session=updated)

    def _transcribe(self, ws: Any, audio: dict[str, Any], given: dict[str, Any] | None) -> None:
        item_id = f"item_{next(self._ids)}"
        seconds = audio["bytes"] / _PCM_BYTES_PER_SECOND
        audio["bytes"] = 0
        settings = audio["transcription"]
        usage = given or transcription_usage(
            str(settings.get("model")), seconds, str(settings.get("prompt") or "")
        )
        self._send(ws, "input_audio_buffer.committed", item_id=item_id, previous_item_id=None)
        done = "conversation.item.input_audio_transcription"
        self._send(ws, f"{done}.delta", item_id=item_id, content_index=0, delta="hello")
        self._send(
            ws,
            f"{done}.completed",
            item_id=item_id,
            content_index=0,
            transcript="hello",
            usage=usage,
        )

    def _realtime_response(self, ws: Any, model: str, knobs: dict[str, Any]) -> None:
        response_id = f"resp_{next(self._ids)}"
        response = {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output_modalities": ["audio"],
            "output": [],
        }
        self._send(ws, "response.created", response=response)
        self._send(
            ws,
            "response.output_text.delta",
            response_id=response_id,
            item_id="item_1",
            output_index=0,
            content_index=0,
            delta="hi",
        )
        if knobs["hang"]:
            return
        usage = knobs["usage"] or REALTIME_USAGE
        self._send(
            ws, "response.done", response={**response, "status": "completed", "usage": usage}
        )

    def _responses_response(self, ws: Any, event: dict[str, Any], knobs: dict[str, Any]) -> None:
        response: dict[str, Any] = {
            "id": f"resp_{next(self._ids)}",
            "object": "response",
            "model": event.get("model"),
            "status": "in_progress",
            "output": [],
        }
        self._send(ws, "response.created", response=response, sequence_number=0)
        self._send(
            ws,
            "response.output_text.delta",
            item_id="msg_1",
            output_index=0,
            content_index=0,
            delta="hi",
            sequence_number=1,
            logprobs=[],
        )
        if knobs["hang"]:
            return
        usage = knobs["usage"] or RESPONSES_USAGE
        done = {**response, "status": "completed", "usage": usage}
        self._send(ws, "response.completed", response=done, sequence_number=2)


def _session(model: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": model,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
    }


def _transcription_session() -> dict[str, Any]:
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_t1",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None}},
    }
