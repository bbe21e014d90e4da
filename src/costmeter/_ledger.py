"""
Where a budget's numbers live: in memory (one process), SQLite (one host), Redis (many hosts).

A budget's state for one window — spend, call and refusal counts, thresholds already announced,
spend per model, and the *holds* (reservations) of calls in flight — is a `WindowState`. Every
decision about it (does the worst case fit? which thresholds did this charge cross? which holds
have outlived their lease?) is a method of `WindowState`, written once. A backend only has to run
``change(state)`` atomically: load the state, apply the change, write back what changed, with no
other writer in between.

* `MemoryLedger`: a dict under one process-wide lock (what a plain ``budget(...)`` uses).
* `SQLiteLedger`: ``BEGIN IMMEDIATE`` (the write lock is taken *before* reading, so two processes
  can never both read the old state) with a busy timeout; WAL journal; one connection per thread.
* `RedisLedger`: one hash per budget window. Read it, apply the change in Python, then write with
  a Lua script (``register_script``) that applies the new fields only if the hash's ``version``
  is still the one that was read — an atomic compare-and-set; on a conflict, read again and
  retry until the ledger timeout. The money arithmetic stays in Python's `Decimal`; Lua only
  compares a version and copies strings (Lua numbers are doubles).

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

Windows are calendar periods in a time zone (UTC unless configured): the window's start, as an
ISO date-time with its UTC offset, is part of the ledger key (``day:2025-06-01T00:00+00:00``), so
a new period starts from zero and the old one stays readable; ``total`` never expires.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import re
import secrets
import sqlite3
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from costmeter._errors import ConfigurationError, LedgerError
from costmeter._money import money_math

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LEDGER_TIMEOUT",
    "RECORD_SECONDS",
    "Hold",
    "Ledger",
    "MemoryLedger",
    "RedisLedger",
    "SQLiteLedger",
    "WindowState",
    "ledger_name",
    "memory_lock",
    "new_hold_id",
    "object_hold_id",
    "open_ledger",
    "parse_window",
    "redact",
    "sqlite_path",
    "window_end",
    "window_key",
]

T = TypeVar("T")

DEFAULT_LEASE_SECONDS = 600.0
"""How long a call's hold lives in a persistent ledger if its process never settles it."""
DEFAULT_LEDGER_TIMEOUT = 5.0
"""How long to wait for a locked SQLite file or a Redis answer before giving up."""

_ZERO = Decimal(0)
# Redis keeps a finished window this long after it ends (for `costmeter budget show`).
_KEEP_PAST_WINDOWS_S = 35 * 24 * 3600
_WINDOW_KINDS = {
    "hour": "hour",
    "1h": "hour",
    "day": "day",
    "1d": "day",
    "month": "month",
    "1mo": "month",
}
_WINDOW_KEY = re.compile(r"total|(hour|day|month):\d{4}-\d\d-\d\dT\d\d:\d\d[+-]\d\d:\d\d", re.ASCII)
# How long an expired *sent* hold is remembered, so a late settle corrects its charge; and how
# long an object's charge is, so another process's poll of it charges nothing.
RECORD_SECONDS = 24 * 3600.0
# One lock for every in-memory ledger, so a call can reserve across nested in-memory budgets
# atomically without lock-ordering rules. Re-entrant: `Reservation` holds it around its loop.
# Replaced in a forked child (see `_reinit_after_fork`): always look it up as
# ``_ledger.memory_lock`` at the time of use, never bind it at import.
memory_lock = threading.RLock()


# -- windows -------------------------------------------------------------------------------------


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


# -- the state of one budget window, and every decision about it ---------------------------------


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


