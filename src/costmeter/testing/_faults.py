"""
Scripted faults: the queue of misbehaviours the fake applies to the next matching request(s).

A request takes at most one fault of each family: delay; outcome (fail/reset/truncated_json/
replay); stream shape (cut/malformed/end_with); usage override. An outcome fault leaves the
others queued. By default a fault matches a POST to a billed endpoint (responses, chat
completions, embeddings, compact); ``path=`` aims it elsewhere (an exact path, or ``"*"``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from costmeter.testing._wire import JSONDict, _error_body

__all__ = ["OMIT", "ScriptedFaults"]

#: The POST paths scripted faults aim at by default (and that `FakeOpenAI.calls` counts).
_BILLED_PATHS: Final = frozenset(
    {"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/responses/compact"}
)
_OUTCOME_KINDS: Final = frozenset({"fail", "reset", "truncated_json", "replay"})
_STREAM_KINDS: Final = frozenset({"cut", "malformed", "end_with"})


class _Omit:
    """Sentinel type: "remove this key" in :meth:`FakeOpenAI.usage_override_next`."""

    _instance: _Omit | None = None

    def __new__(cls) -> _Omit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OMIT"


#: Pass as the usage (or as a value inside a merged usage) to delete the key from the payload.
OMIT: Final = _Omit()


@dataclass(eq=False)
class _Fault:
    kind: str
    times: int
    path: str | None
    stream: bool | None  # None: any request; True/False: only streaming / only non-streaming
    params: JSONDict

    def matches(self, path: str, method: str, streaming: bool) -> bool:
        if self.path is None:
            if method != "POST" or path not in _BILLED_PATHS:
                return False
        elif self.path not in ("*", path):
            return False
        if self.kind == "end_with" and path != "/v1/responses":
            return False
        return self.stream is None or self.stream == streaming


@dataclass
class _Taken:
    """The faults one request consumed, at most one per family."""

    delay: _Fault | None = None
    outcome: _Fault | None = None
    stream: _Fault | None = None
    usage: _Fault | None = None

    def family(self, fault: _Fault) -> str:
        if fault.kind == "delay":
            return "delay"
        if fault.kind in _OUTCOME_KINDS:
            return "outcome"
        return "stream" if fault.kind in _STREAM_KINDS else "usage"


class ScriptedFaults:
    """The public ``*_next`` methods of `FakeOpenAI`, and the queue they fill."""

    _lock: threading.Lock
    _faults: list[_Fault]

    def _queue(
        self, kind: str, times: int, path: str | None, only_stream: bool | None, **params: Any
    ) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(kind, times, path, only_stream, params))

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet used up."""
        with self._lock:
            return len(self._faults)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def fail_next(
        self,
        status: int = 500,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        message: str | None = None,
        code: str | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """
        Answer the next matching request(s) with an HTTP error.

        The default body is the API's ``{"error": {...}}`` shape for *status*, so the SDK raises
        its typed error (429 → ``RateLimitError``, 500 → ``InternalServerError``, ...).
        """
        self._queue(
            "fail",
            times,
            path,
            None,
            status=status,
            headers=dict(headers or {}),
            body=body if body is not None else _error_body(status, message, code),
        )

    def reset_next(
        self, *, before_headers: bool = True, times: int = 1, path: str | None = None
    ) -> None:
        """
        Drop the connection instead of answering.

        ``before_headers=True`` closes with a TCP reset before any byte of the response;
        ``False`` sends the headers and half the promised body first. Either way the SDK sees a
        connection error (``APIConnectionError`` with ``max_retries=0``).
        """
        self._queue("reset", times, path, None, before_headers=before_headers)

    def cut_stream_next(
        self, after_events: int = 3, *, clean: bool = False, times: int = 1, path: str | None = None
    ) -> None:
        """
        Send the first *after_events* SSE events of the next stream, then close the connection.

        No terminal event is sent. By default the chunked body is left unterminated, as when a
        proxy drops the connection, so the SDK raises while iterating; ``clean=True`` ends the body
        properly, so iteration just stops early without an error (and without ``[DONE]``).
        """
        self._queue("cut", times, path, True, after_events=after_events, clean=clean)

    def malformed_sse_next(
        self, after_events: int = 2, *, times: int = 1, path: str | None = None
    ) -> None:
        """Insert an event whose ``data:`` is broken JSON after *after_events* good ones."""
        self._queue("malformed", times, path, True, after_events=after_events)

    def truncated_json_next(self, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next non-streaming request with ``200`` and the JSON body cut in half."""
        self._queue("truncated_json", times, path, False)

    def usage_override_next(
        self,
        usage: Mapping[str, Any] | _Omit | None,
        *,
        merge: bool = False,
        drop_model: bool = False,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """
        Tamper with the usage the next response reports, to test defensive metering.

        *usage* replaces the usage object (``None`` → ``"usage": null``, :data:`OMIT` → no
        ``usage`` key). With ``merge=True`` it is deep-merged into the generated usage instead,
        and :data:`OMIT` values delete single fields. ``drop_model`` removes ``model`` from the
        response (every event/chunk of a stream). Streams are affected where usage really lives:
        the terminal Responses event, the final Chat usage chunk.
        """
        self._queue("usage", times, path, None, usage=usage, merge=merge, drop_model=drop_model)

    def end_stream_with(
        self,
        status: Literal["incomplete", "failed"],
        *,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """
        End the next Responses stream with ``response.incomplete`` or ``response.failed``.

        Usage is still reported in that terminal event, as the API does for partial work that is
        billed; combine with :meth:`usage_override_next` for a terminal event without usage.
        """
        if status not in ("incomplete", "failed"):
            raise ValueError("status must be 'incomplete' or 'failed'")
        self._queue("end_with", times, path, True, status=status)

    def delay_next(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Wait *seconds* before answering the next matching request (for timeout tests)."""
        self._queue("delay", times, path, None, seconds=seconds)

    def replay_next(
        self,
        body: Mapping[str, Any] | list[Mapping[str, Any]],
        *,
        stream: bool,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """
        Answer the next matching request with a recorded payload, byte-for-byte in JSON terms.

        Non-streaming: *body* is sent as the JSON body. Streaming: *body* is the list of event
        payloads, framed by :func:`sse` (Responses events with ``event:`` lines, Chat chunks as
        ``data:`` plus ``[DONE]``). Nothing is generated, stored or counted as usage by the fake.
        """
        payload: Any = [dict(e) for e in body] if isinstance(body, list) else dict(body)
        if stream and not isinstance(payload, list):
            raise ValueError("a streamed replay needs a list of event payloads")
        self._queue(
            "replay",
            times,
            path,
            None,
            body=payload,
            stream=stream,
            status=status,
            headers=dict(headers or {}),
        )

    def _take_faults(self, path: str, method: str, streaming: bool) -> _Taken:
        taken = _Taken()
        with self._lock:
            if not self._faults:
                return taken
            for fault in self._faults:
                if fault.matches(path, method, streaming):
                    family = taken.family(fault)
                    if getattr(taken, family) is None:
                        setattr(taken, family, fault)
            if taken.outcome is not None:
                taken.stream = None
                taken.usage = None
            for used in (taken.delay, taken.outcome, taken.stream, taken.usage):
                if used is not None:
                    used.times -= 1
                    if used.times <= 0:
                        self._faults.remove(used)
        return taken
