"""
A SQLite budget ledger: one file shared by the processes of one host.

``BEGIN IMMEDIATE`` takes the write lock *before* reading, so two processes can never both read
the old state; busy timeout; WAL journal; one connection per thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

from costmeter._admission import WindowState
from costmeter._errors import LedgerError
from costmeter._ledger import Ledger, diff_fields

__all__ = ["SQLiteLedger"]

T = TypeVar("T")

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
                self._set_up(conn)
        except sqlite3.Error:
            conn.close()
            raise
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """
        WAL journal and the table, on a new connection. Switching a fresh file to WAL needs a
        lock SQLite does not wait for (no busy handler): when many threads or processes open a
        new ledger at once, all but one get "database is locked" at once. So the switch is
        retried until the ledger timeout, and skipped when the file is already in WAL mode (a
        read: no lock), as it stays once set.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.002 + secrets.randbelow(8) / 1000)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SQLITE_SCHEMA)

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
            changed, removed = diff_fields(before, state.to_fields())
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
