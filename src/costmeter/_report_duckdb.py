"""
DuckDB as the engine of ``costmeter report`` (optional: ``pip install 'costmeter[duckdb]'``).

DuckDB reads a file's lines and parses the JSON in C++ on every core, ~2.5x faster than the
Python engine at 1M lines; the report must still be exactly the one the Python engine prints.
So DuckDB only adds up the lines on which the two provably agree, and hands every other line,
as its original text, to the Python engine (`costmeter._report_decode.events`), which decides what it is:

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
does (a group that straddles a long-context threshold is read by Python instead). The
estimate-error histogram buckets like Python's ``round(error, 2)``; values within 1e-6 of a
rounding tie come back as exact doubles and are rounded here. A whole file is left to Python
when DuckDB cannot read it as lines exactly as Python does (invalid UTF-8, a lone CR, a 0x01
byte, corrupt gzip). Known difference: a line that repeats a key (JSON says names should be
unique) is read with the first value here and the last in Python.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from costmeter._money import money_math
from costmeter._report import DAY_MODEL, Report, _add_up, _merge
from costmeter._report_decode import (
    CALL,
    EXCEEDED,
    FIELD_KEYS,
    OTEL_MARK,
    OTEL_TAG_PREFIX,
    Decoder,
    Fields,
)
from costmeter._report_input import GZIP_MAGIC, Progress
from costmeter._report_totals import Prices, Totals

__all__ = ["available", "file_reports"]

_OTEL = dict(FIELD_KEYS)
_INTS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimated_input_tokens",
)
_NAMES = (
    "model",
    "response_model",
    "priced_as",
    "service_tier",
    "usage_source",
    "budget",
    "budget_key",
    "api",
)
_TIE = 1e-6  # error values this close to a rounding tie are rounded in Python
_MIN_EXPONENT = -18  # the DECIMAL(38,18) the costs are summed in


class Fallback(Exception):
    """DuckDB cannot give this file's report exactly: the Python engine reads it."""


def available() -> bool:
    """Whether duckdb can be imported (the ``duckdb`` extra)."""
    try:
        import duckdb  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _column(name: str, fields: Sequence[str]) -> str:
    """The value of field *name* (JSON text) in either key style, or NULL when not read."""
    if name not in fields:
        return "NULL"
    if _OTEL.get(name, name) == name:
        return f'jp."{name}"::VARCHAR'
    return f'(CASE WHEN o THEN jo."{_OTEL[name]}" ELSE jp."{name}" END)::VARCHAR'


def _spec(fields: Sequence[str], otel: bool, tag_key: str | None) -> str:
    """
    json_transform's structure for one key style: the keys read, as JSON text (cost and event:
    VARCHAR). Each key costs parsing time: only what the report needs is listed. The plain
    style's also reads the otel style's mark, to tell the styles apart.
    """
    spec: dict[str, Any] = {}
    for name in fields:
        key = _OTEL.get(name, name) if otel else name
        spec[key] = "VARCHAR" if name in ("cost_usd", "event") else "JSON"
    if not otel:
        spec[OTEL_MARK] = "JSON"
    if tag_key is not None:
        if otel:
            spec[OTEL_TAG_PREFIX + tag_key] = "JSON"
        else:
            spec["tags"] = {tag_key: "JSON"}
    return _q(json.dumps(spec))


def _fields(bys: Sequence[str], need_time: bool, refused: bool) -> list[str]:
    """The fields a report with these groupings reads (as `_report._wanted`)."""
    fields = ["event", *_INTS, *_NAMES[:5], "cost_usd"]
    fields += [by for by in ("budget_key", "api") if by in bys]
    if refused:
        fields += ["budget", "refused"]
    if need_time:
        fields.append("timestamp")
    return fields


def _ints_ok(values: Sequence[str]) -> str:
    """All of *values* JSON integers (of at most 18 digits) or null: one regex on them all."""
    return f"regexp_full_match(concat_ws(',', {', '.join(values)}), '(-?[0-9]{{1,18}}(,-?[0-9]{{1,18}})*)?')"


