"""
`Reply`: one answer of the fake as data (status, headers, body pieces, how the exchange ends).

The fake API's routes write their answer into a `Reply` instead of onto a socket, so the same
answer can be carried by the loopback HTTP/1.1 server (`costmeter.testing._server`) or handed to
the SDK in process by an ``httpx2`` transport (`costmeter.testing._transport`).
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Mapping
from typing import Any, Final, Literal

from costmeter.testing._wire import _dumps

__all__ = ["Reply"]

_STATUS_TEXT: Final[Mapping[int, str]] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

#: How an exchange ends: the whole body; the connection closed early after what was sent (a
#: sized body cut short or a chunked body never terminated); or a reset before any byte.
Ending = Literal["complete", "cut", "reset"]


def status_text(status: int) -> str:
    return _STATUS_TEXT.get(status, "Status")


class Reply:
    """
    The answer a route gives, written with ``send_*`` (once) or `abort`.

    *gzip* (the request's ``x-fake-gzip: 1`` knob) gzip-encodes the body as a proxy would;
    each SSE frame is flushed on its own so a streamed body still arrives event by event.
    """

    def __init__(self, *, gzip: bool = False) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.headers: dict[str, str] = {}
        #: The body pieces: one for a sized body, one per SSE frame for a chunked one.
        self.chunks: list[bytes] = []
        #: The ``content-length`` promised; ``None`` for a chunked (streamed) body.
        self.length: int | None = None
        self.ending: Ending = "complete"
        #: Close the connection after this answer (the server's own error, say).
        self.close = False
        self.sent = False
        self._compress = zlib.compressobj(wbits=31) if gzip else None

    @property
    def streamed(self) -> bool:
        return self.length is None

    # ------------------------------------------------------------------------------ writing

    def send_raw(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self._compress is not None:
            data = self._compress.compress(data) + self._compress.flush()
            headers = {**(headers or {}), "content-encoding": "gzip"}
        self._set(status, content_type, headers, [data], len(data))

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send_raw(status, _dumps(body), "application/json", headers)

    def send_partial(self, data: bytes) -> None:
        """Promise *data* in the headers, send half of it, then drop the connection."""
        self._set(200, "application/json", None, [data[: len(data) // 2]], len(data))
        self.ending = "cut"

    def send_stream(
        self,
        frames: list[bytes],
        headers: Mapping[str, str] | None = None,
        status: int = 200,
        *,
        cut: bool = False,
    ) -> None:
        """Send SSE *frames* chunked; ``cut`` closes without the terminating chunk."""
        if self._compress is not None:
            gz = self._compress
            frames = [gz.compress(f) + gz.flush(zlib.Z_SYNC_FLUSH) for f in frames]
            frames.append(gz.flush())
            headers = {**(headers or {}), "content-encoding": "gzip"}
        self._set(
            status,
            "text/event-stream; charset=utf-8",
            {"cache-control": "no-cache", **(headers or {})},
            frames,
            None,
        )
        if cut:
            self.ending = "cut"

    def abort(self, *, reset: bool) -> None:
        """Close the connection now: with a reset (no answer at all) or after what was sent."""
        self.sent = True
        self.ending = "reset" if reset else "cut"

    def _set(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str] | None,
        chunks: list[bytes],
        length: int | None,
    ) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.chunks = chunks
        self.length = length
        self.sent = True

    # ------------------------------------------------------------------------------ reading

    def head_fields(self, *, close: bool = False) -> list[tuple[str, str]]:
        """The response headers as the API sends them (a fresh ``x-request-id`` each time)."""
        framing = (
            ("transfer-encoding", "chunked")
            if self.length is None
            else ("content-length", str(self.length))
        )
        fields = [
            ("content-type", self.content_type),
            framing,
            ("x-request-id", f"req_{secrets.token_hex(16)}"),
            ("openai-processing-ms", "1"),
            ("openai-version", "2020-10-01"),
        ]
        if close:
            fields.append(("connection", "close"))
        fields.extend(self.headers.items())
        return fields
