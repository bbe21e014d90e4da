"""
Reading costmeter's JSON-lines logs back and adding up the money: the engine behind
``costmeter report`` (and the demo's report, and ``costmeter reconcile``'s logged side).

Streams every input line by line (plain, gzip, or ``-`` for stdin), so a multi-GB log is read in
constant memory; skips non-costmeter and malformed lines and counts them; sums money in
`Decimal` (numbers in the log are parsed as Decimal, never as binary floats), inside
`costmeter._money.money_math`.

Two decoders give the same report: msgspec's typed decoding (the optional ``fast`` extra, ~10x
faster: it skips the keys a report does not read without building them) and the standard
library's ``json`` (always there). A line msgspec rejects (a wrong type, torn JSON, a text line)
is decoded again by the standard-library path, so the fast path only ever handles lines on which
both agree, and every decision about odd input is made in one place (`_fields_of`).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import IO, Any

from costmeter._money import money_math
from costmeter._record import kinds as record_kinds
from costmeter._record import otel_key

__all__ = [
    "ENGINES",
    "Fields",
    "Progress",
    "ReadStats",
    "Report",
    "Unreadable",
    "UsageError",
    "build_report",
    "build_reports",
    "event_time",
    "read_events",
    "write_csv",
    "write_json",
    "write_table",
]

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_GZIP_MAGIC = b"\x1f\x8b"
_PARALLEL_MIN_BYTES = 32 << 20
_CALL = "costmeter.call"
_OTEL_MARK = otel_key("input_tokens")  # present in every call logged with otel_genai_keys

#: ``engine=`` values of `build_report`: ``python`` decodes with msgspec when it is installed,
#: else the standard library; ``duckdb`` adds up plain and gzip files in DuckDB (the
#: ``duckdb`` extra; stdin is read by Python); ``auto`` is ``duckdb`` when it is installed and
#: the files hold at least `DUCKDB_MIN_BYTES`, else ``python``.
ENGINES = ("auto", "python", "duckdb", "msgspec", "json")
#: Below this many bytes of input, starting DuckDB costs more than it saves.
DUCKDB_MIN_BYTES = 16 << 20


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
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return
        self.next_at = now + 0.5
        done = ""
        if self.size and self.position is not None:
            try:
                done = f" {min(100.0, 100.0 * self.position() / self.size):5.1f}%"
            except (OSError, ValueError):
                done = ""
        sys.stderr.write(f"\rcostmeter: reading {self.name}{done} ({lines:,} lines)")
        sys.stderr.flush()
        self.shown = True

    def tick_percent(self, percent: float) -> None:
        """Show *percent* done (an engine that cannot count lines as it goes: DuckDB)."""
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return
        self.next_at = now + 0.5
        sys.stderr.write(f"\rcostmeter: reading {self.name} {min(100.0, percent):5.1f}%")
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


def _ticking(stream: Iterable[bytes], progress: Progress) -> Iterator[bytes]:
    """The lines of *stream*, updating *progress* every 16k lines."""
    count = 0
    try:
        for line in stream:
            count += 1
            if not count & 0x3FFF:
                progress.tick(count)
            yield line
    finally:
        progress.done()


def _read_piece(name: str, start: int, end: int, show_progress: bool) -> Iterator[bytes]:
    """The lines of bytes [start, end) of a plain file (both ends at line boundaries)."""
    try:
        with open(name, "rb") as raw:
            raw.seek(start)
            stream = io.BufferedReader(_RawReader(raw, end - start), 1 << 16)
            progress = Progress(name, end - start, lambda: raw.tell() - start)
            progress.enabled = progress.enabled and show_progress
            yield from _ticking(stream, progress)
    except OSError as exc:
        raise Unreadable(name, exc) from None


def _pieces(name: str, parts: int) -> list[tuple[int, int]]:
    """
    *name* cut into *parts* byte ranges at line boundaries, for reading in parallel; one piece
    for stdin, gzip, small files (< 32 MB) and single-line stretches.
    """
    if parts < 2 or name == "-":
        return [(0, -1)]
    try:
        with open(name, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < _PARALLEL_MIN_BYTES or fh.read(2) == _GZIP_MAGIC:
                return [(0, -1)]
            cuts = [0]
            for n in range(1, parts):
                fh.seek(max(size * n // parts, cuts[-1]))
                fh.readline()
                cuts.append(fh.tell())
    except OSError:
        return [(0, -1)]  # _read_lines reports it
    cuts.append(size)
    pieces = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    return pieces if len(pieces) > 1 else [(0, -1)]


def _read_lines(name: str) -> Iterator[bytes]:
    """Lines of a file, ``-`` (stdin) or gzip (detected by content), read in constant memory."""
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
        stream: Iterable[bytes] = raw
        if head == _GZIP_MAGIC or (not head and name.endswith(".gz")):
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


# -- one line: the fields a report reads ---------------------------------------------------------

#: The `CallRecord` fields a report reads (`REPORT_READS`), each with its key in the default log
#: style and with `costmeter.otel_genai_keys` (`costmeter._record.otel_key`): derived from the
#: record, so a renamed or retyped field cannot drift from what the report reads.
REPORT_READS = frozenset(
    [
        "api",
        "model",
        "response_model",
        "service_tier",
        "priced_as",
        "usage_source",
        "budget",
        "budget_key",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "estimated_input_tokens",
        "cost_usd",
        "input_cost_usd",
        "cached_input_cost_usd",
        "cache_write_cost_usd",
        "output_cost_usd",
        "tool_cost_usd",
    ]
)
_KINDS = record_kinds()
if not _KINDS.keys() >= REPORT_READS:  # pragma: no cover - pinned by tests/test_report_engines
    raise ImportError(f"not in CallRecord: {sorted(REPORT_READS - _KINDS.keys())}")
FIELD_KEYS: tuple[tuple[str, str], ...] = tuple(
    (name, otel_key(name)) for name in _KINDS if name in REPORT_READS
)
#: Fields that must be JSON integers (or null/absent, meaning 0) in a ``costmeter.call`` event.
INT_FIELDS = frozenset(name for name, _ in FIELD_KEYS if _KINDS[name].startswith("int"))
#: Money fields: JSON numbers (or numeric strings) read as exact Decimals.
MONEY_FIELDS = frozenset(name for name, _ in FIELD_KEYS if name.endswith("_usd"))
OTEL_TAG_PREFIX = "costmeter.tags."
#: Attributes only some reports read (``--by day/budget/api/tag:KEY``, ``--since``): a decoder
#: may leave the others ``None``.
OPTIONAL_FIELDS = frozenset(
    {"timestamp", "tags", "budget", "budget_key", "api", "refused", *MONEY_FIELDS - {"cost_usd"}}
)
#: ``by`` of a report grouped by UTC day and model at once (keys ``"<day> <model>"``).
DAY_MODEL = "day+model"
_EXCEEDED = "costmeter.budget.exceeded"


class Fields:
    """
    What a report reads of one log line, whichever key style wrote it. ``tags`` holds the tags
    (only the one asked for, for otel-style lines). The msgspec decoder's structs have the same
    attributes, so the adding-up code takes either.
    """

    __slots__ = ("event", "refused", "tags", "timestamp", *(name for name, _ in FIELD_KEYS))

    event: Any
    timestamp: Any
    refused: Any
    tags: dict[str, Any] | None
    model: Any
    response_model: Any
    priced_as: Any
    service_tier: Any
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    usage_source: Any
    estimated_input_tokens: int | None
    cost_usd: Decimal | None
    budget: Any
    budget_key: Any
    api: Any
    input_cost_usd: Decimal | None
    cached_input_cost_usd: Decimal | None
    cache_write_cost_usd: Decimal | None
    output_cost_usd: Decimal | None
    tool_cost_usd: Decimal | None


class _Malformed(Exception):
    """A costmeter.call line whose fields do not have the documented types."""


def _money(value: object) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):  # a renderer that writes Decimals as strings
        try:
            return Decimal(value)
        except ArithmeticError:
            raise _Malformed("cost_usd") from None
    raise _Malformed("cost_usd")


def _fields_of(event: dict[str, Any], decoder: _Decoder) -> Fields:
    """
    The `Fields` of a decoded line (standard-library path). The types checked here are the
    types the msgspec structs declare, so both paths accept and reject the same lines; fields
    not wanted are left ``None`` (and unchecked), as msgspec leaves them.

    Raises:
        _Malformed: a ``costmeter.call`` event with a non-integer token count or an amount that
            is not a number.
    """
    row = Fields()
    row.event = event.get("event")
    skip = decoder.skip
    otel = _OTEL_MARK in event
    for name, otel_name in FIELD_KEYS:
        setattr(row, name, None if name in skip else event.get(otel_name if otel else name))
    row.timestamp = None if "timestamp" in skip else event.get("timestamp")
    row.refused = None if "refused" in skip else event.get("refused")
    tag_key = decoder.tag_key
    row.tags = None
    if otel:
        if tag_key is not None and OTEL_TAG_PREFIX + tag_key in event:
            row.tags = {tag_key: event[OTEL_TAG_PREFIX + tag_key]}
    elif "tags" not in skip:
        tags = event.get("tags")
        row.tags = tags if isinstance(tags, dict) else None
    if row.event == _CALL:
        for name in INT_FIELDS:
            value = getattr(row, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Malformed(name)
        for name in MONEY_FIELDS - skip:
            setattr(row, name, _money(getattr(row, name)))
    return row


@dataclass(frozen=True)
class _Decoder:
    """How lines are decoded: which optional fields, which tag, and msgspec's parts if used."""

    tag_key: str | None
    skip: frozenset[str]
    fast: Any = None
    from_otel: Any = None
    unset: Any = None


