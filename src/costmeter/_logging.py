"""
Where costmeter's events go. A library stays quiet unless the application asks: costmeter never
writes to stdout or stderr on its own, and emitting an event never waits for any destination.

Every event goes to exactly one of the application's logging systems:

- **structlog, when the application configured it** (``structlog.configure()`` was called):
  the event runs through the application's processors on the calling thread (so context
  variables, filtering and ``structlog.testing.capture_logs()`` see it as usual) and the final
  write — the configured logger's output — happens on costmeter's dispatcher thread.
- **otherwise the standard library logger ``"costmeter"``**, which carries a ``NullHandler``
  (Python's rule for libraries): nothing is printed unless the application configured
  ``logging`` to show it (``logging.basicConfig(level=logging.INFO)`` shows every event). The
  message is the event as one JSON object; ``record.costmeter_event`` and
  ``record.costmeter_fields`` hold it structured. Records are built on the calling thread and
  handed to the handlers on the dispatcher thread (the `logging.handlers.QueueHandler` pattern),
  so the record's thread name and time are the caller's, its ``funcName``/``lineno`` are not.

On top of that, `log_to()` adds JSON-lines destinations (``COSTMETER_LOG_FILE`` does the same
without code; it is read on the first event, never at import): each event is rendered by
costmeter itself as one JSON line (``timestamp``, ``level``, ``event``, then the event's fields).

Levels: ``costmeter.call`` is ``info``; ``costmeter.budget.exceeded``,
``costmeter.budget.threshold``, ``costmeter.warning`` and ``costmeter.internal_error`` are
``warning`` (the user's call itself was not broken by any of them).

Never blocking: the dispatcher thread and every stream sink drain bounded in-memory queues; a
destination that is slow or blocked forever (a full pipe, a stuck socket, a logger waiting on a
lock) fills its queue, then further events for it are dropped and counted, and calls carry on.
Queues are flushed (at most a few seconds) at interpreter exit. Use a file path rather than a
stream in forked worker processes that exit with ``os._exit()``.

Files (`log_to` with a path) are opened with ``O_APPEND`` and every event is written with a single
``os.write()`` of the whole encoded line, from the calling thread, without a lock. On local POSIX
file systems an ``O_APPEND`` write positions and writes atomically (Linux serialises writes to one
file; POSIX guarantees it up to ``PIPE_BUF`` bytes — 4096 on Linux — for pipes), so any number of
threads and processes can append to the same file and lines never interleave or tear. Network
file systems (NFS, SMB) do not guarantee atomic appends across hosts: give each host its own file.
A local file write does not block on a reader, which is why files need no queue.

A sink that fails never breaks the caller: the failure is counted on the sink handle and reported
once, as a ``costmeter.internal_error`` event. Listeners (`add_listener`, used by
`costmeter.enable_metrics`) see every event's name and fields on the calling thread; one that
raises is counted and skipped.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import IO, Any, Generic, TypeVar

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from costmeter._record import OTEL_NAMES
from costmeter._record import schema as record_schema

__all__ = [
    "BUDGET_EXCEEDED",
    "BUDGET_THRESHOLD",
    "CALL",
    "INTERNAL_ERROR",
    "LOGGER_NAME",
    "LOG_FILE_ENV",
    "WARNING",
    "LogSink",
    "add_listener",
    "configure_from_env",
    "emit",
    "flush",
    "log_to",
    "otel_genai_keys",
    "usd",
]

LOG_FILE_ENV = "COSTMETER_LOG_FILE"
LOGGER_NAME = "costmeter"  # the stdlib logger (and the structlog logger name) events go to

CALL = "costmeter.call"
BUDGET_EXCEEDED = "costmeter.budget.exceeded"
BUDGET_THRESHOLD = "costmeter.budget.threshold"
INTERNAL_ERROR = "costmeter.internal_error"
WARNING = "costmeter.warning"
_WARNING_EVENTS = frozenset({BUDGET_EXCEEDED, BUDGET_THRESHOLD, WARNING, INTERNAL_ERROR})
_QUEUE_LIMIT = 10_000  # per queue (dispatcher, each stream sink); beyond it events are dropped
_STREAM_QUEUE_LINES = _QUEUE_LIMIT
_CLOSE_TIMEOUT_S = 2.0
_BATCH = 1000

_stdlib_logger = logging.getLogger(LOGGER_NAME)
_stdlib_logger.addHandler(logging.NullHandler())

_registry_lock = threading.Lock()  # guards changes to _sinks/_listeners; emit() reads without it
_sinks: tuple[LogSink, ...] = ()
_listeners: tuple[Callable[[str, Mapping[str, Any]], None], ...] = ()
_env_sink: LogSink | None = None
_env_read = False
_env_lock = threading.Lock()
structlog_failures = 0  # events the application's structlog pipeline raised on (best effort)
listener_failures = 0  # listener calls that raised
dropped_events = 0  # events the dispatcher dropped because the app's logger was not keeping up

_T = TypeVar("_T")


# -- a bounded queue drained by one daemon thread -----------------------------------------------


class _Worker(Generic[_T]):
    """
    Items handed over by callers, drained in order by one daemon thread, so nothing a drain
    does (a blocked write, a slow logger) can delay a caller. Bounded: `put` refuses items once
    *limit* are waiting. After ``fork()`` the child starts its own thread and forgets what the
    parent had queued (the parent writes it).
    """

    def __init__(self, name: str, drain: Callable[[list[_T]], None], limit: int) -> None:
        self._name = name
        self._drain = drain
        self._limit = limit
        self._queue: collections.deque[_T] = collections.deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._pid = -1
        self._busy = False
        self.closed = False

    def put(self, item: _T) -> bool:
        """Queue *item*; ``False`` (and nothing queued) when the queue is full or closed."""
        if self.closed:
            return False
        if self._pid != os.getpid():
            self._start()
        if len(self._queue) >= self._limit:
            return False
        self._queue.append(item)
        self._wake.set()
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            if self._pid != -1:  # forked: the parent writes what it queued
                self._queue.clear()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                while queue:
                    batch: list[_T] = []
                    while queue and len(batch) < _BATCH:
                        batch.append(queue.popleft())
                    with contextlib.suppress(Exception):  # drains count their own failures
                        self._drain(batch)
            finally:
                self._busy = False
            if self.closed and not queue:
                return

    def flush(self, timeout: float = _CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything queued so far is drained; ``False`` on timeout."""
        if self._pid != os.getpid():
            return not self._queue
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._queue or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Drain what is queued (waiting a few seconds at most), then let the thread end."""
        self.flush()
        self.closed = True
        self._wake.set()


def _run_all(thunks: list[Callable[[], object]]) -> None:
    global structlog_failures  # noqa: PLW0603
    for thunk in thunks:
        try:
            thunk()
        except Exception:  # the application's logger failed; nothing to tell but a count
            structlog_failures += 1


_dispatcher: _Worker[Callable[[], object]] = _Worker("costmeter-events", _run_all, _QUEUE_LIMIT)


def _dispatch(thunk: Callable[[], object]) -> None:
    global dropped_events  # noqa: PLW0603
    if not _dispatcher.put(thunk):
        dropped_events += 1


# -- routing to the application's logging ---------------------------------------------------------

# The methods a structlog wrapper calls on its final logger to *write*; anything else the
# processors ask of it (``name``, ``isEnabledFor``, ...) is answered on the calling thread.
_OUTPUT_METHODS = frozenset(
    {
        "msg", "log", "trace", "debug", "info", "warning", "warn", "error", "err", "critical",
        "fatal", "exception", "failure",
    }
)  # fmt: skip


class _AppOutput:
    """
    Stands in for the application's structlog output logger (what its ``logger_factory``
    makes): whatever the processors ask of it (``name``, ``isEnabledFor``, ...) is answered on
    the calling thread, and its writes are moved to the dispatcher. The factory is called only
    for events that got past the application's filtering, so dropped events cost nothing more.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(structlog.get_config()["logger_factory"](LOGGER_NAME), name)
        if name not in _OUTPUT_METHODS or not callable(attr):
            return attr

        def write_later(*args: Any, **kwargs: Any) -> None:
            _dispatch(functools.partial(attr, *args, **kwargs))

        return write_later


