"""
One WebSocket connection's frames turned into calls (see `costmeter._realtime`).

A `Conversation` turns frames into calls, one `costmeter._meter.Call` per
response:

* a client ``response.create`` creates a call and reserves its worst case *before* the frame
  goes out; a refusal raises `BudgetExceededError` from ``send`` and nothing is sent;
* ``response.created`` pairs the response id with the oldest unanswered ``response.create``
  (FIFO: the server answers them in order). With none waiting, the server started it itself
  (server VAD turn detection): its call is created then, reserving what the budgets allow —
  it cannot be refused, it is already running;
* ``response.done`` (Realtime) / ``response.completed|incomplete|failed`` (Responses) carries the
  usage: the call observes it and finishes — one ``costmeter.call`` event;
* when the socket closes, calls still running finish as abandoned (billed as estimated), and
  ``response.create`` frames never answered are billed their reserved worst case;
* ``conversation.item.input_audio_transcription.completed`` (a transcription session, or input
  transcription turned on) is one more call of its own, ``realtime.transcription``, billed at
  the session's transcription model's rates from the event's usage.

Only frames whose text holds one of a few event names are parsed at all (a substring test
first; for a large server frame, only its leading ``"type"`` is read): audio appends and audio
deltas, the bulk of the traffic, are never JSON-decoded — an append's audio is measured from
its base64 length.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from fractions import Fraction
from typing import Any

from costmeter._endpoints import Endpoint, Request
from costmeter._endpoints.realtime import (
    CONVERSATION_KEY,
    Realtime,
    RealtimeTranscription,
    ResponsesWebSocket,
    audio_tokens,
)
from costmeter._errors import CostmeterError
from costmeter._meter import Call, MeterConfig

__all__ = ["Conversation", "closing"]

_REALTIME = Realtime()
_RESPONSES = ResponsesWebSocket()
_TRANSCRIPTION = RealtimeTranscription()
_TRANSCRIBED = "conversation.item.input_audio_transcription.completed"
_ENDPOINTS: dict[str, Endpoint] = {"realtime": _REALTIME, "responses.websocket": _RESPONSES}
#: Bytes a second of each Realtime input audio format (pcm16 at 24 kHz; G.711 at 8 kHz).
_BYTES_PER_SECOND = {"audio/pcm": 48_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}
#: Session settings a response inherits, and their names in the older beta.realtime protocol.
_SESSION_KEYS = (
    ("output_modalities", "modalities"),
    ("max_output_tokens", "max_response_output_tokens"),
    ("instructions", "instructions"),
)
_TEXT_KEYS = frozenset({"text", "transcript", "output", "arguments", "instructions"})
# Client events worth decoding (a substring test first); server events likewise.
_SEND_EVENTS = ('"response.create"', '"conversation.item.create"', '"session.update"')
_RECV_EVENTS = (
    '"session.created"',
    '"session.updated"',
    '"response.created"',
    '"response.done"',
    '"response.completed"',
    '"response.incomplete"',
    '"response.failed"',
    'text.delta"',
    'transcript.delta"',
    '"error"',
    f'"{_TRANSCRIBED}"',
)
_DELTA_SUFFIXES = ("text.delta", "transcript.delta")
#: Frames shorter than this are searched whole; longer ones (audio) by their leading type only.
_SMALL_FRAME = 4096
_TERMINAL = frozenset(
    {"response.done", "response.completed", "response.incomplete", "response.failed"}
)


class _Rejected(Exception):
    """The server answered a ``response.create`` with an ``error`` event (recorded, not raised)."""


_Rejected.__name__ = "ServerError"


class _Unanswered(Exception):
    """A ``response.create`` the connection closed on before the server answered it."""


_Unanswered.__name__ = "ConnectionClosed"


def _text_of(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8", "replace")
    return ""


def _has(data: Any, needles: tuple[str, ...]) -> bool:
    if isinstance(data, str):
        return any(n in data for n in needles)
    if isinstance(data, (bytes, bytearray)):
        return any(n.encode() in data for n in needles)
    return False


def _first_type(data: Any) -> str | None:
    """
    The first ``"type"`` value in a frame's first 256 characters, read without decoding: the
    event's own type, which both APIs send before any nested object (after ``event_id`` at
    most). ``None`` when not found there.
    """
    head = _text_of(data[:256]) if isinstance(data, (str, bytes, bytearray)) else ""
    key = head.find('"type"')
    start = head.find('"', head.find(":", key) + 1) if key >= 0 else -1
    end = head.find('"', start + 1) if start >= 0 else -1
    return head[start + 1 : end] if end > start >= 0 else None


def _worth_decoding(data: Any) -> bool:
    """Whether a server frame may be one `_Conversation.received` acts on (no JSON decode)."""
    kind = _first_type(data)
    if kind is None or len(data) < _SMALL_FRAME:
        return _has(data, _RECV_EVENTS)  # small frames: one more look costs nothing
    return f'"{kind}"' in _RECV_EVENTS or kind.endswith(_DELTA_SUFFIXES)


def _base64_audio_bytes(text: str) -> int:
    """The decoded size of an append's ``"audio"`` field, read without decoding the JSON."""
    key = text.find('"audio"')
    start = text.find('"', text.find(":", key) + 1) if key >= 0 else -1
    end = text.find('"', start + 1) if start >= 0 else -1
    if end < 0:
        return 0
    length = end - start - 1
    return length * 3 // 4


