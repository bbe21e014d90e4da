"""
`FakeTransport`: the fake API answered in process, as an ``httpx2`` transport (sync and async).

    fake = FakeOpenAI()  # need not be started: no socket, no thread
    client = openai.OpenAI(
        base_url="http://fake.test/v1",
        api_key="test",
        http_client=httpx2.Client(transport=fake.transport()),
    )

It calls the same `FakeAPI.receive`/`FakeAPI.answer` as the loopback server, so answers,
usage, stored responses, the bill and the scripted faults are the same. What a socket does is
emulated as the SDK would see it over loopback:

* ``delay_next`` / ``x-fake-delay-ms`` and ``event_delay`` sleep (``anyio.sleep`` when async);
  a delay longer than the request's read timeout sleeps that long and raises
  ``httpx2.ReadTimeout`` (the fake still answers the request, as the server would);
* ``reset_next()`` raises ``httpx2.ReadError`` ("Connection reset by peer"), as httpcore does
  on the server's TCP reset; ``reset_next(before_headers=False)`` and ``cut_stream_next()``
  raise ``httpx2.RemoteProtocolError`` while the body is read, after what the server would have
  sent (the same messages as httpcore's).

Needs the real server (`FakeOpenAI.start`): what happens *between* client and server rather than
in them: a TCP reset as such (``ECONNRESET``), connection pooling and keep-alive reuse after a
dropped connection, connect and write timeouts, ``FakeOpenAI.stop`` cutting requests in flight,
proxies, and any test of costmeter's byte taps over a real socket.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import anyio
import httpx2

from costmeter.testing._reply import Reply, status_text

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI, _Received

__all__ = ["FakeTransport"]

_RESET = "[Errno 104] Connection reset by peer"


class FakeTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport answering from a `FakeAPI`: see the module docstring."""

    def __init__(self, fake: FakeAPI) -> None:
        self.fake = fake

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        received = self._receive(request, request.read())
        if received.delay is not None:
            timeout = _read_timeout(request)
            if timeout is not None and received.delay > timeout:
                time.sleep(timeout)
                self.fake.answer(received)
                raise httpx2.ReadTimeout("timed out", request=request)
            time.sleep(received.delay)
        return self._response(request, self.fake.answer(received))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        received = self._receive(request, await request.aread())
        if received.delay is not None:
            timeout = _read_timeout(request)
            if timeout is not None and received.delay > timeout:
                await anyio.sleep(timeout)
                self.fake.answer(received)
                raise httpx2.ReadTimeout("timed out", request=request)
            await anyio.sleep(received.delay)
        return self._response(request, self.fake.answer(received))

    def _receive(self, request: httpx2.Request, body: bytes) -> _Received:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1").strip()
            for name, value in request.headers.raw
        }
        target = request.url.raw_path.decode("ascii")
        return self.fake.receive(request.method, target, headers, body)

    def _response(self, request: httpx2.Request, reply: Reply) -> httpx2.Response:
        if reply.ending == "reset":
            raise httpx2.ReadError(_RESET, request=request)
        return httpx2.Response(
            reply.status,
            headers=reply.head_fields(),
            stream=_Body(reply, self.fake.event_delay, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": status_text(reply.status).encode("ascii"),
            },
        )


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    read = timeout.get("read") if isinstance(timeout, dict) else None
    return float(read) if isinstance(read, (int, float)) else None


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A reply's body pieces, paced like SSE over a socket, ending the way the reply says."""

    def __init__(self, reply: Reply, delay: float, request: httpx2.Request) -> None:
        self._reply = reply
        self._delay = delay if reply.streamed else 0.0
        self._request = request

    def _ended(self) -> None:
        """Raise what httpcore raises when the server closes the connection mid-body."""
        reply = self._reply
        if reply.ending != "cut":
            return
        sent = sum(len(c) for c in reply.chunks)
        why = (
            "incomplete chunked read"
            if reply.streamed
            else f"received {sent} bytes, expected {reply.length}"
        )
        raise httpx2.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({why})",
            request=self._request,
        )

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._reply.chunks:
            if self._delay > 0:
                time.sleep(self._delay)
            yield chunk
        self._ended()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._reply.chunks:
            if self._delay > 0:
                await anyio.sleep(self._delay)
            yield chunk
        self._ended()