def _name_ok(value: str) -> str:
    """A JSON string without escapes, or null."""
    return f"({value} IS NULL OR (starts_with({value}, '\"') AND NOT contains({value}, '\\')))"


def _text(value: str) -> str:
    """The string of a JSON string checked by `_name_ok` (no escapes: strip the quotes)."""
    return f"{value}[2:-2]"


def _source(path: str, gzip: bool) -> str:
    compression = "gzip" if gzip else "none"
    return (
        f"read_csv({_q(path)}, columns={{'line': 'VARCHAR'}}, delim='\x01', quote='', "
        "escape='', header=false, auto_detect=false, strict_mode=true, "
        f"max_line_size=1073741824, compression='{compression}')"
    )


def _cost_text(key: str) -> str:
    """The text of the number after the first ``"key":`` (or ``"key": ``) in the line."""
    pattern = '"' + key.replace(".", "\\.") + '": ?([0-9][0-9.eE+-]*)[,}]'
    return f"regexp_extract(line, {_q(pattern)}, 1)"


def _rows_sql(
    path: str,
    gzip: bool,
    bys: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    refusals: bool,
) -> str:
    """Every line with its class (``blank``, ``other``, an event name, ``call``, ``odd``)."""
    tag_key = next((by[4:] for by in bys if by.startswith("tag:")), None)
    need_time = since is not None or until is not None or any(b in ("day", DAY_MODEL) for b in bys)
    refused = refusals or "budget" in bys
    fields = _fields(bys, need_time, refused)
    checks = [_ints_ok([f"v_{name}" for name in _INTS])]
    checks += [_name_ok(f"v_{name}") for name in _NAMES[:4]]
    checks += [_name_ok(f"v_{by}") for by in ("budget", "budget_key", "api") if by in bys]
    # the cost's text in the line is the one DuckDB read, a plain non-negative number: then the
    # DECIMAL made of that text is what Python reads
    checks.append(f"(c IS NULL OR (raw != '' AND exponent >= {_MIN_EXPONENT}))")
    if tag_key is not None:
        checks.append(f"(tag IN ('true', 'false') OR {_name_ok('tag')} OR {_ints_ok(['tag'])})")
    if need_time:
        checks.append(
            "(ts IS NULL OR (regexp_full_match(ts, "
            "'\"\\d{4}-\\d\\d-\\d\\dT([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{6})?(Z|\\+00:00)?\"')"
            " AND when_ IS NOT NULL))"
        )
    values = ",\n".join(f"{_column(name, fields)} AS v_{name}" for name in (*_INTS, *_NAMES))
    tag = "NULL"
    if tag_key is not None:
        tag = f'(CASE WHEN o THEN jo."{OTEL_TAG_PREFIX + tag_key}" ELSE jp.tags."{tag_key}" END)::VARCHAR'
    other_kind_ok = "true"
    if refused:
        other_kind_ok = f"(ev != '{EXCEEDED}' OR {_name_ok('v_budget')})"
    return f"""
SELECT *, CASE
    WHEN jp IS NULL OR (o AND jo IS NULL) THEN
        CASE WHEN line IS NULL OR trim(line, ' \t\r\x0b\x0c') = '' THEN 'blank'
             WHEN contains(line, 'costmeter.') THEN 'odd' ELSE 'other' END
    WHEN NOT starts_with(ev, 'costmeter.') OR ev IS NULL THEN 'other'
    WHEN NOT contains(line, 'costmeter.') THEN 'odd'
    WHEN ev = '{CALL}' THEN CASE WHEN {" AND ".join(checks)} THEN 'call' ELSE 'odd' END
    WHEN {other_kind_ok} THEN ev ELSE 'odd' END AS cls
FROM (
    SELECT *,
        CASE WHEN NOT (contains(raw, 'e') OR contains(raw, 'E')) THEN
                 CASE WHEN contains(raw, '.') THEN strpos(raw, '.') - length(raw) ELSE 0 END
             ELSE try_cast(regexp_extract(raw, '[eE]([+-]?[0-9]+)', 1) AS INTEGER)
                  - length(regexp_extract(raw, '\\.([0-9]*)', 1)) END AS exponent,
        CASE WHEN ts IS NOT NULL THEN
            try_cast(replace(rtrim(ts[2:-2], 'Z'), '+00:00', '') AS TIMESTAMP) END AS when_
    FROM (
        SELECT *, {_column("cost_usd", fields)} AS c, jp.event AS ev,
            CASE WHEN {_column("cost_usd", fields)} IS NULL THEN NULL
                 WHEN o THEN {_cost_text(_OTEL["cost_usd"])} ELSE {_cost_text("cost_usd")} END
                 AS raw,
            {_column("timestamp", fields)} AS ts, {_column("refused", fields)} AS refused,
            {values}, {tag} AS tag
        FROM (
            SELECT *, CASE WHEN o THEN try(json_transform(line, {_spec(fields, True, tag_key)}))
                      END AS jo
            FROM (
                SELECT *, coalesce(jp."{OTEL_MARK}" IS NOT NULL OR (jp.input_tokens IS NULL
                    AND starts_with(jp.event, 'costmeter.')
                    AND contains(line, '"{OTEL_MARK}":')), false) AS o
                FROM (
                    SELECT line, CASE WHEN ascii(line) = 123
                        THEN try(json_transform(line, {_spec(fields, False, tag_key)})) END AS jp
                    FROM {_source(path, gzip)}
                )
            )
        )
    )
)"""