class Conversation:
    """What one connection sent and which responses are running (see the module docstring)."""

    def __init__(self, api: str, model: str | None, config: MeterConfig) -> None:
        self.api = api
        self.endpoint = _ENDPOINTS[api]
        self.config = config
        self.model = model
        self.transcription: dict[str, Any] = {}  # the session's input transcription settings
        self.session: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.unanswered: collections.deque[Call] = collections.deque()
        self.running: dict[str, Call] = {}
        self.event_ids: dict[str, Call] = {}  # client event_id of a response.create -> its call
        self.reset()

    def reset(self) -> None:
        """A new socket: a new server-side session, nothing sent on it yet."""
        self.text_tokens = 0
        self.instruction_tokens = 0
        self.audio_tokens = 0
        self.images = 0
        self.bytes_per_second = _BYTES_PER_SECOND["audio/pcm"]
        self.untranscribed = Fraction(0)  # seconds of audio appended since the last transcript

    # -- client frames -----------------------------------------------------------------------
    def sending(self, data: Any) -> Call | None:
        """
        A client frame is about to be sent: count it; a ``response.create`` gets its call,
        reserved (which may refuse: `BudgetExceededError`, nothing sent).
        """
        if self.api == "realtime" and _has(data, ('"input_audio_buffer.append"',)):
            with self.lock:
                audio = _base64_audio_bytes(_text_of(data))
                self.audio_tokens += audio_tokens(audio, self.bytes_per_second)
                self.untranscribed += Fraction(audio, max(self.bytes_per_second, 1))
            return None
        if not _has(data, _SEND_EVENTS):
            return None
        event = json.loads(_text_of(data))
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "response.create":
            call = Call(self.endpoint, self._request(event), self.config)
            call.begin()
            client_id = event.get("event_id")
            with self.lock:
                self.unanswered.append(call)
                if isinstance(client_id, str):
                    self.event_ids[client_id] = call
            return call
        if kind == "conversation.item.create":
            tokens = self._tokens_of(event.get("item"))
            with self.lock:
                self.text_tokens += tokens
        elif kind == "session.update":
            self._take_session(event.get("session"))
            tokens = self._tokens_of({"instructions": self.session.get("instructions")})
            with self.lock:
                self.instruction_tokens = tokens  # the session's instructions, replaced
        return None

    def sent(self, call: Call | None) -> None:
        if call is not None:
            call.attempt()

    def send_failed(self, call: Call | None, exc: BaseException) -> None:
        """The frame did not go out: its reservation is given back, no event."""
        if call is None:
            return
        with self.lock:
            if call in self.unanswered:
                self.unanswered.remove(call)
        call.finish(exc)

    def _request(self, event: dict[str, Any]) -> Request:
        if self.api == "responses.websocket":
            body = {k: v for k, v in event.items() if k != "type"}
            return Request(self.api, "websocket", "/responses", body, deployments=self._deps)
        params = event.get("response")
        params = params if isinstance(params, dict) else {}
        extra = self._tokens_of(params)
        return self._realtime_request(params, extra)

    def _realtime_request(self, params: dict[str, Any], extra: int) -> Request:
        body: dict[str, Any] = {
            "model": self.model,
            "output_modalities": self.session.get("output_modalities"),
            "max_output_tokens": self.session.get("max_output_tokens"),
        }
        body.update(params)
        for key, alias in _SESSION_KEYS:  # beta.realtime names
            if alias in params:
                body[key] = params[alias]
        body[CONVERSATION_KEY] = {
            "text_tokens": self.text_tokens + self.instruction_tokens + extra,
            "audio_tokens": self.audio_tokens,
            "images": self.images,
        }
        return Request(self.api, "websocket", "/realtime", body, deployments=self._deps)

    @property
    def _deps(self) -> dict[str, str]:
        return dict(self.config.deployments)

    def _take_session(self, session: Any) -> None:
        if not isinstance(session, dict):
            return
        with self.lock:
            for key, alias in _SESSION_KEYS:
                for name in (key, alias):
                    if name in session:
                        self.session[key] = session[name]
            model = session.get("model")
            if isinstance(model, str) and model:
                self.model = model
            audio_input = (session.get("audio") or {}).get("input") or {}
            for holder, key in (
                (audio_input, "transcription"),
                (session, "input_audio_transcription"),
            ):
                if isinstance(holder, dict) and key in holder:  # GA, then beta.realtime
                    settings = holder[key]
                    self.transcription = dict(settings) if isinstance(settings, dict) else {}
            audio_format = audio_input.get("format")
            beta_format = session.get("input_audio_format")  # beta.realtime: "pcm16", "g711_ulaw"
            if isinstance(beta_format, str):
                audio_format = {"type": "audio/pcm" if beta_format == "pcm16" else "audio/pcmu"}
            if isinstance(audio_format, dict):
                rate = _BYTES_PER_SECOND.get(str(audio_format.get("type")))
                hertz = audio_format.get("rate")
                if rate == _BYTES_PER_SECOND["audio/pcm"] and isinstance(hertz, int) and hertz > 0:
                    rate = 2 * hertz  # 16-bit samples
                self.bytes_per_second = rate or self.bytes_per_second

    def _tokens_of(self, value: Any) -> int:
        """Text tokens of every text field under *value*; base64 audio and images counted aside."""
        from costmeter._tokenizer import count_tokens  # noqa: PLC0415  (lazy)

        tokens = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, sub in item.items():
                    if key in _TEXT_KEYS and isinstance(sub, str):
                        tokens += count_tokens(sub, model=self.model or "gpt-realtime")
                    elif key == "audio" and isinstance(sub, str):
                        self.audio_tokens += audio_tokens(len(sub) * 3 // 4, self.bytes_per_second)
                    elif key == "image_url":
                        self.images += 1
                    else:
                        stack.append(sub)
            elif isinstance(item, list):
                stack.extend(item)
        return tokens

    # -- server frames -----------------------------------------------------------------------
    def received(self, data: Any) -> None:
        if not _worth_decoding(data):
            return
        event = json.loads(_text_of(data))
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            self._take_session(event.get("session"))
            return
        response = event.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        if kind == "response.created" and isinstance(response_id, str):
            self._created(response_id, event)
        elif isinstance(kind, str) and kind in _TERMINAL:
            self._done(response_id, event)
        elif kind == "error":
            self._error(event.get("error"))
        elif kind == _TRANSCRIBED:
            self._transcribed(event)
        elif isinstance(kind, str) and kind.endswith(".delta"):
            call = self.running.get(str(event.get("response_id")))
            if call is None and len(self.running) == 1:  # Responses deltas name no response
                call = next(iter(self.running.values()))
            if call is not None:
                call.observe(event)

    def _created(self, response_id: str, event: dict[str, Any]) -> None:
        with self.lock:
            call = self.unanswered.popleft() if self.unanswered else None
            if call is not None:
                self.event_ids = {k: c for k, c in self.event_ids.items() if c is not call}
        if call is None:
            call = self._server_started(event["response"])
        with self.lock:
            self.running[response_id] = call
        call.answered(None, True)
        call.observe(event)

    def _server_started(self, response: dict[str, Any]) -> Call:
        """A response the server started itself (server VAD): reserve what the budgets allow."""
        keys = (
            "output_modalities",
            "max_output_tokens",
            "modalities",
            "max_response_output_tokens",
        )
        params = {k: response[k] for k in keys if response.get(k)}
        call = Call(self.endpoint, self._realtime_request(params, 0), self.config)
        with contextlib.suppress(CostmeterError):
            call.begin()  # already running: it cannot be refused; its cost is still recorded
        call.attempt()
        return call

    def _transcribed(self, event: dict[str, Any]) -> None:
        """One input audio item transcribed: its own call, billed at the ASR model's rates."""
        with self.lock:
            seconds, self.untranscribed = self.untranscribed, Fraction(0)
            settings = dict(self.transcription)
        body: dict[str, Any] = {
            "model": settings.get("model"),
            CONVERSATION_KEY: {"audio_seconds": str(seconds)},
        }
        if isinstance(settings.get("prompt"), str):
            body["prompt"] = settings["prompt"]
        request = Request(
            _TRANSCRIPTION.api, "websocket", "/realtime", body, deployments=self._deps
        )
        call = Call(_TRANSCRIPTION, request, self.config)
        with contextlib.suppress(CostmeterError):
            call.begin()  # transcribed already: it cannot be refused; its cost is recorded
        call.attempt()
        call.answered(None, True)
        call.observe(event)
        call.finish()

    def _done(self, response_id: Any, event: dict[str, Any]) -> None:
        with self.lock:
            call = self.running.pop(response_id, None) if isinstance(response_id, str) else None
            if call is None and self.unanswered:
                call = self.unanswered.popleft()  # no response.created seen: FIFO
        if call is None:
            return
        call.answered(None, True)
        call.observe(event)
        call.finish()
        usage = call.seen.usage
        if usage is not None:  # this response's output is input of every later turn
            with self.lock:
                self.text_tokens += usage.output_tokens - usage.audio_output_tokens
                self.audio_tokens += usage.audio_output_tokens

    def _error(self, error: Any) -> None:
        """
        An ``error`` event rejecting a ``response.create``: the one it names by ``event_id``
        (Realtime), or — Responses, nothing running — the oldest unanswered one. It is not billed.
        """
        cause = error.get("event_id") if isinstance(error, dict) else None
        with self.lock:
            call = self.event_ids.pop(cause, None) if isinstance(cause, str) else None
            if call is None and self.api == "responses.websocket" and not self.running:
                call = self.unanswered[0] if self.unanswered else None
            if call is None or call not in self.unanswered:
                return
            self.unanswered.remove(call)
        message = error.get("message") if isinstance(error, dict) else None
        call.finish(_Rejected(str(message or "error")))

    def recv_failed(self, exc: BaseException) -> None:
        if closing(exc):  # not a recv() timeout: the socket is gone
            self.closed(exc)

    def closed(self, error: BaseException | None) -> None:
        """The socket closed: running responses finish abandoned, unanswered ones as lost."""
        with self.lock:
            running, self.running = list(self.running.values()), {}
            unanswered = list(self.unanswered)
            self.unanswered.clear()
            self.event_ids.clear()
        for call in running:
            call.finish(abandoned=True)
        for call in unanswered:
            call.attempt_failed(_Unanswered())
            call.finish(abandoned=True)
        self.reset()


def closing(exc: BaseException) -> bool:
    try:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415
    except ImportError:  # pragma: no cover - connect() needs websockets
        return False
    return isinstance(exc, ConnectionClosed)
