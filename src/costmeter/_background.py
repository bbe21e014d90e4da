"""
Objects billed after the call that created them: background responses and batches.

A ``background=True`` create returns ``queued`` with no usage; its cost arrives later via
``retrieve``, a stream replay or ``cancel``. The creating call stays pending here (holding its
budget reservation) until one of them reports a terminal status; each id bills once per process
(across processes sharing a ledger, once per ledger: see `costmeter._admission`).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from costmeter import _events as _log

if TYPE_CHECKING:
    from costmeter._meter import Call

__all__ = ["Registry", "registry"]


class Registry:
    """
    Objects billed later (background responses, batches), and recently billed ids, so each id
    bills once per process.

    A ``background=True`` create returns ``queued`` with no usage; its cost arrives later via
    ``retrieve``, a stream replay or ``cancel``. The creating call stays pending (holding its
    budget reservation) until one of them reports a terminal status.
    """

    def __init__(self, remember: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Call] = {}
        self._billed: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def add_pending(self, object_id: str, call: Call) -> None:
        with self._lock:
            self._pending[object_id] = call

    def pop_pending(self, object_id: str) -> Call | None:
        with self._lock:
            return self._pending.pop(object_id, None)

    def drain_pending(self) -> list[Call]:
        """Every call still waiting for its object to finish (at exit)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        return pending

    def claim(self, object_id: str) -> bool:
        """Mark *object_id* billed; ``False`` if it already was."""
        with self._lock:
            if object_id in self._billed:
                return False
            self._billed[object_id] = None
            if len(self._billed) > self._remember:
                self._billed.popitem(last=False)
            return True

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()


registry = Registry()
if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork() stays held
    os.register_at_fork(after_in_child=registry.reset_after_fork)


@atexit.register
def _report_unbilled_background() -> None:
    """
    A background response still running when the process exits is billed by OpenAI, but
    costmeter never saw its usage: say so (one ``costmeter.warning`` each, with the worst case
    that was reserved) rather than lose it silently.
    """
    for call in registry.drain_pending():
        _log.emit(
            _log.WARNING,
            {
                "warning": "background_response_unbilled",
                "api": call.api,
                "model": call.model,
                "response_id": call.seen.response_id,
                "estimated_cost_usd": _log.usd(call.worst_case),
                "tags": dict(call.tags),
            },
        )