def _key_sql(by: str) -> str:
    model = (
        f"coalesce(nullif({_text('v_model')}, ''), nullif({_text('v_response_model')}, ''),"
        " '(unknown)')"
    )
    day = "CASE WHEN ts IS NULL THEN '(no timestamp)' ELSE ts[2:11] END"
    if by == "model":
        return model
    if by == "day":
        return day
    if by == DAY_MODEL:
        return f"{day} || ' ' || {model}"
    if by in ("budget", "budget_key", "api"):
        empty = "(unknown)" if by == "api" else "(none)"
        return f"coalesce(nullif({_text('v_' + by)}, ''), '{empty}')"
    if by.startswith("tag:"):
        return (
            "CASE WHEN tag IS NULL THEN '(untagged)' WHEN tag = 'true' THEN 'True' "
            f"WHEN tag = 'false' THEN 'False' WHEN starts_with(tag, '\"') THEN {_text('tag')} "
            "ELSE tag END"
        )
    return "'TOTAL'"


def _window_sql(since: datetime | None, until: datetime | None) -> str:
    """The class of a call: ``in``, ``out`` (outside the window) or ``none`` (no timestamp)."""
    if since is None and until is None:
        return "'in'"
    bounds = []
    for when, op in ((since, "<"), (until, ">=")):
        if when is not None:
            naive = when.astimezone(timezone.utc).replace(tzinfo=None)
            bounds.append(f"when_ {op} TIMESTAMP '{naive.isoformat(sep=' ')}'")
    return f"CASE WHEN ts IS NULL THEN 'none' WHEN {' OR '.join(bounds)} THEN 'out' ELSE 'in' END"


_GRAIN = ("cls", "w", "rb", "name", "tier", "cached", "unpriced", "estimated", "bucket", "tie")
_SUMS = ("n", *(f"s_{name}" for name in _INTS[:5]), "cost", "exponent", "low", "high", "err")


