"""
Adding up costmeter's JSON-lines logs: the engine behind ``costmeter report`` (and the demo's
report, and ``costmeter reconcile``'s logged side). `build_reports` reads each file once, in
constant memory, with DuckDB (`costmeter._report_duckdb`, optional) or the Python decoders
(`costmeter._report_decode`), and adds the calls up per group (`costmeter._report_totals`);
`costmeter._report_output` prints them. Money is summed in `Decimal`, inside
`costmeter._money.money_math`.

Modules: ``_report_input`` (files, lines, progress, errors), ``_report_decode`` (one line, the
field table), ``_report_totals`` (a group's totals, cache prices), ``_report_output`` (table,
JSON, CSV), ``_report_duckdb`` (the DuckDB engine), ``_report_html`` (the page).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from costmeter._money import money_math
from costmeter._report_decode import (
    ENGINES,
    FIELD_KEYS,
    INT_FIELDS,
    MONEY_FIELDS,
    REPORT_READS,
    Decoder,
    Fields,
    ReadStats,
    decoder_for,
    event_batches,
    read_events,
)
from costmeter._report_input import (
    GZIP_MAGIC,
    Progress,
    Unreadable,
    UsageError,
    _read_piece,
    event_time,
    read_chunks,
)
from costmeter._report_output import write_csv, write_json, write_table
from costmeter._report_totals import Prices, Totals

__all__ = [
    "DAY_MODEL",
    "ENGINES",
    "FIELD_KEYS",
    "INT_FIELDS",
    "MONEY_FIELDS",
    "REPORT_READS",
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

_PARALLEL_MIN_BYTES = 32 << 20
_T = TypeVar("_T")
#: ``by`` of a report grouped by UTC day and model at once (keys ``"<day> <model>"``).
DAY_MODEL = "day+model"


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
            if size < _PARALLEL_MIN_BYTES or fh.read(2) == GZIP_MAGIC:
                return [(0, -1)]
            cuts = [0]
            for n in range(1, parts):
                fh.seek(max(size * n // parts, cuts[-1]))
                fh.readline()
                cuts.append(fh.tell())
    except OSError:
        return [(0, -1)]  # read_chunks reports it
    cuts.append(size)
    pieces = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    return pieces if len(pieces) > 1 else [(0, -1)]


_COUNTS = ("lines", "other_lines", "malformed_lines", "out_of_range", "no_timestamp")


@dataclass
class Report:
    by: str
    groups: dict[str, Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)
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
    duck = _use_duckdb(engine)
    decoder = decoder_for(engine, _tag_key(bys), _wanted(bys, since, until, refusals))
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
                sources: Iterable[Iterable[Sequence[bytes]]] = [read_chunks(name)]
                _add_up(reports, sources, decoder)
                continue
            start, end = pieces[0]
            mine = _read_piece(name, start, end, True)
            # this process's first chunk before forking: a price table it loads to price cache
            # savings (~0.2 s of imports) is then loaded once, and inherited by the children
            _add_up(reports, [itertools.islice(mine, 1)], decoder)
            with contextlib.ExitStack() as children:
                others = [
                    children.enter_context(
                        _forked(
                            _piece_reports, name, start, end, bys, since, until, engine, refusals
                        )
                    )
                    for start, end in pieces[1:]
                ]
                _add_up(reports, [mine], decoder)
                for other in others:
                    _merge(reports, other())
        for report in reports:
            for _key, group in sorted(report.groups.items()):
                report.total.merge(group)
            if report.by == "none":
                report.groups.clear()
    return reports


@contextlib.contextmanager
def _forked(work: Callable[..., _T], *args: Any) -> Iterator[Callable[[], _T]]:
    """
    ``work(*args)`` run now in a forked child process; yields the function that waits for its
    result (or raises the exception it raised). A bare fork and a pipe, not a process pool:
    the pool's imports and start-up cost ~20 ms of a report's wall time. The child ends with
    ``os._exit``: it never flushes the parent's buffers or runs its exit handlers. Leaving the
    block early (an error, Ctrl-C) kills the child.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process (coverage does not follow the fork)
        status = 1
        try:
            os.close(read_end)
            try:
                payload = pickle.dumps((True, work(*args)))
            except BaseException as exc:  # every failure goes to the parent
                payload = pickle.dumps((False, exc))
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    done = False

    def result() -> _T:
        nonlocal done
        with os.fdopen(read_end, "rb", closefd=False) as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        done = True
        if not data:
            raise RuntimeError("a costmeter report worker process died")
        ok, value = pickle.loads(data)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    try:
        yield result
    finally:
        os.close(read_end)
        if not done:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _use_duckdb(engine: str) -> bool:
    """Whether *engine* means DuckDB (see `ENGINES`)."""
    if engine != "duckdb":
        return False
    from costmeter._report_duckdb import available  # noqa: PLC0415

    if not available():
        raise UsageError("engine duckdb needs duckdb: pip install 'costmeter[duckdb]'")
    return True


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
    decoder = decoder_for(engine, _tag_key(bys), _wanted(bys, since, until, refusals))
    with money_math():
        _add_up(reports, [_read_piece(name, start, end, False)], decoder)
    return reports


def _add_up(
    reports: Sequence[Report], sources: Iterable[Iterable[Sequence[bytes]]], decoder: Decoder
) -> None:
    """Add the calls of *sources* to each report's groups (inside `money_math`)."""
    first = reports[0]
    since, until = first.since, first.until
    stats = ReadStats(other_events=first.other_events, refusals=first.refusals)
    prices = Prices()
    windowed = since is not None or until is not None
    need_time = windowed or any(r.by in ("day", DAY_MODEL) for r in reports)
    grouped = [(report.groups, _grouper(report.by)) for report in reports]
    for batch in event_batches(sources, stats, decoder):
        rows: list[Fields] = batch
        whens: list[datetime | None] | None = None
        if need_time:
            rows, whens = [], []
            for row in batch:
                when = event_time(row.timestamp)
                if windowed:
                    if when is None:
                        first.no_timestamp += 1
                        continue
                    if (since is not None and when < since) or (
                        until is not None and when >= until
                    ):
                        first.out_of_range += 1
                        continue
                rows.append(row)
                whens.append(when)
        for groups, group_of in grouped:
            # the calls of each group together, in log order: one `Totals.add_rows` per group
            buckets: dict[str, list[Fields]] = {}
            keys = map(group_of, rows, whens if whens is not None else itertools.repeat(None))
            for key, row in zip(keys, rows, strict=True):
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = [row]
                else:
                    bucket.append(row)
            for key, bucket in buckets.items():
                group = groups.get(key)
                if group is None:
                    group = groups[key] = Totals()
                group.add_rows(bucket, prices)
    first.lines += stats.lines
    first.other_lines += stats.other_lines
    first.malformed_lines += stats.malformed_lines
    for report in reports[1:]:  # the same lines were read for every grouping
        for name in _COUNTS:
            setattr(report, name, getattr(first, name))
        report.other_events = first.other_events
        report.refusals = first.refusals
