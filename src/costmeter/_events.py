"""
Building and emitting costmeter's structured events.

One canonical ``costmeter.call`` line per billed response (structlog's "canonical log line"),
with flat, stable keys documented in the README. Money is computed in `Decimal` and rendered as
a JSON number: a float holding the Decimal's value, which is exact for every amount with at most
15 significant digits (all per-call costs) — ``json.loads(line, parse_float=Decimal)`` recovers
the Decimal. That keeps events serialisable by *any* JSON renderer the application uses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["CALL", "emit", "usd"]

CALL = "costmeter.call"
BUDGET_EXCEEDED = "costmeter.budget.exceeded"
BUDGET_THRESHOLD = "costmeter.budget.threshold"
INTERNAL_ERROR = "costmeter.internal_error"
WARNING = "costmeter.warning"


def usd(amount: Decimal | None) -> float | None:
    """Render money for an event: a JSON number (see the module docstring), ``None`` stays null."""
    return None if amount is None else float(amount)


def emit(event: str, fields: dict[str, Any]) -> None:
    """Send one event through the application's structlog pipeline and costmeter's own sinks."""
    from costmeter._logging import emit as _emit  # noqa: PLC0415  (cycle-free, cheap after 1st)

    _emit(event, fields)
