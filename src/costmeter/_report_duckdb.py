"""
DuckDB as the engine of ``costmeter report`` (optional: ``pip install 'costmeter[duckdb]'``).

DuckDB reads a file's lines and parses their JSON in C++ on every core (`--engine duckdb`); the
report must still be exactly the one the Python engine prints. So DuckDB only adds up the lines
on which the two provably agree, and hands every other line, as its original text, to the Python
engine (`costmeter._report_decode.events`), which decides what it is. Proving agreement costs:
on the 2-core machine measured (bench/README.md) this engine uses ~2.8x the CPU of DuckDB's own
unchecked query and ~1.4x that of the msgspec engine, so it is not the default. The classes:

* a line without ``costmeter.`` is blank or "other", as in Python (no JSON parse);
* a ``costmeter.*`` event other than a call is counted by its name (a refusal by its budget);
* a call is added up only when every field the report reads has the type the Python engine
  accepts, written plainly: token counts JSON integers, names JSON strings without escapes,
  the timestamp ``YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+00:00]`` (a real date), and the cost a
  non-negative JSON number of at most 18 decimals whose text in the line is exactly what DuckDB
  reads (DuckDB parses numbers as doubles: the check proves the double's shortest text, which
  the sum uses as an exact DECIMAL, *is* the logged text, so ``0.000123000`` or ``1.5E+3``
  go to Python, which keeps their exponents);
* anything else (torn or non-JSON lines, strings for numbers, other key styles, escapes, a
  timestamp in another form, a tag that is a float, ...) is an *odd* line: read again by DuckDB
  as text, streamed to the Python engine, and merged.

Sums: tokens as integers, cost as ``DECIMAL(38,18)`` plus the smallest exponent of the summed
values, so the Decimal rebuilt here has the exponent Python's running sum has (``0.10 + 0.2`` is
``0.30``). Cache savings are grouped by what they are priced as and priced here, like Python
does. The estimate-error histogram buckets like Python's ``round(error, 2)``; values within 1e-6
of a rounding tie come back as exact doubles and are rounded here. A whole file is left to
Python when DuckDB cannot read it as lines exactly as Python does (invalid UTF-8, a lone CR, a
0x01 byte, a line over 2 MB, corrupt gzip) or when its cached calls straddle a long-context price
threshold. Known differences, on lines no JSON writer produces: a line that repeats a key the
report reads (JSON says names should be unique) is read with the first value here, the last in
Python, and so is a cost key nested in an object before the top-level one; a trailing comma
(``{"a": 1,}``), which Python's ``json`` rejects, is accepted here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from costmeter._money import money_math
from costmeter._report import Report, _add_up, _merge
from costmeter._report_decode import Decoder, Fields
from costmeter._report_duckdb_sql import GRAIN, SUMS, report_sql, rows_sql
from costmeter._report_input import GZIP_MAGIC, Progress
from costmeter._report_totals import Prices, Totals
from costmeter._report_totals import bucket as bucket_of

__all__ = ["Fallback", "available", "file_reports"]


class Fallback(Exception):
    """DuckDB cannot give this file's report exactly: the Python engine reads it."""


def available() -> bool:
    """Whether duckdb can be imported (the ``duckdb`` extra)."""
    try:
        import duckdb  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _name(text: str | None) -> str | None:
    return None if text is None else text[1:-1]  # a JSON string without escapes


def _bucket(bucket: int | None, tie: float | None) -> float:
    """The key of an error in `Totals.accuracy_hist`, as `Totals.add_rows` computes it."""
    if tie is not None:
        return bucket_of(tie)
    assert bucket is not None
    return bucket / 100 if bucket >= 0 else float(-bucket - 1)


def _cost(total: Decimal | None, exponent: int | None) -> Decimal:
    """The exact sum, with the exponent Python's running sum (from Decimal 0) would have."""
    if total is None:
        return Decimal(0)
    return total.quantize(Decimal(1).scaleb(min(0, exponent if exponent is not None else 0)))


