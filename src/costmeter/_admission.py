"""
The admission policy: one budget window's numbers, and every decision about them.

A budget's state for one window — spend, call and refusal counts, thresholds already announced,
spend per model, and the *holds* (reservations) of calls in flight — is a `WindowState`. Every
decision about it (does the worst case fit? which thresholds did this charge cross? which holds
have outlived their lease?) is a method of `WindowState`, written once; the ledgers (`costmeter._ledger`) only store it
and apply a change atomically.

Crash safety: a hold carries an expiry (its lease). A process killed mid-call never settles its
hold; the next operation on that window, from any process, ends holds whose lease has passed.
A hold whose request was never sent is released. A hold marked *sent* (`WindowState.mark_sent`,
called once the request left the process) is **charged** at its full worst case: the provider
billed that request, and the process that knew the real cost is gone. If that process was only
slow and settles later after all, the settle corrects the charge to the actual cost (the expired
hold leaves a ``late:`` record for a day, so the call is never counted twice).
The lease must outlast the longest call (streams); a background response may outlive it (see below).

Objects billed later (background responses, batches) are held under their *object's* id
(`object_hold_id`, ``obj:<id>``) once the create returns it, in the window of the object's
``created_at``, so any process sharing the ledger — the web app that created it, the worker that
polls it — settles the same hold, and a charge under an object id is remembered for a day
(``billed:`` records): the first process to see the object finished charges it, the others find it
billed and charge nothing. A creator's hold that outlives its lease is charged its worst case
and corrected by the poll that sees the real cost (its ``late:`` record).
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
from dataclasses import dataclass, field
from decimal import Decimal

from costmeter._errors import LedgerError
from costmeter._money import money_math

__all__ = [
    "BOUND_SHARE",
    "RECORD_SECONDS",
    "Hold",
    "Late",
    "WindowState",
    "new_hold_id",
    "object_hold_id",
]

_ZERO = Decimal(0)
# How long an expired *sent* hold is remembered, so a late settle corrects its charge; and how
# long an object's charge is, so another process's poll of it charges nothing.
RECORD_SECONDS = 24 * 3600.0


@dataclass
class Hold:
    """A call's reservation: its worst case, until settled, released or expired."""

    amount: Decimal
    expires: float | None  # Unix time; None: never (in-memory budgets die with their process)
    sent: bool = False  # the request left the process: on expiry the amount is charged
    model: str = "unknown"  # what an expired sent hold is charged to in ``by_model``


@dataclass
class Late:
    """A sent hold that expired and was charged its worst case; a late settle corrects it."""

    amount: Decimal
    model: str
    forget_at: float


#: A call admitted on a bound of its worst case (text counted by its UTF-8 length, not
#: tokenized) holds that bound only while it is at most this share of what the budget has
#: left; nearer the limit, calls hold their exact worst case, so bounds never decide refusals.
BOUND_SHARE = Decimal("0.1")


def _new_prefix() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}-"


_prefix = _new_prefix()
_serial = itertools.count()


def _after_fork_in_child() -> None:
    global _prefix, _serial
    _prefix, _serial = _new_prefix(), itertools.count()


os.register_at_fork(after_in_child=_after_fork_in_child)


def new_hold_id() -> str:
    """
    A hold id, unique across processes and hosts: a random per-process prefix (renewed in a
    forked child; the pid helps when reading a ledger) and a serial number.
    """
    return f"{_prefix}{next(_serial)}"


def object_hold_id(object_id: str) -> str:
    """The hold id of an object billed later (a background response, a batch): the same in
    every process that sees the object, so they all settle one hold and charge it once."""
    return f"obj:{object_id}"


