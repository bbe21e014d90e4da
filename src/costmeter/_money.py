"""
Money: one parser for USD amounts and prices, and costmeter's own decimal context.

``Decimal`` arithmetic uses the *calling thread's* context, which belongs to the application: an
app that sets ``getcontext().prec = 2`` or ``ROUND_DOWN`` would otherwise change what a call
costs and what a budget admits. Every money computation in costmeter runs inside `money_math`,
a fixed context (34 significant digits, banker's rounding, traps on invalid operations), so the
same usage always prices to the same amount, whatever the application did to its own context.
"""

from __future__ import annotations

import decimal
import math
from contextlib import AbstractContextManager
from decimal import Decimal, InvalidOperation

from costmeter._errors import ConfigurationError

__all__ = ["CONTEXT", "ZERO", "money_math", "parse_amount"]

#: costmeter's decimal context: IEEE 754 decimal128 precision, ROUND_HALF_EVEN.
CONTEXT = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
ZERO = Decimal(0)


def money_math() -> AbstractContextManager[decimal.Context]:
    """``with money_math(): ...``: run Decimal arithmetic in costmeter's own context."""
    return decimal.localcontext(CONTEXT)


def parse_amount(value: object, what: str) -> Decimal:
    """
    A finite, non-negative amount from ``str``, ``int`` or ``Decimal`` (a ``float`` via its
    ``repr``, so ``0.1`` is exactly ``Decimal("0.1")``). Building it needs no context.

    Raises:
        ConfigurationError: booleans, other types, non-numbers, NaN, infinities and negative
            values, naming *what* and the value.
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
    if amount < 0:  # comparisons need no context
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    return amount