class _JSONMessage:
    """A stdlib log message rendered (as one JSON object) only if a handler formats it."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        return _render({"event": self.event, **self.fields}).rstrip("\n")


class _Router:
    """
    What costmeter logs through: ``info(event, **fields)`` / ``warning(...)`` send one event to
    the application's structlog pipeline when it configured one, else to the stdlib logger.
    """

    def info(self, event: str, **fields: Any) -> None:
        _route("info", logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        _route("warning", logging.WARNING, event, fields)


def _route(level: str, levelno: int, event: str, fields: dict[str, Any]) -> None:
    if structlog.is_configured():
        getattr(_structlog_logger, level)(event, **fields)
    elif _stdlib_logger.isEnabledFor(levelno):
        record = _stdlib_logger.makeRecord(
            LOGGER_NAME,
            levelno,
            "(costmeter)",
            0,
            _JSONMessage(event, fields),
            (),
            None,
            extra={"costmeter_event": event, "costmeter_fields": fields},
        )
        _dispatch(functools.partial(_stdlib_logger.handle, record))


# Resolved against the application's current structlog configuration on every event (never
# cached), so configuring structlog later, or capture_logs() in tests, takes effect at once.
_structlog_logger: Any = structlog.wrap_logger(_AppOutput(), cache_logger_on_first_use=False)
_logger: Any = _Router()


# -- emitting ------------------------------------------------------------------------------------


def usd(amount: Decimal | None) -> float | None:
    """
    Render money for an event as a JSON number; ``None`` stays null.

    Money is computed in `Decimal`; the event carries a float holding the Decimal's value, exact
    for every amount with at most 15 significant digits (all per-call costs), so *any* JSON
    renderer the application uses can serialise it, and ``json.loads(line, parse_float=Decimal)``
    recovers the Decimal.
    """
    return None if amount is None else float(amount)


def emit(event: str, fields: Mapping[str, Any]) -> None:
    """
    Send one event to the application's logging, every `log_to()` sink and every listener.

    Never raises and never waits on a destination: a failing pipeline, sink or listener is
    counted (a failing sink reported once), and the caller carries on.
    """
    global structlog_failures  # noqa: PLW0603
    if not _env_read:
        _read_env_once()
    level = "warning" if event in _WARNING_EVENTS else "info"
    try:
        getattr(_logger, level)(event, **fields)
    except Exception:  # the app's pipeline must not break the user's call
        structlog_failures += 1
    sinks = _sinks
    if sinks:
        _write_to_sinks(sinks, event, level, fields)
    listeners = _listeners
    if listeners:
        _notify(listeners, event, fields)


def _notify(
    listeners: tuple[Callable[[str, Mapping[str, Any]], None], ...],
    event: str,
    fields: Mapping[str, Any],
) -> None:
    global listener_failures  # noqa: PLW0603
    for listener in listeners:
        try:
            listener(event, fields)
        except Exception:  # a listener (e.g. a metrics exporter) must not break the call
            listener_failures += 1


def add_listener(listener: Callable[[str, Mapping[str, Any]], None]) -> Callable[[], None]:
    """
    Call ``listener(event_name, fields)`` for every event, on the emitting thread; returns a
    function that removes it. A listener must be quick (it runs inside the user's call) and
    must not keep *fields* (the same mapping goes to the other destinations).
    """
    global _listeners  # noqa: PLW0603
    with _registry_lock:
        _listeners = (*_listeners, listener)

    def remove() -> None:
        global _listeners  # noqa: PLW0603
        with _registry_lock:
            _listeners = tuple(item for item in _listeners if item is not listener)

    return remove


def flush(timeout: float = _CLOSE_TIMEOUT_S) -> bool:
    """
    Wait (at most *timeout* seconds) until queued events reached the application's logger and
    every stream sink; ``False`` if some destination is still behind.
    """
    deadline = time.monotonic() + timeout
    done = _dispatcher.flush(timeout)
    for sink in _sinks:
        if isinstance(sink, _StreamSink):
            done = sink.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def _write_to_sinks(
    sinks: tuple[LogSink, ...], event: str, level: str, fields: Mapping[str, Any]
) -> None:
    try:
        record: dict[str, Any] = {"timestamp": _now_iso(), "level": level, "event": event}
        record.update(fields)
    except Exception:  # e.g. a broken Mapping; nothing sensible to write
        return
    plain: str | None = None
    for sink in sinks:
        try:
            if sink.processors:
                line = sink.render(dict(record), level)
                if line is None:
                    continue
            else:
                if plain is None:
                    plain = _render(record)
                line = plain
            sink.deliver(line)
        except Exception as exc:  # a sink must never break the caller
            sink.failed(exc)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _render(record: Mapping[str, Any]) -> str:
    return (
        json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default) + "\n"
    )


# -- sinks ---------------------------------------------------------------------------------------


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
        global _sinks  # noqa: PLW0603
        with _registry_lock:
            _sinks = tuple(s for s in _sinks if s is not self)
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
        return _render(result)

    def deliver(self, line: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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
                _logger.warning(
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
        self._worker: _Worker[str] = _Worker(
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

    def flush(self, timeout: float = _CLOSE_TIMEOUT_S) -> bool:
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
    global _sinks  # noqa: PLW0603
    chain = tuple(processors)
    sink: LogSink
    if isinstance(target, (str, os.PathLike)):
        path = os.fspath(target)
        sink = _StreamSink(None, "<stdout>", chain) if path == "-" else _FileSink(path, chain)
    elif hasattr(target, "write"):
        sink = _StreamSink(target, getattr(target, "name", None) or repr(target), chain)
    else:
        raise TypeError(f"log_to() needs a path, '-' or a writable stream, got {target!r}")
    with _registry_lock:
        _sinks = (*_sinks, sink)
    return sink


def _read_env_once() -> None:
    with _env_lock:  # concurrent first events: one opens the file, the others wait for it
        if not _env_read:
            configure_from_env()


def configure_from_env() -> LogSink | None:
    """
    Honour ``COSTMETER_LOG_FILE`` (a path, or ``-`` for stdout); idempotent.

    Runs by itself when the first event is emitted (importing costmeter reads no environment
    and opens nothing); call it to open the file earlier. A file that cannot be opened is
    reported with a ``RuntimeWarning`` instead of breaking the application.
    """
    global _env_sink, _env_read  # noqa: PLW0603
    _env_read = True
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


@atexit.register
def _flush_at_exit() -> None:
    flush(_CLOSE_TIMEOUT_S)


# -- OpenTelemetry GenAI names -------------------------------------------------------------------

_OTEL_RENAMES = OTEL_NAMES  # the record's OTel names (`costmeter._record`)
_OTEL_API_TYPES = {
    "responses": "responses",
    "responses.compact": "responses",
    "chat.completions": "chat_completions",
    "embeddings": "embeddings",
}
# Every other key of the costmeter.call record (`costmeter._record.CallRecord`) is prefixed with
# "costmeter.": derived from the record, so a new field gets its OTel name without an edit here.
_COSTMETER_KEYS = frozenset(
    name for name, _kind, _doc in record_schema() if name not in _OTEL_RENAMES and name != "tags"
)


def otel_genai_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """
    structlog processor: rename ``costmeter.call`` keys to OpenTelemetry GenAI semantic names.

    Token counts, models, response id and served tier get their ``gen_ai.*``/``openai.*`` names;
    ``gen_ai.provider.name`` (``openai``), ``gen_ai.operation.name`` (``chat`` or
    ``embeddings``), ``openai.api.type`` and the cost triple ``gen_ai.usage.cost.amount`` /
    ``.currency`` (``USD``) / ``.source`` (``local``) are added; a non-null ``error_type`` is also
    ``error.type``. The other costmeter keys move under ``costmeter.*`` (``tags`` are flattened
    to ``costmeter.tags.<key>``); keys costmeter did not put there (``event``, ``timestamp``,
    the app's own context) are left as they are. Other events pass through untouched.
    """
    if event_dict.get("event") != CALL:
        return event_dict
    out: EventDict = {}
    api = event_dict.get("api")
    for key, value in event_dict.items():
        renamed = _OTEL_RENAMES.get(key)
        if renamed is not None:
            out[renamed] = value
        elif key == "tags" and isinstance(value, Mapping):
            for tag, tag_value in value.items():
                out[f"costmeter.tags.{tag}"] = tag_value
        elif key in _COSTMETER_KEYS:
            out[f"costmeter.{key}"] = value
        else:
            out[key] = value
    out["gen_ai.provider.name"] = "openai"
    out["gen_ai.operation.name"] = "embeddings" if api == "embeddings" else "chat"
    if isinstance(api, str):
        out["openai.api.type"] = _OTEL_API_TYPES.get(api, api)
    if "gen_ai.usage.cost.amount" in out:
        out["gen_ai.usage.cost.currency"] = "USD"
        out["gen_ai.usage.cost.source"] = "local"
    if event_dict.get("error_type") is not None:
        out["error.type"] = event_dict["error_type"]
    return out
