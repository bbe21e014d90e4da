"""
One log line as the fields a report reads, whichever key style wrote it: the field table (derived
from `costmeter._record.CallRecord`), `Fields`, and the two Python decoders that give the same
`Fields`: msgspec's typed decoding (the optional ``fast`` extra: it skips the keys a report does
not read without building them) and the standard library's ``json`` (always there). A line
msgspec rejects (a wrong type, torn JSON, a text line) is decoded again by the standard-library
path, so the fast path only ever handles lines on which both agree, and every decision about odd
input is made in one place (`_fields_of`). Numbers are parsed as Decimal, never binary floats.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costmeter._record import kinds as record_kinds
from costmeter._record import otel_key
from costmeter._report_input import UsageError, read_chunks

__all__ = [
    "CALL",
    "ENGINES",
    "EXCEEDED",
    "FIELD_KEYS",
    "INT_FIELDS",
    "MONEY_FIELDS",
    "OPTIONAL_FIELDS",
    "OTEL_MARK",
    "OTEL_TAG_PREFIX",
    "REPORT_READS",
    "Decoder",
    "Fields",
    "ReadStats",
    "decoder_for",
    "event_batches",
    "events",
    "read_events",
]

CALL = "costmeter.call"
EXCEEDED = "costmeter.budget.exceeded"
OTEL_MARK = otel_key("input_tokens")  # present in every call logged with otel_genai_keys

#: ``engine=`` values of `build_report`: ``python`` decodes with msgspec when it is installed,
#: else the standard library (``msgspec`` and ``json`` force one); ``duckdb`` adds up plain and
#: gzip files in DuckDB (the ``duckdb`` extra; stdin is read by Python), the same report;
#: ``auto`` is always ``python``: on the 2-core machine measured (bench/README.md) the msgspec
#: engine answers in ~0.65x the exact DuckDB engine's wall time and ~0.7x its CPU time, at 300k
#: and 1M lines (the DuckDB engine pays for proving each line exact, see `_report_duckdb`).
ENGINES = ("auto", "python", "duckdb", "msgspec", "json")


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


def _fields_of(event: dict[str, Any], decoder: Decoder) -> Fields:
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
    otel = OTEL_MARK in event
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
    if row.event == CALL:
        for name in INT_FIELDS:
            value = getattr(row, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Malformed(name)
        for name in MONEY_FIELDS - skip:
            setattr(row, name, _money(getattr(row, name)))
    return row


@dataclass(frozen=True)
class Decoder:
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
    decoder = decoder_for(engine, tag_key, wanted)
    return events((read_chunks(name) for name in files), stats, decoder)


def decoder_for(engine: str, tag_key: str | None, wanted: frozenset[str] | None = None) -> Decoder:
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
    return Decoder(tag_key, skip, fast, from_otel, unset)


def events(
    sources: Iterable[Iterable[Sequence[bytes]]], stats: ReadStats, decoder: Decoder
) -> Iterator[Fields]:
    """
    The ``costmeter.call`` events of *sources* (each an iterable of lists of lines: a file's
    `read_chunks`), one by one (`event_batches`).
    """
    for batch in event_batches(sources, stats, decoder):
        yield from batch


#: Calls per list `event_batches` yields: enough to amortise the hand-over, small enough that
#: memory stays constant.
BATCH = 1024


def event_batches(
    sources: Iterable[Iterable[Sequence[bytes]]], stats: ReadStats, decoder: Decoder
) -> Iterator[list[Fields]]:
    """
    The ``costmeter.call`` events of *sources* (as in `events`), in order, in lists of at least
    `BATCH` calls (but the last), at most a chunk more: a list handed over costs less than a
    generator step per call. The other lines are counted in *stats*.
    """
    fast, from_otel, unset = decoder.fast, decoder.from_otel, decoder.unset
    rejected = _fast_errors() if fast is not None else ()
    decode = json.JSONDecoder(parse_float=Decimal).decode  # money stays exact: Decimal, not float
    other = malformed = lines = 0
    other_events = stats.other_events
    refusals = stats.refusals
    batch: list[Fields] = []
    # ``find(line, mark) < 0`` is ``mark not in line``: bytes' ``in`` took ~0.25 µs a line on
    # Python 3.11, ``bytes.find`` ~0.13 µs (same search, less dispatch), per line of the report
    find, mark = bytes.find, b"costmeter."
    try:
        for source in sources:
            for chunk in source:
                lines += len(chunk)
                for line in chunk:
                    if find(line, mark) < 0:
                        if line.strip():
                            other += 1
                        continue
                    row: Fields | None = None
                    if fast is not None:
                        try:
                            row = fast(line)
                            if row.otel_input_tokens is not unset:  # type: ignore[union-attr]
                                row = from_otel(line)
                        except rejected:
                            row = None
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
                    if kind != CALL:
                        if isinstance(kind, str) and kind.startswith("costmeter."):
                            other_events[kind] += 1
                            if kind == EXCEEDED and row.refused is True:
                                refusals[str(row.budget or "(none)")] += 1
                        else:
                            other += 1
                        continue
                    batch.append(row)
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
        if batch:
            yield batch
    finally:
        stats.lines += lines
        stats.other_lines += other
        stats.malformed_lines += malformed
