"""
A call's reservation across its active budgets: take, mark sent, settle — and their async forms.

`Reservation.take` holds the call's worst case in every distinct active budget, or refuses;
`Reservation.mark_sent` tells persistent ledgers the request left the process (so a crash after
that point is charged, not forgotten); `Reservation.settle_report` replaces the hold by the
actual cost and returns, per budget, what the same transaction left: `Settled`
(`Reservation.settle` does the same and returns only the thresholds crossed).

`take_async` / `settle_async` run the blocking ledger I/O of SQLite/Redis budgets on a worker
thread without ever leaking a hold when the awaiting task is cancelled: the thread cannot be
interrupted, so whatever it reserves after its caller gave up is released by the thread itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costmeter import _ledger
from costmeter._admission import new_hold_id, object_hold_id
from costmeter._budget import Budget
from costmeter._errors import BudgetExceededError, BudgetKeyMissingError, LedgerError
from costmeter._money import ZERO

__all__ = ["Reservation", "Settled", "settle_async", "take_async"]


@dataclass(frozen=True)
class Settled:
    """
    One budget's numbers right after a call settled, from the settling transaction itself.

    Attributes:
        budget: The budget.
        budget_key: Its key for this call (per-key budgets), else ``None``.
        spent_usd: The window's spend, this call included (other processes' calls too).
        remaining_usd: What a new call may still reserve: ``limit - spent - reserved``, >= 0.
        crossed_thresholds: ``warn_at`` fractions this charge crossed (announced once each).
        recorded: ``False`` if the ledger could not be reached: the numbers are the last ones
            this process saw, and the charge is missing from the ledger (a warning said so).
        duplicate: The call settles an object (background response, batch) that a process
            sharing the ledger already charged: nothing was charged this time.
    """

    budget: Budget
    budget_key: str | None
    spent_usd: Decimal
    remaining_usd: Decimal
    crossed_thresholds: tuple[Decimal, ...] = ()
    recorded: bool = True
    duplicate: bool = False


def _distinct(budgets: Sequence[Budget]) -> tuple[Budget, ...]:
    """
    Each budget once: the same object entered twice, or two objects for the same state (same
    ledger, name, key rule and window), would otherwise hold and charge every call twice.
    Of two objects for one state, the one with the smaller limit decides admission.
    """
    if len(budgets) < 2:
        return tuple(budgets)
    chosen: dict[tuple[object, ...], Budget] = {}
    for b in budgets:
        same = b._identity()
        kept = chosen.get(same)
        if kept is None or b.limit_usd < kept.limit_usd:
            chosen[same] = b  # the dict keeps the first occurrence's position
    return tuple(chosen.values())


def _in_memory(budgets: Sequence[Budget]) -> bool:
    return not any(b.persistent for b in budgets)


@dataclass
class Reservation:
    """
    What one call holds in each budget; settled exactly once.

    In-memory budgets are reserved and settled under one lock, all at once. Budgets in
    persistent ledgers are reserved one after the other, each atomically in its ledger; if one
    refuses, the holds already taken are released (no budget can overshoot: a hold only ever
    makes others more cautious, for the instant it exists).

    Attributes:
        budgets: The distinct budgets the call is held in, outermost first.
        budget_keys: Per budget (same order), its key for this call (``per="tag:user"``:
            the user), or ``None`` for a budget without ``per``.
    """

    budgets: tuple[Budget, ...]
    amount: Decimal
    model: str | None
    warned: list[BudgetExceededError] = field(default_factory=list)
    # (budget, refusal) pairs of warn-mode budgets the call did not fit in
    warned_in: list[tuple[Budget, BudgetExceededError]] = field(default_factory=list)
    settled: bool = False
    sent: bool = False
    hold_id: str = field(default_factory=new_hold_id)
    budget_keys: tuple[str | None, ...] = ()
    in_memory: bool = True  # no budget does ledger I/O: everything under one lock, inline
    # Per budget: the window holding this call, or None (its ledger was down and it fails open).
    windows: list[str | None] = field(default_factory=list)
    # The object (background response, batch) the holds are kept under: charged once per ledger.
    object_id: str | None = None
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def budget_key(self) -> str | None:
        """The innermost budget's key (what the call event shows as ``budget_key``)."""
        return self.budget_keys[-1] if self.budget_keys else None

    @classmethod
    def take(
        cls,
        budgets: Sequence[Budget],
        amount: Decimal,
        model: str | None,
        *,
        sent: bool = False,
    ) -> Reservation:
        """
        Reserve *amount* in every distinct budget atomically, or refuse.

        *sent=True* stores the holds already marked sent (as `mark_sent` would, without its
        extra ledger write): for a request sent right after it is admitted. A hold taken so
        but never sent must be given back with `release` (a crash in between charges it).

        Raises:
            BudgetKeyMissingError: a per-key budget has no key in this context (a refusal).
            BudgetExceededError: a ``raise``-mode budget cannot cover *amount*; nothing is
                reserved anywhere.
            LedgerError: a fail-closed budget's ledger cannot be reached; nothing is reserved.
        """
        reservation = cls._take(budgets, amount, model, sent=sent, probe=False)
        assert reservation is not None  # only a probe gives up
        return reservation

    @classmethod
    def probe(
        cls, budgets: Sequence[Budget], amount: Decimal, model: str | None, *, sent: bool = False
    ) -> Reservation | None:
        """
        `take` *amount* — a bound of the call's worst case — only if every budget has room
        for it without a refusal or a warning; else hold nothing, count nothing, alert nothing,
        and return ``None``: the exact worst case must decide (`take`).

        Raises:
            LedgerError: as `take`.
        """
        return cls._take(budgets, amount, model, sent=sent, probe=True)

    @classmethod
    def _take(
        cls,
        budgets: Sequence[Budget],
        amount: Decimal,
        model: str | None,
        *,
        sent: bool,
        probe: bool,
    ) -> Reservation | None:
        distinct = _distinct(budgets)
        keys = []
        for b in distinct:
            key = b._call_key()
            if key is None and b.per is not None:
                if probe:
                    return None
                refusal: BudgetExceededError = BudgetKeyMissingError(
                    budget_name=b.name,
                    tag=b.per,
                    limit_usd=b.limit_usd,
                    estimated_cost_usd=amount,
                    model=model,
                )
                b._alert_exceeded(refusal, refused=True)
                raise refusal
            keys.append(key)
        reservation = cls(
            distinct,
            amount,
            model,
            sent=sent,
            budget_keys=tuple(keys),
            in_memory=_in_memory(distinct),
        )
        found: BudgetExceededError | None = None
        lock = _ledger.memory_lock if reservation.in_memory else contextlib.nullcontext()
        with lock:
            try:
                for b, key in zip(distinct, keys, strict=True):
                    found = reservation._hold_in(b, key, probe)
                    if found is not None:
                        break
            except BaseException:
                reservation._give_back()
                raise
            if found is not None:
                reservation._give_back()
        if probe and found is not None:
            return None
        if found is not None:
            found_in = distinct[len(reservation.windows)]
            found_in._alert_exceeded(found, refused=True)
            raise found
        for b, warning in reservation.warned_in:
            b._alert_exceeded(warning, refused=False)
        return reservation

    @classmethod
    def for_object(
        cls,
        budgets: Sequence[Budget],
        object_id: str,
        created_at: float | None,
        model: str | None,
    ) -> Reservation:
        """
        What settles an object billed later that this call did not create (another process
        did, or a bare client): its hold, if its creator took one in a shared ledger, and its
        charge, once per ledger. A per-key budget with no key in this context is left out (the
        object's key is the creator's; its hold then ends with its lease, charged).
        """
        distinct = [b for b in _distinct(budgets) if b.per is None or b._call_key() is not None]
        return cls(
            tuple(distinct),
            ZERO,
            model,
            sent=True,
            hold_id=object_hold_id(object_id),
            budget_keys=tuple(b._call_key() for b in distinct),
            in_memory=_in_memory(distinct),
            windows=[b._object_window(created_at) for b in distinct],
            object_id=object_id,
        )

    def hold_as_object(self, object_id: str, created_at: float | None) -> None:
        """
        The call created an object billed later (a background response, a batch): keep its
        holds under the object's id, in the object's window, so that whichever process sharing
        the ledger sees the object finish settles them, and the object is charged once.

        Never raises: a ledger that cannot be reached keeps the hold under its own id (it ends
        with its lease, charged its worst case, and the object is charged where it finishes).
        """
        with self._lock:
            if self.settled or self.object_id is not None:
                return
            old_id = self.hold_id
            self.hold_id, self.object_id = object_hold_id(object_id), object_id
        with _ledger.memory_lock if self.in_memory else contextlib.nullcontext():
            for i, (b, window, key) in enumerate(
                zip(self.budgets, self.windows, self.budget_keys, strict=True)
            ):
                if window is None:
                    continue
                target = b._object_window(created_at)
                try:
                    b._hold_as_object(
                        window, old_id, target, self.hold_id, self.amount, self.model, key
                    )
                    self.windows[i] = target
                except LedgerError as exc:
                    b._ledger_warning(exc, "hold_as_object", self.amount)
                    self.windows[i] = None

    def _hold_in(self, b: Budget, key: str | None, probe: bool) -> BudgetExceededError | None:
        """
        Hold the amount in *b*; returns its refusal if it refuses (``raise`` mode, or any
        budget the amount does not fit in when *probe*).
        """
        try:
            window, refusal = b._admit(
                self.hold_id, self.amount, self.model, key, self.sent, probe=probe
            )
        except LedgerError as exc:
            if b.on_ledger_error == "raise":
                raise LedgerError(f"budget {b.name!r}: {exc}; the request was not sent") from exc
            b._ledger_warning(exc, "reserve", self.amount)
            self.windows.append(None)
            return None
        if refusal is not None and (probe or b.on_exceed == "raise"):
            return refusal
        self.windows.append(window)
        if refusal is not None:
            self.warned.append(refusal)
            self.warned_in.append((b, refusal))
        return None

    def _give_back(self) -> None:
        """Release the holds taken so far (a later budget refused or failed)."""
        for b, window, key in zip(self.budgets, self.windows, self.budget_keys, strict=False):
            if window is None:
                continue
            with contextlib.suppress(LedgerError):  # if not, the hold's lease releases it
                b._release(window, self.hold_id, key)

    def release(self) -> None:
        """
        Give every hold back without charging anything (the request was never sent).

        Idempotent, and a no-op once settled. Never raises for an unreachable ledger (the
        hold then ends with its lease).
        """
        with self._lock:
            if self.settled:
                return
            self.settled = True
        with _ledger.memory_lock if self.in_memory else contextlib.nullcontext():
            self._give_back()

    def shrink(self, amount: Decimal) -> None:
        """
        Hold only *amount* from now on: the exact worst case, computed after a bound admitted
        the call (`probe`). Never raises; an unreachable ledger keeps the larger hold until
        the call settles (or its lease ends).
        """
        with self._lock:
            if self.settled or self.object_id is not None or amount >= self.amount:
                return
            self.amount = amount
        with _ledger.memory_lock if self.in_memory else contextlib.nullcontext():
            for b, window, key in zip(self.budgets, self.windows, self.budget_keys, strict=True):
                if window is not None:
                    with contextlib.suppress(LedgerError):
                        b._shrink(window, self.hold_id, key, amount)

    def mark_sent(self) -> None:
        """
        The request is about to leave (or has left) the process: call just before sending.

        From then on, if this process dies before settling, the ledger charges the held worst
        case when the hold's lease expires instead of releasing it (the provider billed the
        request). Idempotent; no I/O for in-memory budgets (their holds die with the process);
        one small write per SQLite/Redis budget (async code: call it off the event loop, or
        take with ``sent=True`` when the request goes out right away). Never raises: an unreachable ledger gets a
        ``costmeter.warning`` and the hold keeps its release-on-expiry rule.
        """
        with self._lock:
            if self.sent or self.settled:
                return
            self.sent = True
        for b, window, key in zip(self.budgets, self.windows, self.budget_keys, strict=True):
            if window is None or not b.persistent:
                continue
            try:
                b._mark_sent(window, self.hold_id, key)
            except LedgerError as exc:
                b._ledger_warning(exc, "mark_sent", self.amount)

    def settle(self, actual: Decimal) -> list[tuple[Budget, Decimal]]:
        """
        Release the reservation and charge *actual*; returns the ``warn_at`` thresholds newly
        crossed, as (budget, fraction) pairs. `settle_report` returns each budget's numbers too.
        """
        return [(s.budget, f) for s in self.settle_report(actual) for f in s.crossed_thresholds]

    def settle_report(self, actual: Decimal) -> list[Settled]:
        """
        Release the reservation and charge *actual*; returns, per budget (outermost first),
        the spend and remaining left by the settling transaction and the thresholds crossed —
        what the call event needs, without reading the ledger again.

        Settles once: a second call (of either method) returns ``[]``. Never raises for an
        unreachable ledger: the request was already made. The charge is then missing from that
        ledger (its hold expires with its lease) and a ``costmeter.warning`` event says so; the
        ``costmeter.call`` event still carries the cost.
        """
        with self._lock:
            if self.settled:
                return []
            self.settled = True
        results: list[Settled] = []
        with _ledger.memory_lock if self.in_memory else contextlib.nullcontext():
            for b, window, key in zip(self.budgets, self.windows, self.budget_keys, strict=True):
                hold = None if window is None else self.hold_id
                once = self.object_id is not None
                try:
                    results.append(b._charge(window, hold, actual, self.model, key, once=once))
                except LedgerError as exc:
                    b._ledger_warning(exc, "settle", actual)
                    results.append(b._last_seen(key))
        for item in results:
            for fraction in item.crossed_thresholds:
                item.budget._alert_threshold(item, fraction, self.model)
        return results