@dataclass
class WindowState:
    """
    One budget's numbers for one window. The only place that decides admission and thresholds.

    Backends load it, call one of the methods below inside their atomic section, and store it.
    """

    spent: Decimal = _ZERO
    calls: int = 0
    refused: int = 0
    crossed: int = 0  # how many of the budget's warn_at thresholds have been announced
    limit: Decimal | None = None  # the limit last used with this window (for `budget show`)
    by_model: dict[str, Decimal] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    late: dict[str, Late] = field(default_factory=dict)
    billed: dict[str, float] = field(default_factory=dict)  # object hold id -> forget at

    @property
    def reserved(self) -> Decimal:
        """Worst cases held by calls in flight."""
        if not self.holds:
            return _ZERO
        with money_math():
            return self._reserved()

    def _reserved(self) -> Decimal:  # inside money_math
        return sum((hold.amount for hold in self.holds.values()), _ZERO)

    def remaining(self, limit: Decimal) -> Decimal:
        """What a new call may still reserve: ``limit - spent - reserved``, never below 0."""
        with money_math():
            return max(_ZERO, limit - self.spent - self._reserved())

    def expire(self, now: float) -> list[str]:
        """
        End holds whose lease passed (their process died mid-call); returns their ids.

        An unsent hold is released: nothing was billed. A sent hold is charged its worst case
        (the provider billed the request; the real cost died with the process) and remembered
        for a day in `late`, so a settle that still arrives corrects the charge instead of
        adding to it.
        """
        gone = [
            hold_id
            for hold_id, hold in self.holds.items()
            if hold.expires is not None and hold.expires <= now
        ]
        if gone:
            with money_math():
                for hold_id in gone:
                    hold = self.holds.pop(hold_id)
                    if hold.sent:
                        self._add_spend(hold.amount, hold.model, 1)
                        self.late[hold_id] = Late(hold.amount, hold.model, now + RECORD_SECONDS)
        if self.late:
            for hold_id in [k for k, late in self.late.items() if late.forget_at <= now]:
                del self.late[hold_id]
        if self.billed:
            for hold_id in [k for k, forget_at in self.billed.items() if forget_at <= now]:
                del self.billed[hold_id]
        return gone

    def mark_sent(self, hold_id: str) -> None:
        """The hold's request was sent: if its process dies, the hold is charged, not released."""
        hold = self.holds.get(hold_id)
        if hold is not None:
            hold.sent = True

    def _add_spend(self, amount: Decimal, model: str, calls: int) -> None:
        self.spent += amount
        self.calls += calls
        self.by_model[model] = self.by_model.get(model, _ZERO) + amount

    def admit(
        self,
        hold_id: str,
        amount: Decimal,
        limit: Decimal,
        expires: float | None,
        *,
        force: bool,
        model: str = "unknown",
        sent: bool = False,
        probe: bool = False,
    ) -> bool:
        """
        Hold *amount* if ``spent + reserved + amount <= limit``; returns whether it fit.

        *force* (a ``warn``-mode budget) holds it even when it does not fit; otherwise a call
        that does not fit is counted as refused and nothing is held.

        *probe*: *amount* is a bound of the worst case, held only while it is at most
        `BOUND_SHARE` of what is left; else nothing is held or counted (the caller then
        decides on the exact worst case).
        """
        self.limit = limit
        with money_math():
            need = amount / BOUND_SHARE if probe else amount
            fits = self.spent + self._reserved() + need <= limit
        if fits or (force and not probe):
            self.holds[hold_id] = Hold(amount, expires, sent, model)
        elif not probe:
            self.refused += 1
        return fits

    def shrink(self, hold_id: str, amount: Decimal) -> None:
        """Hold only *amount* (the exact worst case, now known) if the hold is larger."""
        hold = self.holds.get(hold_id)
        if hold is not None and amount < hold.amount:
            hold.amount = amount

    def release(self, hold_id: str) -> None:
        """Give a hold back without charging (a call refused by another budget)."""
        self.holds.pop(hold_id, None)

    def rename(self, hold_id: str, new_id: str) -> Hold | None:
        """Keep a hold under *new_id* (an object's id, once known); returns it, if it existed."""
        hold = self.holds.pop(hold_id, None)
        if hold is not None and new_id not in self.billed:  # else: already charged elsewhere
            self.holds[new_id] = hold
        return hold

    def charge(
        self,
        hold_id: str | None,
        actual: Decimal,
        model: str,
        limit: Decimal,
        thresholds: tuple[Decimal, ...],
        *,
        once_until: float | None = None,
    ) -> list[Decimal] | None:
        """
        Release the call's hold (if it still exists) and charge *actual*.

        Returns the ``warn_at`` fractions this charge crossed: each is announced once per window,
        whichever process crosses it. A hold that expired after its request was sent was already
        charged its worst case (see `expire`): that charge is replaced by *actual*.

        *once_until* (an object's hold): charge *hold_id* once — remember it until then, and
        return ``None`` without charging if it was already charged (by any process).
        """
        self.limit = limit
        if once_until is not None and hold_id is not None:
            if hold_id in self.billed:
                self.holds.pop(hold_id, None)
                return None
            self.billed[hold_id] = once_until
        with money_math():
            late = None if hold_id is None else self.late.pop(hold_id, None)
            if late is not None:
                self._add_spend(-late.amount, late.model, -1)
                if not self.by_model[late.model]:
                    del self.by_model[late.model]
            if hold_id is not None:
                self.holds.pop(hold_id, None)
            self._add_spend(actual, model, 1)
            crossed = []
            while self.crossed < len(thresholds) and self.spent >= thresholds[self.crossed] * limit:
                crossed.append(thresholds[self.crossed])
                self.crossed += 1
        return crossed

    def copy(self) -> WindowState:
        """An independent copy (readers must not see a later change)."""
        return WindowState(
            self.spent,
            self.calls,
            self.refused,
            self.crossed,
            self.limit,
            dict(self.by_model),
            {k: Hold(h.amount, h.expires, h.sent, h.model) for k, h in self.holds.items()},
            {k: Late(v.amount, v.model, v.forget_at) for k, v in self.late.items()},
            dict(self.billed),
        )

    # -- storage form: flat str -> str fields (a Redis hash, SQLite rows) -------------------------
    def to_fields(self) -> dict[str, str]:
        """The state as flat string fields; money as exact decimal strings."""
        fields = {
            "spent": str(self.spent),
            "calls": str(self.calls),
            "refused": str(self.refused),
            "crossed": str(self.crossed),
        }
        if self.limit is not None:
            fields["limit"] = str(self.limit)
        for model, amount in self.by_model.items():
            fields[f"model:{model}"] = str(amount)
        for hold_id, hold in self.holds.items():
            expires = "-" if hold.expires is None else repr(hold.expires)
            # "amount expires sent|- model" (older versions wrote "amount expires").
            sent = "sent" if hold.sent else "-"
            fields[f"hold:{hold_id}"] = f"{hold.amount} {expires} {sent} {hold.model}"
        for hold_id, late in self.late.items():
            fields[f"late:{hold_id}"] = f"{late.amount} {late.forget_at!r} {late.model}"
        for hold_id, forget_at in self.billed.items():
            fields[f"billed:{hold_id}"] = repr(forget_at)
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> WindowState:
        """
        Parse `to_fields` output.

        Raises:
            LedgerError: data costmeter did not write (garbage, NaN, infinities, negative
                amounts), naming the field; never a raw `decimal.InvalidOperation`.
        """
        state = cls()
        name = ""
        try:
            for name, value in fields.items():
                if name.startswith("model:"):
                    state.by_model[name[6:]] = _stored_amount(value)
                elif name.startswith("hold:"):
                    amount, expires, *rest = value.split(" ", 3)
                    state.holds[name[5:]] = Hold(
                        _stored_amount(amount),
                        None if expires == "-" else _stored_time(expires),
                        rest[:1] == ["sent"],
                        rest[1] if len(rest) == 2 else "unknown",
                    )
                elif name.startswith("late:"):
                    amount, forget_at, model = value.split(" ", 2)
                    state.late[name[5:]] = Late(
                        _stored_amount(amount), model, _stored_time(forget_at)
                    )
                elif name.startswith("billed:"):
                    state.billed[name[7:]] = _stored_time(value)
                elif name == "spent":
                    state.spent = _stored_amount(value)
                elif name == "limit":
                    state.limit = _stored_amount(value)
                elif name in ("calls", "refused", "crossed"):
                    setattr(state, name, int(value))
        except (ValueError, ArithmeticError) as exc:
            raise LedgerError(
                f"unreadable budget state in the ledger (field {name!r}): {exc or 'bad value'}"
            ) from None
        return state


def _stored_amount(text: str) -> Decimal:
    """A stored amount: exact, finite and not negative, whatever the caller's decimal context."""
    with money_math():  # traps InvalidOperation: garbage raises instead of becoming NaN
        amount = Decimal(text)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not an amount: {text!r}")
    return amount


def _stored_time(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a time: {text!r}")
    return value
