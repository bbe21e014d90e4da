"""
costmeter's events, and where they go. A library stays quiet unless the application asks:
costmeter never writes to stdout or stderr on its own, and emitting an event never waits for
any destination.

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

On top of that, JSON-lines destinations (`costmeter._sinks`: `log_to()`, ``COSTMETER_LOG_FILE``)
get every event, and listeners (`add_listener`, used by `costmeter.enable_metrics`) see every
event's name and fields on the calling thread; one that raises is counted and skipped.

Levels: ``costmeter.call`` is ``info``; ``costmeter.budget.exceeded``,
``costmeter.budget.threshold``, ``costmeter.warning`` and ``costmeter.internal_error`` are
``warning`` (the user's call itself was not broken by any of them).

Never blocking: the dispatcher thread drains a bounded in-memory queue; a logger that is slow or
blocked forever fills it, then further events for it are dropped and counted, and calls carry
on. Queues are flushed (at most a few seconds) at interpreter exit.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

if TYPE_CHECKING:
    from costmeter._sinks import LogSink

__all__ = [
    "BUDGET_EXCEEDED",
    "BUDGET_THRESHOLD",
    "CALL",
    "CLOSE_TIMEOUT_S",
    "INTERNAL_ERROR",
    "LOGGER_NAME",
    "WARNING",
    "Worker",
    "add_listener",
    "add_sink",
    "emit",
    "flush",
    "remove_sink",
    "render",
    "usd",
]

LOGGER_NAME = "costmeter"  # the stdlib logger (and the structlog logger name) events go to

CALL = "costmeter.call"
BUDGET_EXCEEDED = "costmeter.budget.exceeded"
BUDGET_THRESHOLD = "costmeter.budget.threshold"
INTERNAL_ERROR = "costmeter.internal_error"
WARNING = "costmeter.warning"
_WARNING_EVENTS = frozenset({BUDGET_EXCEEDED, BUDGET_THRESHOLD, WARNING, INTERNAL_ERROR})
QUEUE_LIMIT = 10_000  # per queue (dispatcher, each stream sink); beyond it events are dropped
CLOSE_TIMEOUT_S = 2.0
_BATCH = 1000

_stdlib_logger = logging.getLogger(LOGGER_NAME)
_stdlib_logger.addHandler(logging.NullHandler())

_registry_lock = threading.Lock()  # guards changes to _sinks/_listeners; emit() reads without it
_sinks: tuple[LogSink, ...] = ()
_listeners: tuple[Callable[[str, Mapping[str, Any]], None], ...] = ()
_env_read = False
structlog_failures = 0  # events the application's structlog pipeline raised on (best effort)
listener_failures = 0  # listener calls that raised
dropped_events = 0  # events the dispatcher dropped because the app's logger was not keeping up

_T = TypeVar("_T")

# -- a bounded queue drained by one daemon thread -----------------------------------------------


class Worker(Generic[_T]):
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

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
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


_dispatcher: Worker[Callable[[], object]] = Worker("costmeter-events", _run_all, QUEUE_LIMIT)


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
        return render({"event": self.event, **self.fields}).rstrip("\n")


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


def flush(timeout: float = CLOSE_TIMEOUT_S) -> bool:
    """
    Wait (at most *timeout* seconds) until queued events reached the application's logger and
    every stream sink; ``False`` if some destination is still behind.
    """
    deadline = time.monotonic() + timeout
    done = _dispatcher.flush(timeout)
    for sink in _sinks:
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
                    plain = render(record)
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


def render(record: Mapping[str, Any]) -> str:
    return (
        json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default) + "\n"
    )


def add_sink(sink: LogSink) -> None:
    """Write every event to *sink* too (`costmeter._sinks.log_to`)."""
    global _sinks  # noqa: PLW0603
    with _registry_lock:
        _sinks = (*_sinks, sink)


def remove_sink(sink: LogSink) -> None:
    global _sinks  # noqa: PLW0603
    with _registry_lock:
        _sinks = tuple(s for s in _sinks if s is not sink)


def _read_env_once() -> None:
    """``COSTMETER_LOG_FILE`` is read when the first event is emitted, never at import."""
    from costmeter._sinks import configure_from_env  # noqa: PLC0415  (it imports this module)

    configure_from_env()


@atexit.register
def _flush_at_exit() -> None:
    flush(CLOSE_TIMEOUT_S)