def _fast_decoder(tag_key: str | None, wanted: frozenset[str] | None) -> tuple[Any, Any, Any]:
    """msgspec's ``(decode, from_otel, UNSET)`` (see `costmeter._report_fast`), or ``None``s."""
    try:
        from costmeter._report_fast import decoder  # noqa: PLC0415
    except ImportError:
        return None, None, None
    return decoder(tag_key, wanted)


def _fast_errors() -> tuple[type[Exception], ...]:
    import msgspec  # noqa: PLC0415

    return (msgspec.DecodeError,)


@dataclass
class ReadStats:
    """How many lines were read, and why the ones that are not calls were skipped."""

    lines: int = 0
    other_lines: int = 0
    malformed_lines: int = 0
    other_events: Counter[str] = field(default_factory=Counter)
    #: Calls refused before sending, per budget (``costmeter.budget.exceeded``, refused true);
    #: counted only when the ``refused`` field is wanted.
    refusals: Counter[str] = field(default_factory=Counter)


def read_events(
    files: Sequence[str],
    stats: ReadStats,
    *,
    tag_key: str | None = None,
    engine: str = "auto",
    wanted: frozenset[str] | None = None,
) -> Iterator[Fields]:
    """
    Every ``costmeter.call`` event in *files*, as `Fields` (cost already a Decimal, token counts
    checked), counting the lines that are something else in *stats*.

    *engine*: ``msgspec`` (fails without it), ``json`` (the standard library only) or ``auto``.
    *wanted*: the `OPTIONAL_FIELDS` to read (default all); the others are ``None``.
    """
    decoder = _engine(engine, tag_key, wanted)
    return _events((_read_lines(name) for name in files), stats, decoder)


