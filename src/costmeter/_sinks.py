"""
JSON-lines destinations for costmeter's events: `log_to()` and ``COSTMETER_LOG_FILE``.

`log_to()` adds a destination without touching any logging configuration (``COSTMETER_LOG_FILE``
does the same without code; it is read on the first event, never at import): each event is
rendered by costmeter itself as one JSON line (``timestamp``, ``level``, ``event``, then the
event's fields).

Files are opened with ``O_APPEND`` and every event is written with a single ``os.write()`` of the
whole encoded line, from the calling thread, without a lock. On local POSIX file systems an
``O_APPEND`` write positions and writes atomically (Linux serialises writes to one file; POSIX
guarantees it up to ``PIPE_BUF`` bytes — 4096 on Linux — for pipes), so any number of threads and
processes can append to the same file and lines never interleave or tear. Network file systems
(NFS, SMB) do not guarantee atomic appends across hosts: give each host its own file. A local
file write does not block on a reader, which is why files need no queue.

Streams are written by a daemon thread from a bounded queue: a slow or blocked stream (a full
pipe, a stuck socket) fills it, then further lines for it are dropped and counted, and calls
carry on. Use a file path rather than a stream in forked worker processes that exit with
``os._exit()``. A sink that fails never breaks the caller: the failure is counted on the sink
handle and reported once, as a ``costmeter.internal_error`` event.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterable
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor

from costmeter import _events
from costmeter._events import CLOSE_TIMEOUT_S, INTERNAL_ERROR, QUEUE_LIMIT, Worker, render

__all__ = ["LOG_FILE_ENV", "LogSink", "configure_from_env", "log_to"]

LOG_FILE_ENV = "COSTMETER_LOG_FILE"
_STREAM_QUEUE_LINES = QUEUE_LIMIT
_env_sink: LogSink | None = None
_env_lock = threading.Lock()


class LogSink:
    """
    A destination registered by `log_to()`. Call it (or `close()`) to stop writing to it.

    Attributes:
        name: The path, ``"<stdout>"``, or the stream's repr.
        written: Lines handed to the destination (approximate under heavy threading).
        failures: Lines lost because rendering or writing raised.
        dropped: Lines dropped because a stream's queue was full (slow or blocked stream).
    """

    def __init__(self, name: str, processors: tuple[Processor, ...]) -> None:
        self.name = name
        self.processors = processors
        self.written = 0
        self.failures = 0
        self.dropped = 0
        self.closed = False
        self._report_lock = threading.Lock()
        self._reported = False

    def __repr__(self) -> str:
        return f"<costmeter LogSink {self.name} written={self.written} failures={self.failures}>"

    def __call__(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop writing to this sink; idempotent. Queued stream lines are flushed first."""
        _events.remove_sink(self)
        self.closed = True

    # -- used by emit() --
    def render(self, record: EventDict, level: str) -> str | None:
        """Run this sink's processors, then render JSON; ``None`` when a processor dropped it."""
        try:
            result: Any = record
            for processor in self.processors:
                result = processor(None, level, result)
        except structlog.DropEvent:
            return None
        if isinstance(result, bytes):
            result = result.decode("utf-8", "replace")
        if isinstance(result, str):
            return result if result.endswith("\n") else result + "\n"
        return render(result)

    def deliver(self, line: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until every line handed over so far is written (a file: at once)."""
        return True

    def failed(self, exc: BaseException, *, dropped: bool = False) -> None:
        """Count a lost line and report the first loss; never raises."""
        with self._report_lock:
            if dropped:
                self.dropped += 1
            else:
                self.failures += 1
            first, self._reported = not self._reported, True
        if first:
            with contextlib.suppress(Exception):  # the last line of defence
                _events._logger.warning(
                    INTERNAL_ERROR,
                    stage="log_sink",
                    sink=self.name,
                    error_type=type(exc).__name__,
                    error=str(exc)[:500],
                    note="reported once per sink; see LogSink.failures/.dropped for counts",
                )


class _Descriptor:
    """An ``O_APPEND`` file descriptor, closed when the last reference to it goes away."""

    __slots__ = ("fd",)

    def __init__(self, path: str) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)

    def write(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        while written < len(data):  # never happens on local files; do not lose the rest
            written += os.write(self.fd, data[written:])

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)  # absent when os.open() failed
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _FileSink(LogSink):
    """One ``os.write`` per line to an ``O_APPEND`` descriptor; no lock, no buffering."""

    def __init__(self, path: str, processors: tuple[Processor, ...]) -> None:
        super().__init__(path, processors)
        self._descriptor: _Descriptor | None = _Descriptor(path)

    def deliver(self, line: str) -> None:
        descriptor = self._descriptor
        if descriptor is None:
            return
        descriptor.write(line.encode("utf-8", "surrogatepass"))
        self.written += 1

    def close(self) -> None:
        super().close()
        # The descriptor closes when its last reference goes: an emit() running in another
        # thread may still hold it, and must not write to a reused descriptor number.
        self._descriptor = None


class _StreamSink(LogSink):
    """A bounded queue drained by one daemon thread, so a slow stream never blocks emit()."""

    def __init__(self, stream: IO[Any] | None, name: str, processors: tuple[Processor, ...]):
        super().__init__(name, processors)
        self._stream = stream  # None: sys.stdout, looked up at write time
        self._worker: Worker[str] = Worker(
            f"costmeter-log {name}", self._write, _STREAM_QUEUE_LINES
        )

    def deliver(self, line: str) -> None:
        if self.closed:
            return
        if not self._worker.put(line):
            self.failed(RuntimeError(f"log stream {self.name} is not keeping up"), dropped=True)

    def _write(self, lines: list[str]) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
                stream.write("".join(lines).encode("utf-8", "replace"))
            else:
                stream.write("".join(lines))
            flush = getattr(stream, "flush", None)
            if flush is not None:
                flush()
            self.written += len(lines)
        except Exception as exc:  # count, report once, keep going
            for _ in lines:
                self.failed(exc)

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything queued so far is written; ``False`` on timeout."""
        return self._worker.flush(timeout)

    def close(self) -> None:
        super().close()
        self._worker.close()


def log_to(
    target: str | os.PathLike[str] | IO[str], *, processors: Iterable[Processor] = ()
) -> LogSink:
    """
    Also write costmeter's events as JSON lines to *target*, without touching any logging config.

    Events keep going to the application's logging as before; this adds a destination. Each
    line is one JSON object: ``timestamp`` (ISO 8601 UTC), ``level``, ``event``, then the
    event's fields.

    Args:
        target: A file path (appended to; created if missing; safe to share between threads and
            processes), ``"-"`` for standard output, or an open text stream such as
            ``sys.stderr`` (streams are written by a background thread so a slow or blocked
            stream never delays an API call).
        processors: structlog processors run on each event dict (as ``(None, level,
            event_dict)``) before rendering, e.g. ``[otel_genai_keys]``. If the last one returns
            a ``str``, that is the line. Raising ``structlog.DropEvent`` skips the event.

    Returns:
        The sink handle; call it to stop logging to *target*.

    Raises:
        OSError: the file cannot be opened for appending.
    """
    chain = tuple(processors)
    sink: LogSink
    if isinstance(target, (str, os.PathLike)):
        path = os.fspath(target)
        sink = _StreamSink(None, "<stdout>", chain) if path == "-" else _FileSink(path, chain)
    elif hasattr(target, "write"):
        sink = _StreamSink(target, getattr(target, "name", None) or repr(target), chain)
    else:
        raise TypeError(f"log_to() needs a path, '-' or a writable stream, got {target!r}")
    _events.add_sink(sink)
    return sink


def configure_from_env() -> LogSink | None:
    """
    Honour ``COSTMETER_LOG_FILE`` (a path, or ``-`` for stdout); idempotent.

    Runs by itself when the first event is emitted (importing costmeter reads no environment
    and opens nothing); call it to open the file earlier. A file that cannot be opened is
    reported with a ``RuntimeWarning`` instead of breaking the application.
    """
    with _env_lock:  # concurrent first events: one opens the file, the others wait for it
        _events._env_read = True  # emit() no longer needs to ask
        return _configure_from_env()


def _configure_from_env() -> LogSink | None:
    global _env_sink  # noqa: PLW0603
    target = os.environ.get(LOG_FILE_ENV, "").strip()
    if not target:
        return None
    if _env_sink is not None and not _env_sink.closed and _env_sink.name in (target, "<stdout>"):
        return _env_sink
    try:
        _env_sink = log_to(target)
    except OSError as exc:
        warnings.warn(
            f"{LOG_FILE_ENV}={target!r}: cannot open the cost log: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _env_sink