def _report_sql(
    rows: str, bys: Sequence[str], since: datetime | None, until: datetime | None, refusals: bool
) -> str:
    """
    One scan, one GROUP BY: per line class, window, grouping keys, pricing identity (cached
    calls), flags and estimate-error bucket; `_collect` adds the groups up per grouping.
    """
    refused = "true" if refusals or "budget" in bys else "false"
    keys = ", ".join(
        f"CASE WHEN w = 'in' THEN {_key_sql(by)} END AS k{i}" for i, by in enumerate(bys)
    )
    inp = "coalesce(i_input_tokens, 0)"
    sums = ", ".join(f"sum(i_{name})" for name in _INTS[:5])
    typed = ", ".join(
        f"CASE WHEN cls = 'call' THEN v_{name}::BIGINT END AS i_{name}" for name in _INTS
    )
    grain = ", ".join([*_GRAIN, *(f"k{i}" for i in range(len(bys)))])
    when_cached = "w = 'in' AND c IS NOT NULL AND cached"
    return f"""
SELECT {grain}, count(*), {sums}, sum(money), min(exponent),
    min({inp}), max({inp}), sum(err)
FROM (
    SELECT *,
        CASE WHEN acc AND abs(scaled - floor(scaled) - 0.5) >= {_TIE} THEN
            (CASE WHEN scaled - floor(scaled) < 0.5 THEN floor(scaled) ELSE floor(scaled) + 1 END
             * CASE WHEN err < 100 THEN 1 ELSE -1 END
             - CASE WHEN err < 100 THEN 0 ELSE 1 END)::BIGINT END AS bucket,
        CASE WHEN acc AND abs(scaled - floor(scaled) - 0.5) < {_TIE} THEN err END AS tie
    FROM (
        SELECT *, CASE WHEN err < 100 THEN err * 100.0::DOUBLE ELSE err END AS scaled
        FROM (
            SELECT *, CASE WHEN acc THEN abs(i_estimated_input_tokens - {inp})::DOUBLE
                           * 100.0::DOUBLE / {inp}::DOUBLE END AS err
            FROM (
                SELECT *, {keys},
                    CASE WHEN {when_cached}
                         THEN coalesce(nullif(v_priced_as, '""'), nullif(v_response_model, '""'),
                                       nullif(v_model, '""')) END AS name,
                    CASE WHEN {when_cached} THEN v_service_tier END AS tier,
                    coalesce(w = 'in' AND c IS NULL, false) AS unpriced,
                    coalesce(w = 'in' AND v_usage_source = '"estimated"', false) AS estimated,
                    coalesce(w = 'in' AND v_usage_source = '"reported"' AND {inp} > 0
                             AND i_estimated_input_tokens IS NOT NULL, false) AS acc,
                    CASE WHEN {refused} AND cls = '{EXCEEDED}' AND refused = 'true'
                         THEN coalesce(nullif({_text("v_budget")}, ''), '(none)') END AS rb
                FROM (
                    SELECT *, CASE WHEN cls = 'call' THEN {_window_sql(since, until)} END AS w,
                        coalesce(i_cached_input_tokens != 0, false) AS cached,
                        CASE WHEN cls = 'call' AND c IS NOT NULL THEN raw::DECIMAL(38,18) END
                            AS money
                    FROM (SELECT *, {typed} FROM ({rows}))
                )
            )
        )
    )
)
GROUP BY ALL"""


def _name(text: str | None) -> str | None:
    return None if text is None else text[1:-1]  # a JSON string without escapes


def _bucket(bucket: int | None, tie: float | None) -> float:
    """The key of an error in `Totals.accuracy_hist`, as `Totals.add` computes it."""
    if tie is not None:
        return round(tie, 2) if tie < 100 else float(round(tie))
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


def _odd_lines(con: Any, rows: str) -> Iterator[bytes]:
    """The odd lines, streamed as their original bytes (constant memory)."""
    cursor = con.execute(f"SELECT line FROM ({rows}) WHERE cls = 'odd'")
    while batch := cursor.fetchmany(8192):
        for (line,) in batch:
            yield line.encode("utf-8")


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

    try:
        with open(name, "rb") as fh:
            gzip = fh.read(2) == GZIP_MAGIC
    except OSError:
        raise Fallback(name) from None  # the Python engine says what is wrong with it
    rows = _rows_sql(name, gzip, bys, since, until, refusals)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        # progress is measured (shown by `_run`, on stderr, like the Python engine's), not printed
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        try:
            found = _run(con, _report_sql(rows, bys, since, until, refusals), name)
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
    width = len(_GRAIN)
    with money_math():
        for row in found:
            cls, w, budget, name, tier, cached, unpriced, estimated, bucket, tie = row[:width]
            keys = row[width : width + len(reports)]
            stats = dict(zip(_SUMS, row[width + len(reports) :], strict=True))
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
    Cached tokens priced as *name* in *tier*, at its cache discount (as `Totals.add`, which
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