class _Handoff:
    """Between an awaiting task and the worker thread reserving for it: who owns the result."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.reservation: Reservation | None = None


async def take_async(
    budgets: Sequence[Budget], amount: Decimal, model: str | None, *, sent: bool = False
) -> Reservation:
    """
    `Reservation.take` for async code: in-memory budgets inline; SQLite/Redis budgets on a
    worker thread, so the event loop never blocks on a locked file or a slow Redis.

    Cancellation-safe: if the awaiting task is cancelled while the thread is reserving, the
    thread finishes anyway (it cannot be interrupted) and then releases what it reserved, so
    nothing stays held until the lease expires. The cancellation propagates at once.

    Raises:
        The same errors as `Reservation.take`, and ``asyncio.CancelledError``.
    """
    if _in_memory(budgets):
        return Reservation.take(budgets, amount, model, sent=sent)
    handoff = _Handoff()

    def work() -> Reservation:
        reservation = Reservation.take(budgets, amount, model, sent=sent)
        with handoff.lock:
            if not handoff.abandoned:
                handoff.reservation = reservation
                return reservation
        reservation.release()  # the caller is gone: give it back from this thread
        return reservation

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with handoff.lock:
            handoff.abandoned = True
            taken = handoff.reservation
        if taken is not None:  # the thread finished just before the cancellation
            threading.Thread(target=taken.release, name="costmeter-release").start()
        task.add_done_callback(_consume)  # a refusal nobody awaits is not an "unretrieved" error
        raise


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def settle_async(reservation: Reservation, actual: Decimal) -> list[Settled]:
    """
    `Reservation.settle_report` for async code (SQLite/Redis ledger I/O on a worker thread).

    Cancellation-safe: if the awaiting task is cancelled, the thread still settles (the call
    was made and is charged); the cancellation propagates at once.
    """
    if reservation.in_memory:
        return reservation.settle_report(actual)
    task = asyncio.ensure_future(asyncio.to_thread(reservation.settle_report, actual))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_consume)
        raise
