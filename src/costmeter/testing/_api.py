"""
`FakeAPI`: what the fake OpenAI API answers, without any socket.

A request goes through two steps, so a carrier can wait in between as the API would:
`FakeAPI.receive` records it, counts it and takes its scripted faults (deciding how long to hold
it); `FakeAPI.answer` then applies the outcome fault or routes it, and returns a `Reply`. Two
carriers exist: the loopback HTTP/1.1 server (`FakeOpenAI`, ``costmeter.testing._server``) and
the in-process ``httpx2`` transport (`FakeAPI.transport`, ``costmeter.testing._transport``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from costmeter.testing import (  # noqa: F401  (the core endpoints register their routes)
    _chat,
    _embeddings,
    _responses,
)
from costmeter.testing._faults import ScriptedFaults, _Fault, _Taken
from costmeter.testing._reply import Reply
from costmeter.testing._routing import _BILLING_HOOKS, _Call, _route_for
from costmeter.testing._usage import MODEL_SNAPSHOTS, PromptCache, _Plan, new_plan
from costmeter.testing._wire import (
    JSONDict,
    _dumps,
    _error_body,
    _int_header,
    _normalize,
    _parse_body,
    _sse_frames,
)

if TYPE_CHECKING:
    from costmeter.testing._transport import FakeTransport

__all__ = ["FakeAPI", "RecordedRequest"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it, so tests can assert what the client sent."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Received:
    """A request `FakeAPI.receive` took in: what `FakeAPI.answer` needs, and the hold first."""

    call: _Call | None  # None: a method the API does not serve (405)
    method: str
    bad_json: bool = False
    gzip: bool = False
    #: Seconds to hold the request before answering (``delay_next``, ``x-fake-delay-ms``).
    delay: float | None = None


class FakeAPI(ScriptedFaults):
    """
    The fake API's state and answers: recorded requests, scripted faults, stored responses, the
    prompt cache, and the routes registered by the endpoint modules of `costmeter.testing`.
    """

    def __init__(
        self,
        *,  # the settings are documented on `FakeOpenAI.__init__`
        output_tokens: int = 20,
        stream_events: int | None = None,
        event_delay: float = 0.0,
        background_polls: int = 1,
        snapshots: Mapping[str, str] | None = None,
        max_stored: int = 10_000,
    ) -> None:
        self.output_tokens = output_tokens
        self.stream_events = stream_events
        self.event_delay = event_delay
        self.background_polls = background_polls
        self.snapshots: dict[str, str] = {**MODEL_SNAPSHOTS, **(snapshots or {})}
        self._max_stored = max_stored
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._calls = 0
        self._faults: list[_Fault] = []
        self._stored: OrderedDict[str, _Plan] = OrderedDict()
        self._prompt_cache = PromptCache()
        self._errors: list[BaseException] = []
        self._extensions: dict[type[Any], Any] = {}

    # -------------------------------------------------------------------------------- recorded

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        """The most recent request, or ``None``."""
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def calls(self) -> int:
        """
        POSTs received on billed endpoints (responses, chat, embeddings, compact, ...).

        Counted on arrival, faulted ones included, so retry tests can assert the attempts.
        """
        with self._lock:
            return self._calls

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the fake itself; a passing test expects none."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget requests, counters, faults, stored responses and the prompt cache."""
        with self._lock:
            self._requests.clear()
            self._calls = 0
            self._faults.clear()
            self._stored.clear()
            self._errors.clear()
        self._prompt_cache.clear()

    def _state_of(self, kind: type[_T]) -> _T:
        """
        The per-fake state an endpoint module keeps (its bill, its files), made on first use and
        kept as long as the fake, across `reset` (the organization's bill outlives a test's calls).
        """
        with self._lock:
            found = self._extensions.get(kind)
            if found is None:
                found = self._extensions[kind] = kind()
            return cast(_T, found)

    # ------------------------------------------------------------------------------- carriers

    def transport(self) -> FakeTransport:
        """
        An ``httpx2`` transport (sync and async) that answers in process, with no socket:
        ``openai.OpenAI(base_url=..., http_client=httpx2.Client(transport=fake.transport()))``.

        Any ``base_url`` works (e.g. ``"http://fake.test/v1"``); the fake need not be started.
        """
        from costmeter.testing._transport import FakeTransport  # noqa: PLC0415

        return FakeTransport(self)

    def receive(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Received:
        """Take in one request (*headers* lower-cased): record it, count it, take its faults."""
        if method not in ("GET", "POST", "DELETE"):
            return _Received(None, method, gzip=headers.get("x-fake-gzip") == "1")
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body, bad_json = _parse_body(raw, headers.get("content-type", ""))
        path = _normalize(split.path)
        with self._lock:
            self._requests.append(RecordedRequest(method, split.path, headers, body, query))
            route = _route_for(method, path)
            if method == "POST" and route is not None and route.billed:
                self._calls += 1
        streaming = bool(body and body.get("stream")) or query.get("stream") == "true"
        faults = self._take_faults(path, method, streaming)
        delay_ms = _int_header(headers, "x-fake-delay-ms")
        delay = float(faults.delay.params["seconds"]) if faults.delay is not None else None
        if delay_ms is not None:
            delay = (delay or 0.0) + delay_ms / 1000
        call = _Call(method, path, body or {}, headers, query, faults, split.query)
        return _Received(call, method, bad_json, headers.get("x-fake-gzip") == "1", delay)

    def answer(self, received: _Received) -> Reply:
        """The answer to a received request; a failure inside the fake answers 500."""
        reply = Reply(gzip=received.gzip)
        call = received.call
        try:
            if call is None:
                reply.send_json(405, _error_body(405, f"Method {received.method} not allowed."))
            elif call.faults.outcome is not None and _apply_outcome(reply, call.faults.outcome):
                pass
            elif received.bad_json:
                message = "We could not parse the JSON body of your request."
                reply.send_json(400, _error_body(400, message))
            else:
                route = _route_for(call.method, call.path)
                if route is None:
                    message = f"Invalid URL ({call.method} {call.path})"
                    reply.send_json(404, _error_body(404, message))
                else:
                    route.handler(self, reply, call)
        except Exception as exc:
            return self._failure(exc, gzip=received.gzip)
        return reply

    def _failure(self, exc: Exception, *, gzip: bool = False) -> Reply:
        """A bug in the fake itself: kept in `errors` (tests assert none) and answered 500."""
        with self._lock:
            self._errors.append(exc)
        reply = Reply(gzip=gzip)
        reply.send_json(500, _error_body(500, f"fake server error: {exc!r}"))
        reply.close = True
        return reply

    # ------------------------------------------------------------------------- for the routes

    def _plan(
        self, endpoint: str, body: JSONDict, headers: Mapping[str, str], prefix: str
    ) -> _Plan:
        """A generated response, billed once (like the API) through the billing hooks."""
        plan = new_plan(self, endpoint, body, headers, prefix)
        for hook in _BILLING_HOOKS:
            hook(self, plan, headers)
        return plan

    def _store(self, plan: _Plan) -> None:
        if plan.request.get("store") is False and not plan.background:
            return
        with self._lock:
            self._stored[plan.rid] = plan
            while len(self._stored) > self._max_stored:
                self._stored.popitem(last=False)

    def _finish_body(self, reply: Reply, body: JSONDict, faults: _Taken) -> None:
        """Send a JSON body, cut in half when a ``truncated_json_next`` fault asks for it."""
        if faults.outcome is not None and faults.outcome.kind == "truncated_json":
            data = _dumps(body)
            reply.send_raw(200, data[: len(data) // 2], "application/json")
        else:
            reply.send_json(200, body)

    def _finish_stream(self, reply: Reply, payloads: list[JSONDict], faults: _Taken) -> None:
        """Send SSE events, shaped by a stream fault (cut short, or a malformed event)."""
        frames = _sse_frames(payloads, done=None)
        fault = faults.stream
        if fault is not None and fault.kind == "cut":
            cut = int(fault.params["after_events"])
            reply.send_stream(frames[:cut], cut=not fault.params["clean"])
            return
        if fault is not None and fault.kind == "malformed":
            at = int(fault.params["after_events"])
            kind = payloads[min(at, len(payloads) - 1)].get("type")
            broken = (
                b"event: " + str(kind).encode() + b"\n" if isinstance(kind, str) else b""
            ) + b'data: {"type": "response.output_text.delta", "delta": "tru\n\n'
            frames = [*frames[:at], broken, *frames[at:]]
        reply.send_stream(frames)


def _apply_outcome(reply: Reply, fault: _Fault) -> bool:
    """Answer with an outcome fault; ``False`` for one applied later (truncated JSON)."""
    p = fault.params
    if fault.kind == "fail":
        reply.send_json(int(p["status"]), p["body"], p["headers"])
    elif fault.kind == "reset":
        if p["before_headers"]:
            reply.abort(reset=True)
        else:
            reply.send_partial(_dumps(_error_body(500)))
    elif fault.kind == "replay":
        if p["stream"]:
            reply.send_stream(_sse_frames(p["body"], done=None), p["headers"], int(p["status"]))
        else:
            reply.send_json(int(p["status"]), p["body"], p["headers"])
    else:
        return False  # truncated_json is applied once the real body exists
    return True