def _engine(engine: str, tag_key: str | None, wanted: frozenset[str] | None = None) -> _Decoder:
    """The Python engine's decoder for *engine* (DuckDB's odd lines and stdin included)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    fast: Any
    from_otel: Any
    fast, from_otel, unset = (
        (None, None, None) if engine == "json" else _fast_decoder(tag_key, wanted)
    )
    if fast is None and engine == "msgspec":
        raise UsageError("engine msgspec needs msgspec: pip install 'costmeter[fast]'")
    skip = OPTIONAL_FIELDS - (OPTIONAL_FIELDS if wanted is None else wanted)
    return _Decoder(tag_key, skip, fast, from_otel, unset)


def _events(
    sources: Iterable[Iterable[bytes]], stats: ReadStats, decoder: _Decoder
) -> Iterator[Fields]:
    fast, from_otel, unset = decoder.fast, decoder.from_otel, decoder.unset
    rejected = _fast_errors() if fast is not None else ()
    decode = json.JSONDecoder(parse_float=Decimal).decode  # money stays exact: Decimal, not float
    other = malformed = lines = 0
    other_events = stats.other_events
    refusals = stats.refusals
    try:
        for source in sources:
            for line in source:
                lines += 1
                if b"costmeter." not in line:
                    if line.strip():
                        other += 1
                    continue
                row: Fields | None = None
                if fast is not None:
                    try:
                        row = fast(line)
                    except rejected:
                        row = None
                    else:
                        if row.otel_input_tokens is not unset:  # type: ignore[union-attr]
                            row = from_otel(row)
                if row is None:
                    try:
                        event = decode(line.decode("utf-8"))
                    except ValueError:  # also UnicodeDecodeError
                        malformed += 1
                        continue
                    if not isinstance(event, dict):
                        malformed += 1
                        continue
                    try:
                        row = _fields_of(event, decoder)
                    except _Malformed:
                        malformed += 1
                        continue
                kind = row.event
                if kind != _CALL:
                    if isinstance(kind, str) and kind.startswith("costmeter."):
                        other_events[kind] += 1
                        if kind == _EXCEEDED and row.refused is True:
                            refusals[str(row.budget or "(none)")] += 1
                    else:
                        other += 1
                    continue
                yield row
    finally:
        stats.lines += lines
        stats.other_lines += other
        stats.malformed_lines += malformed


# -- adding up -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = _ZERO
    unpriced_calls: int = 0
    estimated_usage_calls: int = 0
    saved_unknown_calls: int = 0
    # Cached tokens per (input rate - cached rate): the savings are sum(tokens * gap) / 1M, the
    # exact sum of the per-call savings, computed once at the end instead of per call.
    saved_tokens: dict[Decimal, int] = field(default_factory=dict)
    accuracy_calls: int = 0
    accuracy_sum: float = 0.0
    # |error| in percent, bucketed to 0.01 pp below 100 % (1 pp above): bounded memory.
    accuracy_hist: Counter[float] = field(default_factory=Counter)

    def add(self, row: Fields, prices: _Prices) -> None:
        """Count one call (inside `money_math`)."""
        self.calls += 1
        input_tokens = row.input_tokens or 0
        cached = row.cached_input_tokens or 0
        self.input_tokens += input_tokens
        self.cached_input_tokens += cached
        self.cache_write_input_tokens += row.cache_write_input_tokens or 0
        self.output_tokens += row.output_tokens or 0
        self.reasoning_tokens += row.reasoning_tokens or 0
        cost = row.cost_usd
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += cost
        source = row.usage_source
        if source == "estimated":
            self.estimated_usage_calls += 1
        if cached:  # an unpriced call (cost null) has no savings either: its price was unknown
            gap = None if cost is None else prices.cache_gap(row, input_tokens)
            if gap is None:
                self.saved_unknown_calls += 1
            else:
                self.saved_tokens[gap] = self.saved_tokens.get(gap, 0) + cached
        estimated = row.estimated_input_tokens
        if source == "reported" and input_tokens > 0 and estimated is not None:
            error = abs(estimated - input_tokens) * 100.0 / input_tokens
            self.accuracy_calls += 1
            self.accuracy_sum += error
            self.accuracy_hist[round(error, 2) if error < 100 else float(round(error))] += 1

    def merge(self, other: _Totals) -> None:
        """Add *other*'s counts to these (inside `money_math`)."""
        for name in (
            "calls",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "unpriced_calls",
            "estimated_usage_calls",
            "saved_unknown_calls",
            "accuracy_calls",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_usd += other.cost_usd
        for gap, tokens in other.saved_tokens.items():
            self.saved_tokens[gap] = self.saved_tokens.get(gap, 0) + tokens
        self.accuracy_sum += other.accuracy_sum
        self.accuracy_hist.update(other.accuracy_hist)

    @property
    def saved_usd(self) -> Decimal:
        """Money saved by cached input, at today's prices (exact)."""
        with money_math():
            return (
                sum((gap * tokens for gap, tokens in sorted(self.saved_tokens.items())), _ZERO)
                / _MILLION
            )

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else None

    @property
    def error_mean_pct(self) -> float | None:
        return self.accuracy_sum / self.accuracy_calls if self.accuracy_calls else None

    @property
    def error_median_pct(self) -> float | None:
        n = self.accuracy_calls
        if not n:
            return None
        wanted = [(n - 1) // 2, n // 2]  # 0-based ranks of the middle value(s)
        found: list[float] = []
        seen = 0
        for value in sorted(self.accuracy_hist):
            seen += self.accuracy_hist[value]
            while wanted and wanted[0] < seen:
                found.append(value)
                wanted.pop(0)
            if not wanted:
                break
        return sum(found) / len(found)


class _Prices:
    """Today's cache discount per model and tier, from `price_of`, looked up once per model."""

    def __init__(self) -> None:
        # (priced_as, response_model, model, tier) -> (gap, long-context threshold, its gap)
        self._gaps: dict[tuple[Any, Any, Any, Any], tuple[Decimal, int | None, Decimal] | None]
        self._gaps = {}

    def cache_gap(self, row: Fields, input_tokens: int) -> Decimal | None:
        """Input rate minus cached-input rate (USD per 1M tokens), or ``None`` when unpriced."""
        key = (row.priced_as, row.response_model, row.model, row.service_tier)
        try:
            entry = self._gaps[key]
        except KeyError:
            entry = self._gaps[key] = self._lookup(*key)
        if entry is None:
            return None
        gap, threshold, long_gap = entry
        return long_gap if threshold is not None and input_tokens > threshold else gap

    @staticmethod
    def _lookup(
        priced_as: Any, response_model: Any, model: Any, tier: Any
    ) -> tuple[Decimal, int | None, Decimal] | None:
        name = priced_as or response_model or model
        if not isinstance(name, str) or not name:
            return None
        from costmeter._errors import CostmeterError  # noqa: PLC0415
        from costmeter._pricing import price_of  # noqa: PLC0415

        try:
            price = price_of(name, service_tier=tier if isinstance(tier, str) else None)
        except CostmeterError:
            return None
        gap = price.input_per_mtok - price.cached_input_per_mtok
        long = price.long_context
        if long is None or price.long_context_threshold is None:
            return gap, None, gap
        return gap, price.long_context_threshold, long.input_per_mtok - long.cached_input_per_mtok


_COUNTS = ("lines", "other_lines", "malformed_lines", "out_of_range", "no_timestamp")


@dataclass
class Report:
    by: str
    groups: dict[str, _Totals] = field(default_factory=dict)
    total: _Totals = field(default_factory=_Totals)
    lines: int = 0
    other_lines: int = 0
    malformed_lines: int = 0
    out_of_range: int = 0
    no_timestamp: int = 0
    other_events: Counter[str] = field(default_factory=Counter)
    since: datetime | None = None
    until: datetime | None = None
    refusals: Counter[str] = field(default_factory=Counter)

    def merge_groups(self, other: Report) -> None:
        """Add the groups of *other* (a piece of the same input) to this report's."""
        for key, totals in other.groups.items():
            mine = self.groups.get(key)
            if mine is None:
                self.groups[key] = totals
            else:
                mine.merge(totals)

    def merge(self, other: Report) -> None:
        """Add the groups and counts of *other* (a piece of the same input) to this report."""
        self.merge_groups(other)
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.other_events.update(other.other_events)
        self.refusals.update(other.refusals)


def _day_of(when: datetime | None) -> str:
    return "(no timestamp)" if when is None else when.astimezone(timezone.utc).date().isoformat()


def _grouper(by: str) -> Callable[[Fields, datetime | None], str]:
    """The group key of a call for ``--by``."""
    if by == "model":
        return lambda row, _when: str(row.model or row.response_model or "(unknown)")
    if by == "day":
        return lambda _row, when: _day_of(when)
    if by == DAY_MODEL:
        return lambda row, when: f"{_day_of(when)} {row.model or row.response_model or '(unknown)'}"
    if by == "budget":
        return lambda row, _when: str(row.budget or "(none)")
    if by == "budget_key":  # per-key budgets: one row per user/team/tenant
        return lambda row, _when: str(row.budget_key or "(none)")
    if by == "api":
        return lambda row, _when: str(row.api or "(unknown)")
    if by.startswith("tag:"):
        key = by[4:]

        def tag(row: Fields, _when: datetime | None) -> str:
            value = row.tags.get(key) if row.tags else None
            return "(untagged)" if value is None else str(value)

        return tag
    return lambda _row, _when: "TOTAL"


def build_report(
    files: Sequence[str],
    by: str,
    since: datetime | None,
    until: datetime | None,
    *,
    engine: str = "auto",
    workers: int | None = None,
) -> Report:
    """
    Add up the ``costmeter.call`` events of *files*, grouped *by*, within [since, until).

    A large plain file (>= 32 MB) is read by *workers* processes at once (default: 2 when the
    machine has 2 cores or more and the process runs no other thread, since it forks), each
    adding up its own byte range; the pieces are merged in file order, so the result does not
    depend on which finished first. The standard-library engine cuts the same pieces.
    """
    return build_reports(files, [by], since, until, engine=engine, workers=workers)[0]


def build_reports(
    files: Sequence[str],
    bys: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    *,
    engine: str = "auto",
    workers: int | None = None,
    refusals: bool = False,
) -> list[Report]:
    """
    `build_report` for several groupings at once, reading the files once (at most one tag);
    with *refusals*, count the calls each budget refused (``Report.refusals``) whatever the
    groupings (``--by budget`` counts them too).
    """
    reports = [Report(by=by, since=since, until=until) for by in bys]
    duck = _use_duckdb(engine, files)
    decoder = _engine(engine, _tag_key(bys), _wanted(bys, since, until, refusals))
    if workers is None:
        workers = _default_workers()
    with money_math():
        for name in files:
            if duck and name != "-":
                from costmeter import _report_duckdb  # noqa: PLC0415

                try:
                    found = _report_duckdb.file_reports(name, bys, since, until, refusals, decoder)
                except _report_duckdb.Fallback:
                    pass  # read by the Python engine below, exactly
                else:
                    _merge(reports, found)
                    continue
            pieces = _pieces(name, workers)
            if len(pieces) == 1:
                sources: Iterable[Iterable[bytes]] = [_read_lines(name)]
                _add_up(reports, sources, decoder)
                continue
            from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415
            from multiprocessing import get_context  # noqa: PLC0415

            with ProcessPoolExecutor(len(pieces) - 1, mp_context=get_context("fork")) as pool:
                others = [
                    pool.submit(
                        _piece_reports, name, start, end, bys, since, until, engine, refusals
                    )
                    for start, end in pieces[1:]
                ]
                start, end = pieces[0]
                _add_up(reports, [_read_piece(name, start, end, True)], decoder)
                for other in others:
                    _merge(reports, other.result())
        for report in reports:
            for _key, group in sorted(report.groups.items()):
                report.total.merge(group)
            if report.by == "none":
                report.groups.clear()
    return reports


def _use_duckdb(engine: str, files: Sequence[str]) -> bool:
    """Whether *engine* means DuckDB for these files (see `ENGINES`)."""
    if engine not in ("auto", "duckdb"):
        return False
    from costmeter._report_duckdb import available  # noqa: PLC0415

    if not available():
        if engine == "duckdb":
            raise UsageError("engine duckdb needs duckdb: pip install 'costmeter[duckdb]'")
        return False
    if engine == "duckdb":
        return True
    size = 0
    for name in files:
        try:
            size += os.stat(name).st_size if name != "-" else 0
        except OSError:
            continue
    return size >= DUCKDB_MIN_BYTES


def _merge(reports: Sequence[Report], pieces: Sequence[Report]) -> None:
    """
    Add *pieces* (the reports of other lines, one per grouping) to *reports*: groups to each,
    the line counts and event counters once (the reports share them, as `_add_up` leaves them).
    """
    first = reports[0]
    first.merge(pieces[0])
    for report, piece in zip(reports[1:], pieces[1:], strict=True):
        report.merge_groups(piece)
        for name in _COUNTS:
            setattr(report, name, getattr(first, name))
        report.other_events = first.other_events
        report.refusals = first.refusals


def _default_workers() -> int:
    import threading  # noqa: PLC0415

    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return 1  # fork is the start method here; forking a process with other threads is unsafe
    return min(2, os.cpu_count() or 1)


def _wanted(
    bys: Sequence[str], since: datetime | None, until: datetime | None, refusals: bool = False
) -> frozenset[str]:
    """The `OPTIONAL_FIELDS` the reports need."""
    wanted = {"budget", "refused"} if refusals else set()
    if since is not None or until is not None or any(by in ("day", DAY_MODEL) for by in bys):
        wanted.add("timestamp")
    for by in bys:
        if by in ("budget", "budget_key", "api"):
            wanted.add(by)
        if by.startswith("tag:"):
            wanted.add("tags")
        if by == "budget":
            wanted.add("refused")  # refusals per budget, from costmeter.budget.exceeded
    return frozenset(wanted)


def _tag_key(bys: Sequence[str]) -> str | None:
    tags = {by[4:] for by in bys if by.startswith("tag:")}
    if len(tags) > 1:
        raise UsageError("one tag at a time")
    return tags.pop() if tags else None


def _piece_reports(
    name: str,
    start: int,
    end: int,
    bys: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    engine: str,
    refusals: bool,
) -> list[Report]:
    """One byte range of a file, added up in a worker process (no progress display there)."""
    reports = [Report(by=by, since=since, until=until) for by in bys]
    decoder = _engine(engine, _tag_key(bys), _wanted(bys, since, until, refusals))
    with money_math():
        _add_up(reports, [_read_piece(name, start, end, False)], decoder)
    return reports


def _add_up(
    reports: Sequence[Report], sources: Iterable[Iterable[bytes]], decoder: _Decoder
) -> None:
    """Add the calls of *sources* to each report's groups (inside `money_math`)."""
    first = reports[0]
    since, until = first.since, first.until
    stats = ReadStats(other_events=first.other_events, refusals=first.refusals)
    prices = _Prices()
    windowed = since is not None or until is not None
    need_time = windowed or any(r.by in ("day", DAY_MODEL) for r in reports)
    grouped = [(report.groups, _grouper(report.by)) for report in reports]
    for row in _events(sources, stats, decoder):
        when = event_time(row.timestamp) if need_time else None
        if windowed:
            if when is None:
                first.no_timestamp += 1
                continue
            if (since is not None and when < since) or (until is not None and when >= until):
                first.out_of_range += 1
                continue
        for groups, group_of in grouped:
            key = group_of(row, when)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Totals()
            group.add(row, prices)
    first.lines += stats.lines
    first.other_lines += stats.other_lines
    first.malformed_lines += stats.malformed_lines
    for report in reports[1:]:  # the same lines were read for every grouping
        for name in _COUNTS:
            setattr(report, name, getattr(first, name))
        report.other_events = first.other_events
        report.refusals = first.refusals


# -- output --------------------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, table header, kind)
    ("calls", "calls", "int"),
    ("input_tokens", "input", "int"),
    ("cached_input_tokens", "cached", "int"),
    ("output_tokens", "output", "int"),
    ("reasoning_tokens", "reasoning", "int"),
    ("cost_usd", "cost $", "money"),
    ("cache_hit_rate", "cache hit", "ratio"),
    ("saved_by_cache_usd", "saved $", "money"),
    ("estimate_error_mean_pct", "est.err mean", "pct"),
    ("estimate_error_median_pct", "est.err median", "pct"),
    ("unpriced_calls", "unpriced", "int"),
    ("estimated_usage_calls", "est.usage", "int"),
)


def _values(totals: _Totals) -> dict[str, Any]:
    return {
        "calls": totals.calls,
        "input_tokens": totals.input_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "cache_write_input_tokens": totals.cache_write_input_tokens,
        "output_tokens": totals.output_tokens,
        "reasoning_tokens": totals.reasoning_tokens,
        "cost_usd": totals.cost_usd,
        "cache_hit_rate": totals.cache_hit_rate,
        "saved_by_cache_usd": totals.saved_usd,
        "saved_by_cache_unpriced_calls": totals.saved_unknown_calls,
        "estimate_error_calls": totals.accuracy_calls,
        "estimate_error_mean_pct": totals.error_mean_pct,
        "estimate_error_median_pct": totals.error_median_pct,
        "unpriced_calls": totals.unpriced_calls,
        "estimated_usage_calls": totals.estimated_usage_calls,
    }


def _plain(value: object) -> object:
    """JSON/CSV value: money as an exact decimal string, ratios rounded to 6 places."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return round(value, 6)
    return value


def _sorted_groups(report: Report) -> list[tuple[str, _Totals]]:
    if report.by == "day":
        return sorted(report.groups.items())
    return sorted(report.groups.items(), key=lambda kv: (-kv[1].cost_usd, kv[0]))


def _cell(kind: str, value: Any) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{value:,}"
    if kind == "money":
        return f"{value:,.6f}"
    if kind == "ratio":
        return f"{value:.1%}"
    return f"{value:.2f}%"


def write_table(report: Report, out: IO[str]) -> None:
    label = "model" if report.by == "model" else report.by
    rows = [
        [key, *(_cell(kind, _values(t)[col]) for col, _h, kind in _COLUMNS)]
        for key, t in _sorted_groups(report)
    ]
    rows.append(["TOTAL", *(_cell(kind, _values(report.total)[c]) for c, _h, kind in _COLUMNS)])
    header = [label if report.by != "none" else "", *(h for _c, h, _k in _COLUMNS)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out.write(line(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows[:-1]:
        out.write(line(row) + "\n")
    if len(rows) > 1:
        out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(line(rows[-1]) + "\n")


def write_json(report: Report, out: IO[str]) -> None:
    data = {
        "by": report.by,
        "groups": [
            {"key": key, **{k: _plain(v) for k, v in _values(t).items()}}
            for key, t in _sorted_groups(report)
        ],
        "total": {k: _plain(v) for k, v in _values(report.total).items()},
        "lines": {
            "read": report.lines,
            "other": report.other_lines,
            "malformed": report.malformed_lines,
            "out_of_range": report.out_of_range,
            "no_timestamp": report.no_timestamp,
        },
        "other_events": dict(sorted(report.other_events.items())),
    }
    json.dump(data, out, indent=2)
    out.write("\n")


def write_csv(report: Report, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    keys = list(_values(report.total))
    writer.writerow([report.by, *keys])
    for key, totals in [*_sorted_groups(report), ("TOTAL", report.total)]:
        values = _values(totals)
        writer.writerow([key, *("" if values[k] is None else _plain(values[k]) for k in keys)])