def _run(con: Any, sql: str, name: str) -> list[tuple[Any, ...]]:
    """Run *sql* on a worker thread, showing DuckDB's progress on a TTY like the Python engine."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.extend(con.execute(sql).fetchall())
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="costmeter-duckdb", daemon=True)
    worker.start()
    progress = Progress(name, None, None)
    try:
        while worker.is_alive():
            worker.join(0.25)
            if progress.enabled and worker.is_alive():
                done = con.query_progress()
                if done >= 0:
                    progress.tick_percent(done)
    except KeyboardInterrupt:
        con.interrupt()
        worker.join()
        raise
    finally:
        progress.done()
    if failure:
        raise failure[0]
    return result


def _odd_lines(con: Any, rows: str) -> Iterator[list[bytes]]:
    """The odd lines, streamed as their original bytes, in lists (constant memory)."""
    cursor = con.execute(f"SELECT line FROM ({rows}) WHERE cls = 'odd'")
    while batch := cursor.fetchmany(8192):
        yield [line.encode("utf-8") for (line,) in batch]


def file_reports(
    name: str,
    bys: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    refusals: bool,
    decoder: Decoder,
) -> list[Report]:
    """
    The reports (one per grouping) of one plain or gzip file, as the Python engine would add
    them up; *decoder* reads the odd lines (see the module docstring).

    Raises:
        Fallback: DuckDB cannot read this file line for line as Python does; nothing is lost.
    """
    import duckdb  # noqa: PLC0415

    if not os.path.isfile(name) or any(c in name for c in "*?[{~") or "://" in name:
        # DuckDB would expand a glob or fetch a URL; Python opens the name as it is
        raise Fallback(name)
    try:
        with open(name, "rb") as fh:
            gzip = fh.read(2) == GZIP_MAGIC
    except OSError:
        raise Fallback(name) from None  # the Python engine says what is wrong with it
    rows = rows_sql(name, gzip, bys, since, until, refusals)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        # constant memory: no cache of the file read; lines over 2 MB (DuckDB sizes its read
        # buffers from max_line_size) are left to Python
        con.execute("SET enable_external_file_cache = false")
        # progress is measured (shown by `_run`, on stderr, like the Python engine's), not printed
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        try:
            found = _run(con, report_sql(rows, bys, since, until, refusals), name)
        except (duckdb.InvalidInputException, duckdb.IOException, duckdb.ConversionException,
                duckdb.OutOfRangeException) as exc:  # fmt: skip
            # not UTF-8, a lone CR or 0x01 byte, corrupt gzip, a sum past DECIMAL(38,18): the
            # Python engine reads the file (and reports what it cannot read)
            raise Fallback(f"{name}: {exc}") from None
        reports = [Report(by=by, since=since, until=until) for by in bys]
        odd = _collect(found, reports)
        if odd:
            extra = [Report(by=by, since=since, until=until) for by in bys]
            with money_math():
                _add_up(extra, [_odd_lines(con, rows)], decoder)
            _merge(reports, extra)
    finally:
        con.close()
    return reports


def _collect(found: Sequence[tuple[Any, ...]], reports: Sequence[Report]) -> int:
    """Add the grouped rows up into *reports*; returns the number of odd lines left to Python."""
    first = reports[0]
    odd = 0
    prices = Prices()
    width = len(GRAIN)
    with money_math():
        for row in found:
            cls, w, budget, name, tier, cached, unpriced, estimated, bucket, tie = row[:width]
            keys = row[width : width + len(reports)]
            stats = dict(zip(SUMS, row[width + len(reports) :], strict=True))
            odd += _count_line(first, cls, w, budget, stats["n"])
            if w != "in":
                continue
            for report, key in zip(reports, keys, strict=True):
                totals = report.groups.get(key)
                if totals is None:
                    totals = report.groups[key] = Totals()
                _add(totals, stats, unpriced, estimated)
                if cached:
                    if unpriced:
                        totals.saved_unknown_calls += stats["n"]
                    else:
                        _add_savings(totals, prices, name, tier, stats)
                if bucket is not None or tie is not None:
                    totals.accuracy_calls += stats["n"]
                    totals.accuracy_sum += stats["err"]
                    totals.accuracy_hist[_bucket(bucket, tie)] += stats["n"]
    for report in reports[1:]:  # the same lines were read for every grouping, as in _add_up
        for count in ("lines", "other_lines", "malformed_lines", "out_of_range", "no_timestamp"):
            setattr(report, count, getattr(first, count))
        report.other_events = first.other_events
        report.refusals = first.refusals
    return odd


def _add(totals: Totals, stats: dict[str, Any], unpriced: bool, estimated: bool) -> None:
    """Add one group of calls (inside `money_math`)."""
    n = stats["n"]
    totals.calls += n
    totals.input_tokens += int(stats["s_input_tokens"] or 0)
    totals.cached_input_tokens += int(stats["s_cached_input_tokens"] or 0)
    totals.cache_write_input_tokens += int(stats["s_cache_write_input_tokens"] or 0)
    totals.output_tokens += int(stats["s_output_tokens"] or 0)
    totals.reasoning_tokens += int(stats["s_reasoning_tokens"] or 0)
    if unpriced:
        totals.unpriced_calls += n
    else:
        totals.cost_usd += _cost(stats["cost"], stats["exponent"])
    if estimated:
        totals.estimated_usage_calls += n


def _count_line(first: Report, cls: str, window: str | None, budget: str | None, n: int) -> int:
    """Count *n* lines of class *cls* in *first*; returns how many are odd (not counted)."""
    if cls == "odd":
        return n
    first.lines += n
    if cls == "other":
        first.other_lines += n
    elif cls == "call":
        if window == "out":
            first.out_of_range += n
        elif window == "none":
            first.no_timestamp += n
    elif cls != "blank":
        first.other_events[cls] += n
        if budget is not None:
            first.refusals[budget] += n
    return 0


def _add_savings(
    totals: Totals, prices: Prices, name: str | None, tier: str | None, stats: dict[str, Any]
) -> None:
    """
    Cached tokens priced as *name* in *tier*, at its cache discount (as `Totals.add_rows`, which
    prices ``priced_as or response_model or model``: the SQL picked that *name*).
    """
    row = Fields()
    row.priced_as, row.response_model, row.model = _name(name), None, None
    row.service_tier = _name(tier)
    low, high = int(stats["low"]), int(stats["high"])
    gap = prices.cache_gap(row, low)
    if gap is None:
        totals.saved_unknown_calls += stats["n"]
        return
    if prices.cache_gap(row, high) != gap:  # calls on both sides of a long-context threshold
        raise Fallback("cached calls on both sides of a long-context price threshold")
    tokens = int(stats["s_cached_input_tokens"])
    totals.saved_tokens[gap] = totals.saved_tokens.get(gap, 0) + tokens