def new_hold_id() -> str:
    """A hold id, unique across processes and hosts (the pid helps when reading a ledger)."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


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
    ) -> bool:
        """
        Hold *amount* if ``spent + reserved + amount <= limit``; returns whether it fit.

        *force* (a ``warn``-mode budget) holds it even when it does not fit; otherwise a call
        that does not fit is counted as refused and nothing is held.
        """
        self.limit = limit
        with money_math():
            fits = self.spent + self._reserved() + amount <= limit
        if fits or force:
            self.holds[hold_id] = Hold(amount, expires, sent, model)
        else:
            self.refused += 1
        return fits

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


# -- backends ------------------------------------------------------------------------------------


_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|auth|key", re.I)


def redact(url: str) -> str:
    """
    *url* without its secrets, for messages, events and reprs: the password of
    ``scheme://:pw@host`` and ``scheme://user:pw@host``, and the value of every query parameter
    named like a secret (``?password=``, ``?token=``...). A URL that does not parse is shown as
    its scheme only (it might hold a password in a form we cannot find).
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if "@" not in netloc and not any(_SECRET_PARAMS.search(k) for k, _ in pairs):
            return url
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
            # ``redis://pw@host``: a lone userinfo may be read as the password.
            netloc = f"{user}:***@{host}"
        query = urlencode(
            [(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*/:"
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))
    except ValueError:
        scheme = url.split(":", 1)[0] if ":" in url else "ledger"
        return f"{scheme}://***"


def _scrub(text: str, url: str) -> str:
    """*text* (an error message) with any secret of *url* masked."""
    try:
        parts = urlsplit(url)
        secrets_ = [parts.password or "", parts.username or ""] if "@" in parts.netloc else []
        secrets_ += [v for k, v in parse_qsl(parts.query) if _SECRET_PARAMS.search(k)]
    except ValueError:
        return text.replace(url, redact(url))
    text = text.replace(url, redact(url))
    for secret in secrets_:
        if len(secret) >= 3:
            text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def ledger_name(name: str, key: str | None = None) -> str:
    """
    The name a budget's state is stored under: its name, or for a per-key budget (``per=``)
    ``name[key]``, one state per key (``costmeter budget show NAME --key KEY`` reads it).
    """
    return name if key is None else f"{name}[{key}]"


class Ledger(ABC):
    """Atomic storage of `WindowState` per (budget name, window key)."""

    url: str = "memory://"
    persistent: bool = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact(self.url)}>"

    @abstractmethod
    def transact(
        self,
        budget: str,
        window: str,
        change: Callable[[WindowState], T],
        keep_for: float | None = None,
        now: float | None = None,
    ) -> T:
        """
        Apply *change* to the state atomically and return its result.

        *keep_for*: seconds until the window ends (``None``: never); a backend that expires
        data keeps the window at least that long (Redis: plus 35 days, for ``budget show``).
        *now*: the budget's clock (the memory ledger drops windows that ended before it).

        Raises:
            LedgerError: the ledger could not be reached, or stayed locked beyond its timeout.
        """

    @abstractmethod
    def read(self, budget: str, window: str) -> WindowState:
        """A copy of the state (empty if nothing was recorded)."""

    @abstractmethod
    def windows(self, budget: str) -> list[str]:
        """The window keys recorded for *budget*, sorted."""

    @abstractmethod
    def reset(self, budget: str, window: str | None = None) -> int:
        """Forget *budget* (one window, or all); returns how many windows were dropped."""


