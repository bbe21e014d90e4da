"""
Budget windows: calendar periods in a time zone (UTC unless configured).

Windows are calendar periods in a time zone (UTC unless configured): the window's start, as an
ISO date-time with its UTC offset, is part of the ledger key (``day:2025-06-01T00:00+00:00``), so
a new period starts from zero and the old one stays readable; ``total`` never expires.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

from costmeter._errors import ConfigurationError

__all__ = ["WINDOW_KEY", "parse_window", "window_end", "window_key"]

_WINDOW_KINDS = {
    "hour": "hour",
    "1h": "hour",
    "day": "day",
    "1d": "day",
    "month": "month",
    "1mo": "month",
}
WINDOW_KEY = re.compile(r"total|(hour|day|month):\d{4}-\d\d-\d\dT\d\d:\d\d[+-]\d\d:\d\d", re.ASCII)
"""What a window key looks like (a ledger lists only these as windows)."""


def parse_window(window: str | None) -> str | None:
    """``hour``/``1h``, ``day``/``1d``, ``month``/``1mo``, or ``None`` (never expires)."""
    if window is None:
        return None
    kind = _WINDOW_KINDS.get(window.strip().lower()) if isinstance(window, str) else None
    if kind is None:
        raise ConfigurationError(
            f"window must be 'hour' ('1h'), 'day' ('1d'), 'month' or None, got {window!r}"
        )
    return kind


def _window_start(kind: str, now: float, tz: tzinfo) -> datetime:
    local = datetime.fromtimestamp(now, tz)
    if kind == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    elif kind == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # A zoneinfo offset follows the wall time; ``fold`` only matters inside a repeated hour,
    # which an hour window keeps (two distinct windows) and a day or month start never is in.
    return start if kind == "hour" else start.replace(fold=0)


def window_key(kind: str | None, now: float, tz: tzinfo = timezone.utc) -> str:
    """
    The ledger key of the window containing *now* (a Unix time).

    The window's local start with its UTC offset, so the key is unique per real period even
    across time zones and the repeated hour of a DST change.
    """
    if kind is None:
        return "total"
    start = _window_start(kind, now, tz)
    return f"{kind}:{start.isoformat(timespec='minutes')}"


def window_end(kind: str | None, now: float, tz: tzinfo = timezone.utc) -> float | None:
    """The Unix time the window containing *now* ends; ``None`` for a non-expiring total."""
    if kind is None:
        return None
    start = _window_start(kind, now, tz)
    if kind == "hour":
        # Add an hour in UTC: local wall time may repeat or skip an hour.
        return start.timestamp() + 3600
    if kind == "day":
        nxt = (start.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
    else:
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        nxt = start.replace(tzinfo=None, year=year, month=month).replace(tzinfo=tz)
    return nxt.timestamp()
