"""
Budgets that hold: reserve the worst case before a request is sent, settle the real cost after.

Every tool we compete with checks spend *after* calls complete, so the call that crosses the cap
always goes through and concurrent calls all pass the check together. Here a call first reserves
its worst-case cost (input estimate at list price + its output bound at output price) in *every*
active budget, atomically; a budget that cannot cover it refuses and the request is never sent.
When the response arrives the reservation is released and the actual cost charged.

Guarantee: with ``max_output_tokens`` set and the whole input visible to the estimator, total
spend never exceeds the limit (the estimate is exact for text input; see the README for the
bound otherwise).

Where the numbers live is the budget's ledger (`costmeter._ledger`): this process's memory by
default, or a SQLite file / Redis database shared by many processes, per calendar window. Every
admission and threshold decision is made by `costmeter._ledger.WindowState`, whatever the ledger.

The active budgets live in a ``ContextVar``: asyncio tasks inherit them; threads started by a
pool do not (run the work in ``contextvars.copy_context().run(...)``, or enter a shared
`Budget` object in each thread: a `Budget` is safe to use from many threads and tasks at once).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costmeter._errors import BudgetExceededError, ConfigurationError, LedgerError
from costmeter._ledger import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LEDGER_TIMEOUT,
    Ledger,
    WindowState,
    memory_lock,
    new_hold_id,
    open_ledger,
    parse_window,
    redact,
    window_end,
    window_key,
)

__all__ = ["Budget", "Reservation", "active_budgets", "budget", "parse_usd"]

_ZERO = Decimal(0)
_active: ContextVar[tuple[Budget, ...]] = ContextVar("costmeter_budgets", default=())


def parse_usd(value: object, what: str = "limit_usd") -> Decimal:
    """
    A finite, non-negative USD amount from str, int, Decimal or float (via its repr).

    Raises:
        ConfigurationError: negative, NaN, infinite or non-numeric values, naming the value.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what} must be finite, got {value!r}")
        value = repr(value)
    if not isinstance(value, (str, int, Decimal)):
        raise ConfigurationError(f"{what} must be a str, int or Decimal, got {value!r}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ConfigurationError(f"{what} must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if amount < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    return amount


class Budget:
    """
    A spending cap in USD, shared by every call made while it is active.

    Use ``with costmeter.budget("2.00"):`` for a scoped cap, or create one `Budget` and enter it
    from many threads or tasks to share a single cap (e.g. a per-process daily cap). With a
    *ledger* the cap is shared by every process that uses the same ledger and *name*, and
    survives restarts.

    Args:
        limit_usd: The cap (str, int, Decimal; floats are converted via their repr).
        name: Shown in events and errors; for a persistent ledger, the key every process shares.
        on_exceed: ``"raise"`` refuses the call with `BudgetExceededError` before sending it;
            ``"warn"`` logs ``costmeter.budget.exceeded`` and lets it through.
        warn_at: Fractions of the limit at which ``costmeter.budget.threshold`` is emitted, once
            each (per window, across all processes of a shared ledger), when spend crosses them.
        allow_unpriced: By default a call to a model no price source knows is refused inside a
            budget (the cap could not be enforced). ``True`` lets such calls through at $0.
        ledger: Where the numbers live: ``None`` (this process's memory), ``"sqlite:///path.db"``
            (processes on one host) or ``"redis://host:6379/0"`` (processes on many hosts).
        window: ``"hour"``/``"1h"``, ``"day"``/``"1d"``, ``"month"``: a calendar window that
            starts again from zero; ``None`` (default): one total that never expires.
        tz: Time zone of the window boundaries (a zoneinfo name or ``tzinfo``); default UTC.
        lease_seconds: How long a persistent ledger keeps a call's reservation if its process
            dies before settling (default 600 s). Must exceed your longest call.
        ledger_timeout: Seconds to wait for a locked SQLite file or a Redis answer (default 5).
        on_ledger_error: ``"raise"`` (default, fail closed): when the ledger cannot be reached
            the call raises `LedgerError` and is not sent. ``"allow"`` (fail open): the call is
            sent unbudgeted by this budget and a ``costmeter.warning`` event is emitted.
        clock: Unix time source for windows and leases (tests inject one; default ``time.time``).
    """

    def __init__(
        self,
        limit_usd: str | int | float | Decimal,
        *,
        name: str | None = None,
        on_exceed: Literal["raise", "warn"] = "raise",
        warn_at: Iterable[float | Decimal | str] = (0.8,),
        allow_unpriced: bool = False,
        ledger: str | Ledger | None = None,
        window: str | None = None,
        tz: str | tzinfo | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        ledger_timeout: float = DEFAULT_LEDGER_TIMEOUT,
        on_ledger_error: Literal["raise", "allow"] = "raise",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._limit = parse_usd(limit_usd)
        if on_exceed not in ("raise", "warn"):
            raise ConfigurationError(f"on_exceed must be 'raise' or 'warn', got {on_exceed!r}")
        if on_ledger_error not in ("raise", "allow"):
            raise ConfigurationError(
                f"on_ledger_error must be 'raise' or 'allow', got {on_ledger_error!r}"
            )
        fractions = sorted(parse_usd(f, "warn_at fraction") for f in warn_at)
        if any(f > 1 for f in fractions):
            raise ConfigurationError(f"warn_at fractions must be within [0, 1], got {warn_at!r}")
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, (int, float))
            or not lease_seconds > 0
            or not math.isfinite(lease_seconds)
        ):
            raise ConfigurationError(
                f"lease_seconds must be a positive number, got {lease_seconds!r}"
            )
        self.name = name
        self.on_exceed = on_exceed
        self.on_ledger_error = on_ledger_error
        self.allow_unpriced = allow_unpriced
        self._thresholds = tuple(fractions)
        self._window = parse_window(window)
        self._tz = _zone(tz)
        self._ledger = open_ledger(ledger, ledger_timeout)
        if self._ledger.persistent and not name:
            raise ConfigurationError(
                f"a budget kept in {self._ledger.url} needs a name (the key its processes share)"
            )
        self._key = name or ""
        self._lease: float | None = float(lease_seconds) if self._ledger.persistent else None
        self._clock = clock or time.time
        self._seen = WindowState()  # last state read: what properties show if the ledger is down

    def __repr__(self) -> str:
        state = self._state()
        return (
            f"Budget(name={self.name!r}, limit_usd={self._limit}, spent_usd={state.spent}, "
            f"reserved_usd={state.reserved})"
        )

    # -- read-only state ---------------------------------------------------------------------
    @property
    def ledger_url(self) -> str:
        """Where the numbers live (``memory://`` for a per-process budget; no password)."""
        return redact(self._ledger.url)

    @property
    def persistent(self) -> bool:
        """Whether reserving and settling do I/O (SQLite, Redis) rather than touch memory."""
        return bool(self._ledger.persistent)

    @property
    def window_key(self) -> str:
        """The current window's key in the ledger (``total`` when the budget has no window)."""
        return window_key(self._window, self._clock(), self._tz)

    def _state(self) -> WindowState:
        """
        The current window as the ledger has it now (other processes' calls included).

        If the ledger cannot be reached, the last state this object read: a property is read
        while events are written, and metering must not break a call that was already made.
        """
        now = self._clock()
        try:
            state = self._ledger.read(self._key, window_key(self._window, now, self._tz))
        except LedgerError:
            return self._seen
        state.expire(now)
        self._seen = state
        return state

    @property
    def limit_usd(self) -> Decimal:
        """The cap."""
        return self._limit

    @property
    def spent_usd(self) -> Decimal:
        """Actual cost charged so far (estimates for streams abandoned before usage arrived)."""
        return self._state().spent

    @property
    def reserved_usd(self) -> Decimal:
        """Worst-case cost held by calls in flight."""
        return self._state().reserved

    @property
    def remaining_usd(self) -> Decimal:
        """What a new call may still reserve: ``limit - spent - reserved`` (never below 0)."""
        state = self._state()
        return max(_ZERO, self._limit - state.spent - state.reserved)

    @property
    def calls(self) -> int:
        """Calls settled against this budget."""
        return self._state().calls

    @property
    def refused(self) -> int:
        """Calls refused before sending."""
        return self._state().refused

    @property
    def by_model(self) -> dict[str, Decimal]:
        """Spend per (requested) model."""
        return dict(self._state().by_model)

    def reset(self) -> None:
        """
        Forget this budget's spend and reservations in every window of its ledger.

        Calls in flight still settle afterwards, charging what they actually cost.
        """
        self._ledger.reset(self._key)
        self._seen = WindowState()

    # -- context management ------------------------------------------------------------------
    def __enter__(self) -> Budget:
        _active.set((*_active.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = list(_active.get())
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break
        _active.set(tuple(stack))

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- accounting (called by `Reservation`) ------------------------------------------------
    def _admit(
        self, hold_id: str, amount: Decimal, model: str | None
    ) -> tuple[str, BudgetExceededError | None]:
        """Hold *amount* in the current window; returns the window and the refusal, if any."""
        now = self._clock()
        window = window_key(self._window, now, self._tz)
        expires = None if self._lease is None else now + self._lease
        force = self.on_exceed == "warn"

        def change(state: WindowState) -> BudgetExceededError | None:
            state.expire(now)
            spent, reserved = state.spent, state.reserved
            fits = state.admit(hold_id, amount, self._limit, expires, force=force)
            self._seen = state.copy()
            return None if fits else self._refusal(amount, model, spent, reserved)

        return window, self._ledger.transact(self._key, window, change, self._keep_for(now))

    def _charge(
        self, window: str | None, hold_id: str | None, actual: Decimal, model: str | None
    ) -> list[Decimal]:
        """
        Release the hold and charge *actual* in the window the call was admitted in (its
        worst case was reserved there); a call admitted without a hold (fail-open) is charged
        in the current window.
        """
        now = self._clock()
        if window is None:
            window = window_key(self._window, now, self._tz)

        def change(state: WindowState) -> list[Decimal]:
            state.expire(now)
            crossed = state.charge(
                hold_id, actual, model or "unknown", self._limit, self._thresholds
            )
            self._seen = state.copy()
            return crossed

        return self._ledger.transact(self._key, window, change, self._keep_for(now))

    def _keep_for(self, now: float) -> float | None:
        end = window_end(self._window, now, self._tz)
        return None if end is None else max(0.0, end - now)

    def _release(self, window: str, hold_id: str) -> None:
        self._ledger.transact(self._key, window, lambda state: state.release(hold_id))

    def _refusal(
        self, amount: Decimal, model: str | None, spent: Decimal, reserved: Decimal
    ) -> BudgetExceededError:
        return BudgetExceededError(
            budget_name=self.name,
            limit_usd=self._limit,
            spent_usd=spent,
            reserved_usd=reserved,
            estimated_cost_usd=amount,
            model=model,
        )

    def _ledger_warning(self, exc: LedgerError, stage: str, amount: Decimal) -> None:
        """Tell the operator a call went through without this budget's ledger knowing."""
        from costmeter import _logging as log  # noqa: PLC0415

        log.emit(
            log.WARNING,
            {
                "warning": "ledger_unavailable",
                "budget": self.name,
                "ledger": self.ledger_url,
                "stage": stage,
                "amount_usd": log.usd(amount),
                "error": str(exc)[:500],
            },
        )


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return timezone.utc
    if isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ConfigurationError(f"tz must be a time zone name like 'Europe/Paris', got {tz!r}")


def budget(
    limit_usd: str | int | float | Decimal,
    *,
    name: str | None = None,
    on_exceed: Literal["raise", "warn"] = "raise",
    warn_at: Iterable[float | Decimal | str] = (0.8,),
    allow_unpriced: bool = False,
    ledger: str | Ledger | None = None,
    window: str | None = None,
    tz: str | tzinfo | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ledger_timeout: float = DEFAULT_LEDGER_TIMEOUT,
    on_ledger_error: Literal["raise", "allow"] = "raise",
    clock: Callable[[], float] | None = None,
) -> Budget:
    """
    A new `Budget`, to be used as ``with costmeter.budget("2.00", name="eval"):``.

    Shared across processes: ``costmeter.budget("50", name="daily",
    ledger="sqlite:///budgets.db", window="1d")`` (see `Budget` for every option).
    """
    return Budget(
        limit_usd,
        name=name,
        on_exceed=on_exceed,
        warn_at=warn_at,
        allow_unpriced=allow_unpriced,
        ledger=ledger,
        window=window,
        tz=tz,
        lease_seconds=lease_seconds,
        ledger_timeout=ledger_timeout,
        on_ledger_error=on_ledger_error,
        clock=clock,
    )


def active_budgets() -> tuple[Budget, ...]:
    """The budgets active in the current context, outermost first."""
    return _active.get()


def _all_in_memory(budgets: Sequence[Budget]) -> bool:
    return not any(b._ledger.persistent for b in budgets)


@dataclass
class Reservation:
    """
    What one call holds in each budget; settled exactly once.

    In-memory budgets are reserved and settled under one lock, all at once. Budgets in
    persistent ledgers are reserved one after the other, each atomically in its ledger; if one
    refuses, the holds already taken are released (no budget can overshoot: a hold only ever
    makes others more cautious, for the instant it exists).
    """

    budgets: tuple[Budget, ...]
    amount: Decimal
    model: str | None
    warned: list[BudgetExceededError] = field(default_factory=list)
    settled: bool = False
    hold_id: str = field(default_factory=new_hold_id)
    # Per budget: the window holding this call, or None (its ledger was down and it fails open).
    windows: list[str | None] = field(default_factory=list)

    @classmethod
    def take(cls, budgets: Sequence[Budget], amount: Decimal, model: str | None) -> Reservation:
        """
        Reserve *amount* in every budget atomically, or refuse.

        Raises:
            BudgetExceededError: a ``raise``-mode budget cannot cover *amount*; nothing is
                reserved anywhere.
            LedgerError: a fail-closed budget's ledger cannot be reached; nothing is reserved.
        """
        reservation = cls(tuple(budgets), amount, model)
        refusal: BudgetExceededError | None = None
        with memory_lock if _all_in_memory(budgets) else contextlib.nullcontext():
            try:
                for b in budgets:
                    refusal = reservation._hold_in(b)
                    if refusal is not None:
                        break
            except BaseException:
                reservation._give_back()
                raise
            if refusal is not None:
                reservation._give_back()
                raise refusal
        return reservation

    def _hold_in(self, b: Budget) -> BudgetExceededError | None:
        """Hold the amount in *b*; returns its refusal if it refuses (``raise`` mode)."""
        try:
            window, refusal = b._admit(self.hold_id, self.amount, self.model)
        except LedgerError as exc:
            if b.on_ledger_error == "raise":
                raise LedgerError(f"budget {b.name!r}: {exc}; the request was not sent") from exc
            b._ledger_warning(exc, "reserve", self.amount)
            self.windows.append(None)
            return None
        if refusal is not None and b.on_exceed == "raise":
            return refusal
        self.windows.append(window)
        if refusal is not None:
            self.warned.append(refusal)
        return None

    def _give_back(self) -> None:
        """Release the holds taken so far (a later budget refused or failed)."""
        for b, window in zip(self.budgets, self.windows, strict=False):  # taken so far
            if window is None:
                continue
            with contextlib.suppress(LedgerError):  # if not, the hold's lease releases it
                b._release(window, self.hold_id)

    def settle(self, actual: Decimal) -> list[tuple[Budget, Decimal]]:
        """
        Release the reservation and charge *actual*; returns newly crossed thresholds.

        Never raises for an unreachable ledger: the request was already made. The charge is then
        missing from that ledger (its hold expires with its lease) and a ``costmeter.warning``
        event says so; the ``costmeter.call`` event still carries the cost.
        """
        crossed: list[tuple[Budget, Decimal]] = []
        with memory_lock if _all_in_memory(self.budgets) else contextlib.nullcontext():
            with memory_lock:
                if self.settled:
                    return crossed
                self.settled = True
            for b, window in zip(self.budgets, self.windows, strict=True):
                hold = None if window is None else self.hold_id
                try:
                    crossed.extend((b, f) for f in b._charge(window, hold, actual, self.model))
                except LedgerError as exc:
                    b._ledger_warning(exc, "settle", actual)
        return crossed