class MemoryLedger(Ledger):
    """
    One process's budget, in a dict: gone when the process exits.

    A window that has ended is dropped at the next operation after its end (a heap of end
    times, so each costs O(log n)): a per-key budget with a window holds only the current
    window's keys, however many keys came and went. Without a window (``total``) every key
    is kept: forgetting one would forget its spend.
    """

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], WindowState] = {}
        self._ends: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        """How many (budget, window) states are kept."""
        return len(self._states)

    def transact(
        self,
        budget: str,
        window: str,
        change: Callable[[WindowState], T],
        keep_for: float | None = None,
        now: float | None = None,
    ) -> T:
        with memory_lock:
            if now is not None:
                while self._ends and self._ends[0][0] <= now:
                    self._states.pop(heapq.heappop(self._ends)[1], None)
            state = self._states.get((budget, window))
            if state is None:
                state = self._states[(budget, window)] = WindowState()
                if keep_for is not None and now is not None:
                    heapq.heappush(self._ends, (now + keep_for, (budget, window)))
            return change(state)

    def read(self, budget: str, window: str) -> WindowState:
        with memory_lock:
            state = self._states.get((budget, window))
            return WindowState() if state is None else state.copy()

    def windows(self, budget: str) -> list[str]:
        with memory_lock:
            return sorted(w for b, w in self._states if b == budget)

    def reset(self, budget: str, window: str | None = None) -> int:
        with memory_lock:
            keys = [k for k in self._states if k[0] == budget and window in (None, k[1])]
            for key in keys:
                del self._states[key]
            return len(keys)


def _diff(before: dict[str, str], after: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    removed = [k for k in before if k not in after]
    return changed, removed


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS costmeter_ledger (
    budget TEXT NOT NULL,
    window TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (budget, window, field)
) WITHOUT ROWID
"""


class SQLiteLedger(Ledger):
    """
    A SQLite file shared by every process on one host.

    Each operation is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock is taken before the
    state is read, so concurrent reserve/settle calls serialise across threads and processes.
    A writer waits up to *timeout* seconds for the lock (the busy timeout), then `LedgerError`.
    WAL journal with ``synchronous=NORMAL``: a committed charge survives the process being
    killed; a power loss may lose the last moments.
    """

    persistent = True

    def __init__(self, url: str, path: str, timeout: float, *, read_only: bool = False) -> None:
        self.url = url
        self.path = path
        self.timeout = timeout
        self.read_only = read_only
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        if self.read_only:  # inspecting (``budget show``) must not create the file
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            conn = sqlite3.connect(uri, timeout=self.timeout, isolation_level=None, uri=True)
        else:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            if not self.read_only:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SQLITE_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _fail(self, exc: BaseException, what: str) -> LedgerError:
        detail = str(exc) or type(exc).__name__
        if self.read_only and "no such table" in detail:
            detail = "no costmeter ledger in this file"
        if "locked" in detail or "busy" in detail:
            detail += f" (waited {self.timeout:g} s)"
        return LedgerError(f"budget ledger {self.url} unavailable ({what}): {detail}")

    @staticmethod
    def _load(conn: sqlite3.Connection, budget: str, window: str) -> dict[str, str]:
        rows = conn.execute(
            "SELECT field, value FROM costmeter_ledger WHERE budget = ? AND window = ?",
            (budget, window),
        )
        return {str(name): str(value) for name, value in rows}

    def transact(
        self,
        budget: str,
        window: str,
        change: Callable[[WindowState], T],
        keep_for: float | None = None,
        now: float | None = None,
    ) -> T:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fail(exc, "lock") from exc
        try:
            before = self._load(conn, budget, window)
            state = WindowState.from_fields(before)
            result = change(state)
            changed, removed = _diff(before, state.to_fields())
            conn.executemany(
                "INSERT OR REPLACE INTO costmeter_ledger (budget, window, field, value) "
                "VALUES (?, ?, ?, ?)",
                [(budget, window, k, v) for k, v in changed.items()],
            )
            conn.executemany(
                "DELETE FROM costmeter_ledger WHERE budget = ? AND window = ? AND field = ?",
                [(budget, window, k) for k in removed],
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._fail(exc, "write") from exc
            raise
        return result

    def read(self, budget: str, window: str) -> WindowState:
        try:
            return WindowState.from_fields(self._load(self._connection(), budget, window))
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc

    def windows(self, budget: str) -> list[str]:
        try:
            rows = self._connection().execute(
                "SELECT DISTINCT window FROM costmeter_ledger WHERE budget = ? ORDER BY window",
                (budget,),
            )
            return [str(row[0]) for row in rows]
        except sqlite3.Error as exc:
            raise self._fail(exc, "read") from exc

    def reset(self, budget: str, window: str | None = None) -> int:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if window is None:
                    count = len(self.windows(budget))
                    conn.execute("DELETE FROM costmeter_ledger WHERE budget = ?", (budget,))
                else:
                    count = int(bool(self._load(conn, budget, window)))
                    conn.execute(
                        "DELETE FROM costmeter_ledger WHERE budget = ? AND window = ?",
                        (budget, window),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(exc, "reset") from exc
        return count


# Compare-and-set of one budget window's hash. KEYS[1]: the hash. ARGV: the version the caller
# read, the seconds the hash must live on (0: forever), the number of fields to set, then the
# field/value pairs to set, then the fields to delete. Returns 1 if applied, 0 on a conflict.
_CAS_SCRIPT = """
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] then
  return 0
