"""
Budget alerts: ``on_threshold=`` and ``on_exceeded=`` callbacks, run off the request's path.

A callback posts to Slack, pages someone, writes a row: slow, fallible work that must neither
delay the call that crossed a threshold nor break it. So an alert is put on a bounded queue and
one daemon worker thread runs the callbacks, in order. A callback that raises is contained and
reported as a ``costmeter.warning`` event (``budget_alert_failed``); when the queue is full
(callbacks far slower than the calls) the alert is dropped and ``budget_alert_dropped`` says so.
The worker is started on first use, and again in a forked child (threads do not survive a fork). At exit, queued alerts get up to 5 s to run.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = ["AlertCallback", "BudgetAlert", "deliver", "wait_for_alerts"]

_QUEUE_SIZE = 1024
_EXIT_WAIT_S = 5.0


@dataclass(frozen=True)
class BudgetAlert:
    """
    What an ``on_threshold`` / ``on_exceeded`` callback receives.

    Attributes:
        kind: ``"threshold"`` (spend crossed a ``warn_at`` fraction; once per fraction and
            window, across every process of a shared ledger) or ``"exceeded"`` (a call's worst
            case did not fit: refused, or let through by ``on_exceed="warn"``).
        budget: The budget's name.
        budget_key: The per-key budget's key (``per="tag:user"``: the user), else ``None``.
        limit_usd: The cap.
        spent_usd: Spend in the window when it happened.
        fraction: The ``warn_at`` fraction crossed (``threshold`` only).
        estimated_cost_usd: The call's worst case (``exceeded`` only).
        model: The call's model.
        refused: ``exceeded`` only: the call was refused and not sent (``False``: warn mode).
    """

    kind: Literal["threshold", "exceeded"]
    budget: str | None
    budget_key: str | None
    limit_usd: Decimal
    spent_usd: Decimal
    fraction: Decimal | None = None
    estimated_cost_usd: Decimal | None = None
    model: str | None = None
    refused: bool = False


AlertCallback = Callable[[BudgetAlert], object]


class _Worker:
    """One daemon thread draining a bounded queue of (callback, alert)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: queue.Queue[tuple[AlertCallback, BudgetAlert]] = queue.Queue(_QUEUE_SIZE)
        self.thread: threading.Thread | None = None

    def put(self, callback: AlertCallback, alert: BudgetAlert) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="costmeter-budget-alerts", daemon=True
                )
                self.thread.start()
        try:
            self.queue.put_nowait((callback, alert))
        except queue.Full:
            _warn("budget_alert_dropped", alert, None)

    def _run(self) -> None:
        while True:
            callback, alert = self.queue.get()
            try:
                callback(alert)
            except Exception as exc:  # a callback must never break metering
                _warn("budget_alert_failed", alert, exc)
            finally:
                self.queue.task_done()


_worker = _Worker()


def _reinit_after_fork() -> None:
    global _worker  # noqa: PLW0603
    _worker = _Worker()


os.register_at_fork(after_in_child=_reinit_after_fork)


def deliver(callback: AlertCallback | None, alert: BudgetAlert) -> None:
    """Queue *alert* for *callback* (if any); returns at once."""
    if callback is not None:
        _worker.put(callback, alert)


def wait_for_alerts(timeout: float | None = None) -> bool:
    """
    Wait until every queued alert has been handled (or *timeout* seconds); returns whether
    the queue drained. Runs at interpreter exit with a 5 s bound, so a script's last alerts
    are delivered although the worker is a daemon thread.
    """
    done = _worker.queue.all_tasks_done
    with done:
        return done.wait_for(lambda: not _worker.queue.unfinished_tasks, timeout)


atexit.register(wait_for_alerts, _EXIT_WAIT_S)


def _warn(code: str, alert: BudgetAlert, exc: Exception | None) -> None:
    from costmeter import _events as log  # noqa: PLC0415

    fields: dict[str, object] = {
        "warning": code,
        "budget": alert.budget,
        "budget_key": alert.budget_key,
        "alert": alert.kind,
    }
    if exc is not None:
        fields["error_type"] = type(exc).__name__
        fields["error"] = str(exc)[:500]
    log.emit(log.WARNING, fields)  # never raises
