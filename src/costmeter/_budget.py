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
admission and threshold decision is made by `costmeter._admission.WindowState`, whatever the ledger.
A per-key budget (``per="tag:user"``) keeps one such state per key (per tag value) and window.
The reserve/settle protocol itself is `costmeter._reservation`; alerts are `costmeter._alerts`.

The active budgets live in a ``ContextVar``: asyncio tasks inherit them; threads started by a
pool do not (run the work in ``contextvars.copy_context().run(...)``, or enter a shared
`Budget` object in each thread: a `Budget` is safe to use from many threads and tasks at once).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import timezone, tzinfo
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costmeter._admission import RECORD_SECONDS, Hold, WindowState
from costmeter._alerts import AlertCallback, BudgetAlert, deliver
from costmeter._errors import BudgetExceededError, ConfigurationError, LedgerError
from costmeter._ledger import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LEDGER_TIMEOUT,
    Ledger,
    ledger_name,
    open_ledger,
    redact,
)
from costmeter._money import money_math, parse_amount
from costmeter._tags import current_tags
from costmeter._windows import parse_window, window_end, window_key

__all__ = [
    "Budget",
    "Reservation",
    "Settled",
    "active_budgets",
    "budget",
    "parse_usd",
    "settle_async",
    "take_async",
]

_ZERO = Decimal(0)
_active: ContextVar[tuple[Budget, ...]] = ContextVar("costmeter_budgets", default=())
P = ParamSpec("P")
T = TypeVar("T")


def parse_usd(value: object, what: str = "limit_usd") -> Decimal:
    """A USD amount: `costmeter._money.parse_amount`, the one amount parser."""
    return parse_amount(value, what)


def _parse_warn_at(warn_at: object) -> tuple[Decimal, ...]:
    """
    ``warn_at``: fractions of the limit in [0, 1]. A bare number (``0.8``, ``"0.8"``) is one
    fraction; ``()`` means no thresholds. ``None`` is refused rather than guessed at.
    """
    if type(warn_at) is tuple and warn_at == _DEFAULT_WARN_AT:  # a budget per request: cheap
        return _DEFAULT_THRESHOLDS
    if warn_at is None:
        raise ConfigurationError(
            "warn_at must be a fraction like 0.8 or a sequence like (0.5, 0.9); "
            "use warn_at=() for no thresholds, got None"
        )
    if isinstance(warn_at, (int, float, Decimal, str)):
        warn_at = (warn_at,)
    if not isinstance(warn_at, Iterable):
        raise ConfigurationError(
            f"warn_at must be a fraction or a sequence of fractions, got {warn_at!r}"
        )
    fractions = sorted(parse_amount(f, "warn_at fraction") for f in warn_at)
    if any(f > 1 for f in fractions):
        raise ConfigurationError(f"warn_at fractions must be within [0, 1], got {warn_at!r}")
    return tuple(fractions)


_DEFAULT_WARN_AT = (0.8,)
_DEFAULT_THRESHOLDS = (Decimal("0.8"),)