end
local nset = tonumber(ARGV[3])
local i = 4
for _ = 1, nset do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
"""


class RedisLedger(Ledger):
    """
    A Redis database shared by processes on many hosts: one hash per budget window.

    Reads are plain ``HGETALL``; every write goes through one Lua compare-and-set script, so a
    change computed from a state another process has since changed is never applied (it is
    recomputed). Finished windows expire 35 days after they end.
    """

    persistent = True

    def __init__(self, url: str, timeout: float) -> None:
        try:
            import redis  # noqa: PLC0415  (only needed by Redis-backed budgets)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(_NEEDS_REDIS.format(redact(url))) from exc
        from redis.backoff import ExponentialBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        self.url = url
        self.timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # One quick retry of a dropped connection (e.g. after a Redis restart), then give up:
        # a caller waits at most about twice the timeout, not redis-py's default backoff.
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            decode_responses=True,
        )
        self._cas: Any = self._client.register_script(_CAS_SCRIPT)

    @staticmethod
    def _key(budget: str, window: str) -> str:
        return f"costmeter:budget:{budget}:{window}"

    def _fail(self, exc: BaseException, what: str) -> LedgerError:
        detail = _scrub(str(exc) or type(exc).__name__, self.url)
        return LedgerError(f"budget ledger {redact(self.url)} unavailable ({what}): {detail}")

    def transact(
        self,
        budget: str,
        window: str,
        change: Callable[[WindowState], T],
        keep_for: float | None = None,
        now: float | None = None,
    ) -> T:
        key = self._key(budget, window)
        # Relative to the caller's clock (not Redis's): the window ends *keep_for* s from now.
        ttl = 0 if keep_for is None else max(1, int(keep_for) + 1 + _KEEP_PAST_WINDOWS_S)
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                before: dict[str, str] = self._client.hgetall(key)
            except self._errors as exc:
                raise self._fail(exc, "read") from exc
            version = before.pop("version", "0")
            state = WindowState.from_fields(before)
            result = change(state)
            changed, removed = _diff(before, state.to_fields())
            if not changed and not removed:
                return result
            args: list[str | int] = [version, ttl, len(changed)]
            for name, value in changed.items():
                args += [name, value]
            args += removed
            try:
                applied = self._cas(keys=[key], args=args)
            except self._errors as exc:
                raise self._fail(exc, "write") from exc
            if applied == 1:
                return result
            attempt += 1
            if time.monotonic() > deadline:
                raise LedgerError(
                    f"budget ledger {redact(self.url)} unavailable (write): still contended "
                    f"after {attempt} attempts in {self.timeout:g} s"
                )
            # Back off a little (with jitter) so contending processes stop colliding.
            time.sleep(min(0.02, 0.0005 * attempt) * (0.5 + secrets.randbelow(100) / 100))

    def read(self, budget: str, window: str) -> WindowState:
        try:
            fields: dict[str, str] = self._client.hgetall(self._key(budget, window))
        except self._errors as exc:
            raise self._fail(exc, "read") from exc
        fields.pop("version", None)
        return WindowState.from_fields(fields)

    def windows(self, budget: str) -> list[str]:
        prefix = self._key(budget, "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        try:
            keys = list(self._client.scan_iter(match=pattern, count=500))
        except self._errors as exc:
            raise self._fail(exc, "read") from exc
        # A budget named "a:day" shares the prefix of "a": keep only well-formed window keys.
        found = (str(k)[len(prefix) :] for k in keys)
        return sorted(w for w in found if _WINDOW_KEY.fullmatch(w))

    def reset(self, budget: str, window: str | None = None) -> int:
        names = self.windows(budget) if window is None else [window]
        if not names:
            return 0
        try:
            return int(self._client.delete(*(self._key(budget, w) for w in names)))
        except self._errors as exc:
            raise self._fail(exc, "reset") from exc


# -- opening ledgers by URL ----------------------------------------------------------------------

_NEEDS_REDIS = (
    "the ledger {!r} needs the redis package, which is not installed: "
    "install costmeter[redis] (pip install 'costmeter[redis]')"
)
_open_lock = threading.Lock()
_open: dict[tuple[str, float, int], Ledger] = {}


def _reinit_after_fork() -> None:
    """
    In a forked child, replace the module's locks: another thread of the parent may have held
    one at the instant of the fork, and that thread does not exist in the child to release it.
    """
    global memory_lock, _open_lock  # noqa: PLW0603
    memory_lock = threading.RLock()
    _open_lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_after_fork)


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` ledger URL."""
    if not url.startswith("sqlite:///"):
        raise ConfigurationError(
            f"a SQLite ledger URL is sqlite:///relative/path.db or sqlite:////absolute/path.db, "
            f"got {url!r}"
        )
    path = unquote(url[len("sqlite:///") :].split("?", 1)[0])
    if not path or path == ":memory:":
        raise ConfigurationError(
            f"a SQLite ledger needs a file shared by the processes, got {url!r} "
            "(for a per-process budget, leave ledger unset)"
        )
    return path


