"""
Where a budget's numbers live: in memory (one process), SQLite (one host), Redis (many hosts).

A budget's state for one window is a `WindowState` (`costmeter._admission`: every decision
about it is made there, once). A backend only has to run ``change(state)`` atomically: load the
state, apply the change, write back what changed, with no other writer in between.

* `MemoryLedger`: a dict under one process-wide lock (what a plain ``budget(...)`` uses).
* `SQLiteLedger`: ``BEGIN IMMEDIATE`` (the write lock is taken *before* reading, so two processes
  can never both read the old state) with a busy timeout; WAL journal; one connection per thread.
* `RedisLedger`: one hash per budget window. Read it, apply the change in Python, then write with
  a Lua script (``register_script``) that applies the new fields only if the hash's ``version``
  is still the one that was read — an atomic compare-and-set; on a conflict, read again and
  retry until the ledger timeout. The money arithmetic stays in Python's `Decimal`; Lua only
  compares a version and copies strings (Lua numbers are doubles).
"""

from __future__ import annotations

import heapq
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from costmeter._admission import WindowState
from costmeter._errors import ConfigurationError

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LEDGER_TIMEOUT",
    "NEEDS_REDIS",
    "Ledger",
    "MemoryLedger",
    "diff_fields",
    "ledger_name",
    "memory_lock",
    "open_ledger",
    "redact",
    "scrub",
    "sqlite_path",
]

T = TypeVar("T")

DEFAULT_LEASE_SECONDS = 600.0
"""How long a call's hold lives in a persistent ledger if its process never settles it."""
DEFAULT_LEDGER_TIMEOUT = 5.0
"""How long to wait for a locked SQLite file or a Redis answer before giving up."""

_ZERO = Decimal(0)
# One lock for every in-memory ledger, so a call can reserve across nested in-memory budgets
# atomically without lock-ordering rules. Re-entrant: `Reservation` holds it around its loop.
# Replaced in a forked child (see `_reinit_after_fork`): always look it up as
# ``_ledger.memory_lock`` at the time of use, never bind it at import.
memory_lock = threading.RLock()


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


def scrub(text: str, url: str) -> str:
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


def diff_fields(before: dict[str, str], after: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """What a change did to a stored state: the fields to write, the fields to delete."""
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    removed = [k for k in before if k not in after]
    return changed, removed


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


# -- opening ledgers by URL ----------------------------------------------------------------------

NEEDS_REDIS = (
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
                from costmeter._ledger_sqlite import SQLiteLedger  # noqa: PLC0415

                ledger = SQLiteLedger(url, path, float(timeout))
            else:
                try:
                    from costmeter._ledger_redis import RedisLedger  # noqa: PLC0415

                    ledger = RedisLedger(url, float(timeout))
                except ImportError:
                    raise ConfigurationError(NEEDS_REDIS.format(redact(url))) from None
                except ConfigurationError:
                    raise
                except ValueError as exc:
                    detail = scrub(str(exc), url)
                    raise ConfigurationError(f"bad Redis URL {redact(url)!r}: {detail}") from None
            _open[key] = ledger
        return ledger
