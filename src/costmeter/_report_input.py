"""
Reading log files for ``costmeter report`` and ``reconcile``: the two errors about what the user
gave (`UsageError`, exit 2; `Unreadable`, exit 3), the progress line, and the lines of a plain
file, a gzip file (detected by content) or stdin, in constant memory; `event_time` reads an
event's timestamp.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import IO, Any

__all__ = [
    "GZIP_MAGIC",
    "Progress",
    "Unreadable",
    "UsageError",
    "event_time",
    "read_chunks",
]

GZIP_MAGIC = b"\x1f\x8b"


class UsageError(Exception):
    """A problem with what the user gave us (exit 2)."""


class Unreadable(Exception):
    """A file could not be read (exit 3)."""

    def __init__(self, name: str, exc: BaseException | str) -> None:
        detail = exc if isinstance(exc, str) else _detail(exc)
        self.name = name
        self.detail = detail
        super().__init__(f"cannot read {name}: {detail}")

    def __reduce__(self) -> tuple[type[Unreadable], tuple[str, str]]:
        return (Unreadable, (self.name, self.detail))  # raised again in the parent process


def _detail(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- reading -------------------------------------------------------------------------------------


class Progress:
    """A one-line progress indicator on stderr, only for a TTY and only once reading takes >1 s."""

    def __init__(self, name: str, size: int | None, position: Callable[[], int] | None) -> None:
        self.enabled = sys.stderr.isatty()
        self.name = name
        self.size = size
        self.position = position
        self.started = time.monotonic()
        self.next_at = self.started + 1.0
        self.shown = False

    def tick(self, lines: int) -> None:
        """Show how far reading got: the share of the file when known, and *lines* so far."""
        if not self._due():
            return
        done = ""
        if self.size and self.position is not None:
            try:
                done = f" {min(100.0, 100.0 * self.position() / self.size):5.1f}%"
            except (OSError, ValueError):
                done = ""
        self._show(f"{done} ({lines:,} lines)")

    def tick_percent(self, percent: float) -> None:
        """Show *percent* done (an engine that cannot count lines as it goes: DuckDB)."""
        if self._due():
            self._show(f" {min(100.0, percent):5.1f}%")

    def _due(self) -> bool:
        """Whether to draw now: on a TTY, after 1 s, then every 0.5 s."""
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return False
        self.next_at = now + 0.5
        return True

    def _show(self, text: str) -> None:
        sys.stderr.write(f"\rcostmeter: reading {self.name}{text}")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


class _RawReader(io.RawIOBase):
    """
    Any binary file object as a raw stream, so `io.BufferedReader` can give it ``peek``; with
    *limit*, only that many bytes of it (one piece of a file read in parallel).
    """

    def __init__(self, source: IO[bytes], limit: int | None = None) -> None:
        self._source = source
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._source.read(wanted)
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


#: Bytes of lines read at a time (`read_chunks`): a list per chunk costs less than a generator
#: step per line, and memory stays constant.
_CHUNK = 1 << 20


def _ticking(stream: IO[bytes] | gzip.GzipFile, progress: Progress) -> Iterator[list[bytes]]:
    """The lines of *stream*, in lists of about `_CHUNK` bytes, updating *progress* after each."""
    count = 0
    try:
        while chunk := stream.readlines(_CHUNK):
            count += len(chunk)
            progress.tick(count)
            yield chunk
    finally:
        progress.done()


def _read_piece(name: str, start: int, end: int, show_progress: bool) -> Iterator[list[bytes]]:
    """The lines of bytes [start, end) of a plain file (both ends at line boundaries), chunked."""
    try:
        with open(name, "rb") as raw:
            raw.seek(start)
            stream = io.BufferedReader(_RawReader(raw, end - start), 1 << 16)
            progress = Progress(name, end - start, lambda: raw.tell() - start)
            progress.enabled = progress.enabled and show_progress
            yield from _ticking(stream, progress)
    except OSError as exc:
        raise Unreadable(name, exc) from None


def read_chunks(name: str) -> Iterator[list[bytes]]:
    """
    The lines of a file, ``-`` (stdin) or gzip (detected by content), in lists of about 1 MB of
    lines: read in constant memory.
    """
    if name == "-":
        stdin: Any = sys.stdin
        raw: IO[bytes] = getattr(stdin, "buffer", None) or io.BytesIO(stdin.read().encode())
        owned = False
    else:
        try:
            raw = open(name, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            raise Unreadable(name, exc) from None
        owned = True
    try:
        size: int | None = None
        if owned:
            try:
                size = os.fstat(raw.fileno()).st_size
            except OSError:
                size = None
        if not hasattr(raw, "peek"):  # e.g. a BytesIO standing in for stdin
            raw = io.BufferedReader(_RawReader(raw))
        try:
            head = raw.peek(2)[:2]
        except OSError as exc:
            raise Unreadable(name, exc) from None
        stream: IO[bytes] | gzip.GzipFile = raw
        if head == GZIP_MAGIC or (not head and name.endswith(".gz")):
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        try:
            yield from _ticking(stream, Progress(name, size, raw.tell if owned else None))
        except (OSError, EOFError, zlib.error) as exc:
            raise Unreadable(name, exc) from None
    finally:
        if owned:
            raw.close()


def event_time(value: object) -> datetime | None:
    """An event's ``timestamp`` (ISO 8601 text, naive means UTC, or Unix seconds) as a datetime."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            if not value.endswith(("Z", "z")):  # Python 3.10's fromisoformat lacks "Z"
                return None
            try:
                when = datetime.fromisoformat(value[:-1] + "+00:00")
            except ValueError:
                return None
        return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None