def open_ledger(url: str | Ledger | None, timeout: float = DEFAULT_LEDGER_TIMEOUT) -> Ledger:
    """
    The ledger for *url*: ``None`` or ``memory://`` (a new in-memory ledger),
    ``sqlite:///path.db``, ``redis://host:port/db`` (also ``rediss://``, ``unix://``), or a
    `Ledger` object. SQLite and Redis ledgers are shared per URL within a process.

    Raises:
        ConfigurationError: an unknown scheme, a bad path or timeout, or the ``redis`` package
            missing for a Redis URL.
    """
    if isinstance(url, Ledger):
        return url
    if url is None or url == "memory://":
        return MemoryLedger()
    if not isinstance(url, str):
        raise ConfigurationError(f"ledger must be a URL string, got {url!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigurationError(f"ledger_timeout must be a positive number, got {timeout!r}")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("sqlite", "redis", "rediss", "unix"):
        raise ConfigurationError(
            f"unknown ledger {redact(url)!r}: use sqlite:///path.db or redis://host:6379/0"
        )
    path = sqlite_path(url) if scheme == "sqlite" else None
    key = (url, float(timeout), os.getpid())
    with _open_lock:
        ledger = _open.get(key)
        if ledger is None:
            if path is not None:
                ledger = SQLiteLedger(url, path, float(timeout))
            else:
                try:
                    ledger = RedisLedger(url, float(timeout))
                except ImportError:
                    raise ConfigurationError(_NEEDS_REDIS.format(redact(url))) from None
                except ConfigurationError:
                    raise
                except ValueError as exc:
                    detail = _scrub(str(exc), url)
                    raise ConfigurationError(f"bad Redis URL {redact(url)!r}: {detail}") from None
            _open[key] = ledger
        return ledger
