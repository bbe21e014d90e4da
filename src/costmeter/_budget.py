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

The active budgets live in a ``ContextVar``: asyncio tasks inherit them; threads started by a
pool do not (run the work in ``contextvars.copy_context().run(...)``, or enter a shared
`Budget` object in each thread: a `Budget` is safe to use from many threads and tasks at once).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Literal

from costmeter._errors import BudgetExceededError, ConfigurationError

__all__ = ["Budget", "Reservation", "active_budgets", "budget", "parse_usd"]

_ZERO = Decimal(0)
# One lock for all in-memory budgets: reserve/settle are a few Decimal operations, and a single
# lock makes reserving across nested budgets atomic without lock-ordering rules.
_lock = threading.Lock()
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
    from many threads or tasks to share a single cap (e.g. a per-process daily cap).

    Args:
        limit_usd: The cap (str, int, Decimal; floats are converted via their repr).
        name: Shown in events and errors.
        on_exceed: ``"raise"`` refuses the call with `BudgetExceededError` before sending it;
            ``"warn"`` logs ``costmeter.budget.exceeded`` and lets it through.
        warn_at: Fractions of the limit at which ``costmeter.budget.threshold`` is emitted, once
            each, when actual spend crosses them.
        allow_unpriced: By default a call to a model no price source knows is refused inside a
            budget (the cap could not be enforced). ``True`` lets such calls through at $0.
    """

    def __init__(
        self,
        limit_usd: str | int | float | Decimal,
        *,
        name: str | None = None,
        on_exceed: Literal["raise", "warn"] = "raise",
        warn_at: Iterable[float | Decimal | str] = (0.8,),
        allow_unpriced: bool = False,
    ) -> None:
        self._limit = parse_usd(limit_usd)
        if on_exceed not in ("raise", "warn"):
            raise ConfigurationError(f"on_exceed must be 'raise' or 'warn', got {on_exceed!r}")
        fractions = sorted(parse_usd(f, "warn_at fraction") for f in warn_at)
        if any(f > 1 for f in fractions):
            raise ConfigurationError(f"warn_at fractions must be within [0, 1], got {warn_at!r}")
        self.name = name
        self.on_exceed = on_exceed
        self.allow_unpriced = allow_unpriced
        self._thresholds = tuple(fractions)
        self._spent = _ZERO
        self._reserved = _ZERO
        self._calls = 0
        self._refused = 0
        self._crossed = 0
        self._by_model: dict[str, Decimal] = {}

    def __repr__(self) -> str:
        return (
            f"Budget(name={self.name!r}, limit_usd={self._limit}, spent_usd={self._spent}, "
            f"reserved_usd={self._reserved})"
        )

    # -- read-only state ---------------------------------------------------------------------
    @property
    def limit_usd(self) -> Decimal:
        """The cap."""
        return self._limit

    @property
    def spent_usd(self) -> Decimal:
        """Actual cost charged so far (estimates for streams abandoned before usage arrived)."""
        return self._spent

    @property
    def reserved_usd(self) -> Decimal:
        """Worst-case cost held by calls in flight."""
        return self._reserved

    @property
    def remaining_usd(self) -> Decimal:
        """What a new call may still reserve: ``limit - spent - reserved`` (never below 0)."""
        return max(_ZERO, self._limit - self._spent - self._reserved)

    @property
    def calls(self) -> int:
        """Calls settled against this budget."""
        return self._calls

    @property
    def refused(self) -> int:
        """Calls refused before sending."""
        return self._refused

    @property
    def by_model(self) -> dict[str, Decimal]:
        """Spend per (requested) model."""
        with _lock:
            return dict(self._by_model)

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

    # -- accounting (called by the meter, under _lock) ---------------------------------------
    def _fits(self, amount: Decimal) -> bool:
        return self._spent + self._reserved + amount <= self._limit

    def _refusal(self, amount: Decimal, model: str | None) -> BudgetExceededError:
        return BudgetExceededError(
            budget_name=self.name,
            limit_usd=self._limit,
            spent_usd=self._spent,
            reserved_usd=self._reserved,
            estimated_cost_usd=amount,
            model=model,
        )

    def _newly_crossed(self) -> list[Decimal]:
        crossed = []
        while self._crossed < len(self._thresholds) and (
            self._spent >= self._thresholds[self._crossed] * self._limit
        ):
            crossed.append(self._thresholds[self._crossed])
            self._crossed += 1
        return crossed


def budget(
    limit_usd: str | int | float | Decimal,
    *,
    name: str | None = None,
    on_exceed: Literal["raise", "warn"] = "raise",
    warn_at: Iterable[float | Decimal | str] = (0.8,),
    allow_unpriced: bool = False,
) -> Budget:
    """A new `Budget`, to be used as ``with costmeter.budget("2.00", name="eval"):``."""
    return Budget(
        limit_usd, name=name, on_exceed=on_exceed, warn_at=warn_at, allow_unpriced=allow_unpriced
    )


def active_budgets() -> tuple[Budget, ...]:
    """The budgets active in the current context, outermost first."""
    return _active.get()


@dataclass
class Reservation:
    """What one call holds in each budget; settled exactly once."""

    budgets: tuple[Budget, ...]
    amount: Decimal
    model: str | None
    warned: list[BudgetExceededError] = field(default_factory=list)
    settled: bool = False

    @classmethod
    def take(cls, budgets: Sequence[Budget], amount: Decimal, model: str | None) -> Reservation:
        """
        Reserve *amount* in every budget atomically, or refuse.

        Raises:
            BudgetExceededError: a ``raise``-mode budget cannot cover *amount*; nothing is
                reserved anywhere.
        """
        warned = []
        with _lock:
            for b in budgets:
                if not b._fits(amount):
                    error = b._refusal(amount, model)
                    if b.on_exceed == "raise":
                        b._refused += 1
                        raise error
                    warned.append(error)
            for b in budgets:
                b._reserved += amount
        return cls(tuple(budgets), amount, model, warned)

    def settle(self, actual: Decimal) -> list[tuple[Budget, Decimal]]:
        """Release the reservation and charge *actual*; returns newly crossed thresholds."""
        crossed: list[tuple[Budget, Decimal]] = []
        with _lock:
            if self.settled:
                return crossed
            self.settled = True
            key = self.model or "unknown"
            for b in self.budgets:
                b._reserved -= self.amount
                b._spent += actual
                b._calls += 1
                b._by_model[key] = b._by_model.get(key, _ZERO) + actual
                crossed.extend((b, fraction) for fraction in b._newly_crossed())
        return crossed