def _parse_per(per: object) -> str | None:
    """``per="tag:NAME"``: one cap per value of that tag; returns NAME."""
    if per is None:
        return None
    if isinstance(per, str) and per.startswith("tag:") and per[4:].strip():
        return per[4:].strip()
    raise ConfigurationError(f"per must be 'tag:NAME' (e.g. per='tag:user'), got {per!r}")


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
            A bare number is one fraction (``0.8``); ``()`` for none; ``None`` is an error.
        allow_unpriced: By default a call to a model no price source knows is refused inside a
            budget (the cap could not be enforced). ``True`` lets such calls through at $0.
        ledger: Where the numbers live: ``None`` (this process's memory), ``"sqlite:///path.db"``
            (processes on one host) or ``"redis://host:6379/0"`` (processes on many hosts).
        window: ``"hour"``/``"1h"``, ``"day"``/``"1d"``, ``"month"``: a calendar window that
            starts again from zero; ``None`` (default): one total that never expires.
        tz: Time zone of the window boundaries (a zoneinfo name or ``tzinfo``); default UTC.
        lease_seconds: How long a persistent ledger keeps a call's reservation if its process
            dies before settling (default 600 s); then the hold is released if its request was
            never sent, and charged as spent if it was (`Reservation.mark_sent`: the provider
            billed it). Must exceed your longest call.
        ledger_timeout: Seconds to wait for a locked SQLite file or a Redis answer (default 5).
        on_ledger_error: ``"raise"`` (default, fail closed): when the ledger cannot be reached
            the call raises `LedgerError` and is not sent. ``"allow"`` (fail open): the call is
            sent unbudgeted by this budget and a ``costmeter.warning`` event is emitted.
        clock: Unix time source for windows and leases (tests inject one; default ``time.time``).
        per: ``"tag:NAME"``: one cap per value of the ``NAME`` tag (``costmeter.tags(user=
            "alice")``), per window, on any ledger: every user gets *limit_usd*. A call with no
            such tag is refused (`BudgetKeyMissingError`: not sent) so no user escapes the cap.
            The properties below read the current context's key; ``for_key("alice")`` reads
            another's.
        on_threshold: Called with a `BudgetAlert` each time spend crosses a ``warn_at``
            fraction (once per fraction and window, across the processes of a ledger).
        on_exceeded: Called with a `BudgetAlert` each time a call does not fit (refused, or let
            through by ``on_exceed="warn"``). Both run on one background thread, in order, off
            the call's path; an exception is logged as ``costmeter.warning`` and dropped.
    """

    def __init__(
        self,
        limit_usd: str | int | float | Decimal,
        *,
        name: str | None = None,
        on_exceed: Literal["raise", "warn"] = "raise",
        warn_at: float | Decimal | str | Iterable[float | Decimal | str] = _DEFAULT_WARN_AT,
        allow_unpriced: bool = False,
        ledger: str | Ledger | None = None,
        window: str | None = None,
        tz: str | tzinfo | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        ledger_timeout: float = DEFAULT_LEDGER_TIMEOUT,
        on_ledger_error: Literal["raise", "allow"] = "raise",
        clock: Callable[[], float] | None = None,
        per: str | None = None,
        on_threshold: AlertCallback | None = None,
        on_exceeded: AlertCallback | None = None,
    ) -> None:
        self._limit = parse_amount(limit_usd, "limit_usd")
        if on_exceed not in ("raise", "warn"):
            raise ConfigurationError(f"on_exceed must be 'raise' or 'warn', got {on_exceed!r}")
        if on_ledger_error not in ("raise", "allow"):
            raise ConfigurationError(
                f"on_ledger_error must be 'raise' or 'allow', got {on_ledger_error!r}"
            )
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, (int, float))
            or not lease_seconds > 0
            or not math.isfinite(lease_seconds)
        ):
            raise ConfigurationError(
                f"lease_seconds must be a positive number, got {lease_seconds!r}"
            )
        for what, callback in (("on_threshold", on_threshold), ("on_exceeded", on_exceeded)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{what} must be callable, got {callback!r}")
        self.name = name
        self.on_exceed = on_exceed
        self.on_ledger_error = on_ledger_error
        self.allow_unpriced = allow_unpriced
        self.per = _parse_per(per)
        self.on_threshold = on_threshold
        self.on_exceeded = on_exceeded
        self._thresholds = _parse_warn_at(warn_at)
        self._window = parse_window(window)
        self._tz = _zone(tz)
        self._ledger = open_ledger(ledger, ledger_timeout)
        if self._ledger.persistent and not name:
            raise ConfigurationError(
                f"a budget kept in {redact(self._ledger.url)} needs a name "
                "(the key its processes share)"
            )
        self._key = name or ""
        self._fixed_key: str | None = None  # set by `for_key`
        self._lease: float | None = float(lease_seconds) if self._ledger.persistent else None
        self._clock = clock or time.time
        self._seen = WindowState()  # last state read: what properties show if the ledger is down

    def __repr__(self) -> str:
        key = self._reading_key(required=False)
        if self.per is not None and key is None:
            return f"Budget(name={self.name!r}, limit_usd={self._limit}, per='tag:{self.per}')"
        state = self._state()
        shown = "" if key is None else f", key={key!r}"
        return (
            f"Budget(name={self.name!r}{shown}, limit_usd={self._limit}, "
            f"spent_usd={state.spent}, reserved_usd={state.reserved})"
        )

    def for_key(self, key: str) -> Budget:
        """
        This per-key budget as seen by one key (``daily.for_key("alice").spent_usd``): a view
        sharing the ledger and settings, pinned to *key* whatever the current tags.
        """
        if self.per is None:
            raise ConfigurationError(f"budget {self.name!r} has no per= rule: it has no keys")
        view = copy.copy(self)
        view._fixed_key = str(key)
        view._seen = WindowState()
        return view

    # -- keys of per-key budgets ---------------------------------------------------------------
    def _call_key(self) -> str | None:
        """This context's key: the pinned one, or the value of the ``per`` tag (or None)."""
        if self.per is None:
            return None
        if self._fixed_key is not None:
            return self._fixed_key
        return current_tags().get(self.per)

    def _reading_key(self, *, required: bool = True) -> str | None:
        key = self._call_key()
        if key is None and self.per is not None and required:
            raise ConfigurationError(
                f"budget {self.name!r} is per tag {self.per!r}: read it inside "
                f"costmeter.tags({self.per}=...) or through .for_key(...)"
            )
        return key

    def _identity(self) -> tuple[object, ...]:
        """What makes two objects the same budget state (see `Reservation.take`)."""
        return (id(self._ledger), self._key, self.per, self._fixed_key, self._window, self._tz)

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
        name = ledger_name(self._key, self._reading_key())
        try:
            state = self._ledger.read(name, window_key(self._window, now, self._tz))
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
        return self._state().remaining(self._limit)

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
        Forget this budget's spend and reservations in every window of its ledger (a per-key
        budget: the current context's key, or the `for_key` view's).

        Calls in flight still settle afterwards, charging what they actually cost.
        """
        self._ledger.reset(ledger_name(self._key, self._reading_key()))
        self._seen = WindowState()

    # -- context management ------------------------------------------------------------------
    def __enter__(self) -> Budget:
        _active.set((*_active.get(), self))
        if self._ledger.persistent:  # its calls count their input before sending: load it now
            from costmeter._tokenizer import preload  # noqa: PLC0415

            preload()
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
        self,
        hold_id: str,
        amount: Decimal,
        model: str | None,
        key: str | None,
        sent: bool,
        probe: bool = False,
    ) -> tuple[str, BudgetExceededError | None]:
        """
        Hold *amount* in the current window; returns the window and the refusal, if any
        (*probe*: see `WindowState.admit`; a probe that does not fit holds nothing).
        """
        now = self._clock()
        window = window_key(self._window, now, self._tz)
        expires = None if self._lease is None else now + self._lease
        force = self.on_exceed == "warn"

        def change(state: WindowState) -> BudgetExceededError | None:
            state.expire(now)
            spent = state.spent
            fits = state.admit(
                hold_id,
                amount,
                self._limit,
                expires,
                force=force,
                model=model or "unknown",
                sent=sent,
                probe=probe,
            )
            self._remember(state)
            if fits:
                return None
            reserved = state.reserved
            if force and not probe:  # held anyway: the refusal reports what was held before it
                with money_math():
                    reserved -= amount
            return self._refusal(amount, model, spent, reserved, key)

        refusal = self._transact(key, window, change, now)
        return window, refusal

    def _transact(
        self, key: str | None, window: str, change: Callable[[WindowState], T], now: float
    ) -> T:
        return self._ledger.transact(
            ledger_name(self._key, key), window, change, self._keep_for(now), now
        )

    def _charge(
        self,
        window: str | None,
        hold_id: str | None,
        actual: Decimal,
        model: str | None,
        key: str | None,
        *,
        once: bool = False,
    ) -> Settled:
        """
        Release the hold and charge *actual* in the window the call was admitted in (its
        worst case was reserved there); a call admitted without a hold (fail-open) is charged
        in the current window. Returns the numbers this very transaction left.

        *once* (an object's hold, see `_hold_as_object`): if any process already charged it,
        charge nothing and say so (`Settled.duplicate`).
        """
        now = self._clock()
        if window is None:
            window = window_key(self._window, now, self._tz)
        once_until = now + RECORD_SECONDS if once else None

        def change(state: WindowState) -> Settled:
            state.expire(now)
            crossed = state.charge(
                hold_id,
                actual,
                model or "unknown",
                self._limit,
                self._thresholds,
                once_until=once_until,
            )
            self._remember(state)
            return Settled(
                self,
                key,
                state.spent,
                state.remaining(self._limit),
                tuple(crossed or ()),
                duplicate=crossed is None,
            )

        return self._transact(key, window, change, now)

    def _object_window(self, created_at: float | None) -> str:
        """
        The window an object billed later (background response, batch) is held and charged
        in: the one its ``created_at`` falls in, which every process polling it agrees on.
        """
        return window_key(
            self._window, self._clock() if created_at is None else created_at, self._tz
        )

    def _hold_as_object(
        self,
        window: str,
        hold_id: str,
        object_window: str,
        object_hold: str,
        amount: Decimal,
        model: str | None,
        key: str | None,
    ) -> None:
        """
        Keep a call's hold under its object's id (`object_hold_id`) in the object's window,
        so whichever process sees the object finish settles it. Across windows the new hold is
        taken before the old one goes (for an instant it is held twice: cautious, never short).
        """
        now = self._clock()
        if object_window == window:
            self._transact(key, window, lambda state: state.rename(hold_id, object_hold), now)
            return

        expires = None if self._lease is None else now + self._lease
        hold = Hold(amount, expires, True, model or "unknown")

        def put(state: WindowState) -> None:
            if object_hold not in state.billed:  # else already charged by another process
                state.holds[object_hold] = hold

        self._transact(key, object_window, put, now)
        self._release(window, hold_id, key)

    def _remember(self, state: WindowState) -> None:
        """Keep what a transaction saw, for when a persistent ledger cannot be read."""
        if self._ledger.persistent:  # a memory ledger is always readable: no copy
            self._seen = state.copy()

    def _last_seen(self, key: str | None) -> Settled:
        """What a settle reports when the ledger could not be reached."""
        seen = self._seen
        return Settled(self, key, seen.spent, seen.remaining(self._limit), (), recorded=False)

    def _keep_for(self, now: float) -> float | None:
        end = window_end(self._window, now, self._tz)
        return None if end is None else max(0.0, end - now)

    def _release(self, window: str, hold_id: str, key: str | None) -> None:
        self._transact(key, window, lambda state: state.release(hold_id), self._clock())

    def _shrink(self, window: str, hold_id: str, key: str | None, amount: Decimal) -> None:
        self._transact(key, window, lambda state: state.shrink(hold_id, amount), self._clock())

    def _mark_sent(self, window: str, hold_id: str, key: str | None) -> None:
        self._transact(key, window, lambda state: state.mark_sent(hold_id), self._clock())

    def _refusal(
        self,
        amount: Decimal,
        model: str | None,
        spent: Decimal,
        reserved: Decimal,
        key: str | None,
    ) -> BudgetExceededError:
        return BudgetExceededError(
            budget_name=self.name,
            limit_usd=self._limit,
            spent_usd=spent,
            reserved_usd=reserved,
            estimated_cost_usd=amount,
            model=model,
            budget_key=key,
        )

    # -- alerts ------------------------------------------------------------------------------
    def _alert_exceeded(self, error: BudgetExceededError, *, refused: bool) -> None:
        self._alert(
            self.on_exceeded,
            "exceeded",
            error.budget_key,
            error.spent_usd,
            estimated_cost_usd=error.estimated_cost_usd,
            model=error.model,
            refused=refused,
        )

    def _alert_threshold(self, settled: Settled, fraction: Decimal, model: str | None) -> None:
        self._alert(
            self.on_threshold,
            "threshold",
            settled.budget_key,
            settled.spent_usd,
            fraction=fraction,
            model=model,
        )

    def _alert(
        self,
        callback: AlertCallback | None,
        kind: Literal["threshold", "exceeded"],
        key: str | None,
        spent: Decimal,
        **details: Any,
    ) -> None:
        if callback is not None:
            alert = BudgetAlert(kind, self.name, key, self._limit, spent, **details)
            deliver(callback, alert)

    def _ledger_warning(self, exc: LedgerError, stage: str, amount: Decimal) -> None:
        """Tell the operator a call went through without this budget's ledger knowing."""
        from costmeter import _events as log  # noqa: PLC0415

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


def _factory(cls: Callable[P, Budget], name: str, doc: str) -> Callable[P, Budget]:
    """
    A function taking exactly *cls*'s arguments (for type checkers and ``help()``), so the
    factory never repeats `Budget.__init__`'s parameter list by hand.
    """

    def make(*args: P.args, **kwargs: P.kwargs) -> Budget:
        return cls(*args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = doc
    make.__module__ = __name__
    make.__signature__ = inspect.signature(cls)  # type: ignore[attr-defined]
    return make


budget = _factory(
    Budget,
    "budget",
    """
    A new `Budget` (same arguments), to be used as ``with costmeter.budget("2.00", name="eval"):``.

    Shared across processes: ``costmeter.budget("50", name="daily",
    ledger="sqlite:///budgets.db", window="1d")``; one cap per user: ``costmeter.budget("1.00",
    name="per-user", per="tag:user", window="day", ledger=...)`` (see `Budget` for every option).
    """,
)


def active_budgets() -> tuple[Budget, ...]:
    """
    The budgets active in the current context, outermost first, each object once (a budget
    entered twice, ``with b: ... with b:``, still holds and charges each call once).
    """
    stack = _active.get()
    if len(stack) < 2:
        return stack
    return tuple({id(b): b for b in reversed(stack)}.values())[::-1]


# Reservations live in their own module; importable from here as before.
from costmeter._reservation import (  # noqa: E402
    Reservation,
    Settled,
    settle_async,
    take_async,
)
