"""
`FakeOpenAI`: the fake API (``costmeter.testing._api``) served over real HTTP/1.1 on loopback.

Why a real server: costmeter wraps the OpenAI SDK, so the honest way to test it is to let the
*unmodified* SDK speak real HTTP (keep-alive, chunked SSE, retries, connection errors) to
something that answers like the API, including the faults only a socket has: a reset
connection, a body cut mid-way, a response slower than the client's timeout. For tests that need
none of those, `FakeOpenAI.transport` answers the same way in process, without a socket.

    from costmeter.testing import FakeOpenAI

    with FakeOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        client.responses.create(model="gpt-5", input="hi")
        assert server.calls == 1

The server only ever binds a loopback address and makes no outgoing connections. It uses the
standard library only (``http.server``), one thread per keep-alive connection, so a small request
costs the server well under a millisecond.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from costmeter.testing._api import FakeAPI
from costmeter.testing._reply import Reply, status_text

__all__ = ["FakeOpenAI"]


class FakeOpenAI(FakeAPI):
    """
    A real HTTP server speaking enough of the OpenAI API to run the unmodified SDK against it.

    Endpoints (under ``/v1``; Azure-style ``/openai/deployments/<name>/...`` and ``/openai/v1``
    prefixes are accepted too): ``POST /responses`` (plain, ``stream``, ``background``),
    ``GET|DELETE /responses/{id}`` (``?stream=true&starting_after=N`` replays stored events),
    ``POST /responses/{id}/cancel``, ``GET /responses/{id}/input_items``,
    ``POST /responses/compact``, ``POST /responses/input_tokens``, ``POST /chat/completions``
    (plain and stream, ``stream_options.include_usage``) and ``POST /embeddings``; plus the
    endpoint modules of `costmeter.testing` (images, audio, completions, files and batches, the
    organization's usage and costs).

    Per-request knobs are request headers, so they work through ``extra_headers``:
    ``x-fake-input-tokens``, ``x-fake-output-tokens``, ``x-fake-reasoning-tokens``,
    ``x-fake-cached-tokens``, ``x-fake-deltas`` (number of text deltas in a stream),
    ``x-fake-delay-ms`` (hold the response that long, like a slow network) and
    ``x-fake-gzip: 1`` (gzip-encode the body, like a proxy).

    Scripted faults (``fail_next``, ``reset_next``, ``cut_stream_next``, ...) queue up and apply to
    the next matching request(s); by default "matching" means a POST to a billed endpoint
    (responses, chat completions, embeddings, compact). Pass ``path="/v1/responses/<id>"`` (exact
    path, no query) or ``path="*"`` (anything) to aim elsewhere. A request takes at most one fault
    of each family: delay; outcome (fail/reset/truncated_json/replay); stream shape
    (cut/malformed/end_with); usage override. An outcome fault leaves the others queued.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        """
        Configure (not start) a server on loopback *host* and *port* (0: any free port).

        *settings* are `FakeAPI`'s: ``output_tokens`` (20), ``stream_events`` (the number of
        ``output_text.delta`` events; default one per visible output token), ``event_delay``
        (seconds between SSE events, so tests can observe streaming in flight),
        ``background_polls`` (how many ``GET`` polls a background response answers
        ``in_progress`` before it completes), ``snapshots`` (more model aliases) and
        ``max_stored`` (the retrievable responses kept).
        """
        if host == "localhost":
            host = "127.0.0.1"  # resolve it ourselves: no resolver, no surprise IPv6 binding
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"FakeOpenAI only binds loopback addresses, not {host!r}")
        super().__init__(**settings)
        self._host = host
        self._requested_port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAI:
        """Bind and serve in a daemon thread; returns ``self`` so ``start()`` can be chained."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server(self, (self._host, self._requested_port))
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAI:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """
        Stop serving and close every open connection, idle keep-alive ones included.

        Connections are shut down from our side rather than waited on, because an SDK client
        keeps its pooled connection open for as long as it lives; waiting would hang.
        """
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        deadline = time.monotonic() + timeout
        for thread in [t for t in (self._thread,) if t is not None] + threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The bound port (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAI is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Root URL, e.g. for ``AzureOpenAI(azure_endpoint=server.url, ...)``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``openai.OpenAI``."""
        return self.url + "/v1"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, fake: FakeOpenAI, address: tuple[str, int]) -> None:
        self.fake = fake
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup; skip it so the
        # server never talks to a resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection-level errors (client gone) are normal in fault tests; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; each response is written with a single ``sendall``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    request_headers: dict[str, str]

    def setup(self) -> None:
        super().setup()
        self._track(alive=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self._track(alive=False)

    def _track(self, *, alive: bool) -> None:
        """Keep the server's open connections and handler threads known, for `FakeOpenAI.stop`."""
        fake, thread = self.server.fake, threading.current_thread()
        with fake._lock:
            if alive:
                fake._connections.add(self.connection)
                fake._handler_threads.add(thread)
            else:
                fake._connections.discard(self.connection)
                fake._handler_threads.discard(thread)

    def handle_one_request(self) -> None:
        """
        Parse one request with a minimal HTTP/1.1 reader, then answer it.

        Replaces ``BaseHTTPRequestHandler``'s ``email``-based header parsing, which alone cost
        more than generating the response (~65 µs of ~110 µs server time per small call).
        """
        try:
            line = self.rfile.readline(65537)
        except (OSError, ValueError):
            line = b""
        parts = line.split()
        if len(parts) != 3:
            self.close_connection = True
            return
        self.command, self.path, self.request_version = (p.decode("latin-1") for p in parts)
        headers: dict[str, str] = {}
        while True:
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.request_headers = headers
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        fake = self.server.fake
        try:
            try:
                received = fake.receive(self.command, self.path, headers, self.read_body())
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as exc:
                self.write(fake._failure(exc, gzip=headers.get("x-fake-gzip") == "1"))
                return
            if received.delay is not None and fake._stopping.wait(received.delay):
                self.abort(reset=True)
                return
            self.write(fake.answer(received))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log of ``http.server``."""

    def read_body(self) -> bytes:
        length = self.request_headers.get("content-length")
        if length is not None:
            return self.rfile.read(int(length))
        if self.request_headers.get("transfer-encoding", "").lower() == "chunked":
            out = io.BytesIO()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out.getvalue()
                out.write(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def write(self, reply: Reply) -> None:
        """Put *reply* on the wire: sized or chunked, paced by ``event_delay``, ended as it says."""
        if reply.ending == "reset":
            self.abort(reset=True)
            return
        lines = [f"HTTP/1.1 {reply.status} {status_text(reply.status)}"]
        lines += [f"{k}: {v}" for k, v in reply.head_fields(close=self.close_connection)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if reply.close:
            self.close_connection = True
        if not reply.streamed:
            self.wfile.write(head + b"".join(reply.chunks))
        elif not self._write_chunks(head, reply.chunks):
            return
        elif reply.ending == "complete":
            self.wfile.write(b"0\r\n\r\n")
        if reply.ending == "cut":
            self.abort(reset=False)

    def _write_chunks(self, head: bytes, frames: list[bytes]) -> bool:
        """Write a chunked body; ``False`` when the server stopped mid-way (connection closed)."""
        fake = self.server.fake
        delay = fake.event_delay
        if delay <= 0:
            self.wfile.write(head + b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames))
            return True
        self.wfile.write(head)
        for frame in frames:
            if fake._stopping.wait(delay):
                self.abort(reset=False)
                return False
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        return True

    def abort(self, *, reset: bool) -> None:
        """Close the connection now: with a TCP RST (*reset*) or an orderly FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                # Linger 0 turns the close into an RST. The descriptor really closes once
                # finish() drops the rfile/wfile references to it.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
