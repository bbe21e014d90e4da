"""
The SQL of the DuckDB engine (`costmeter._report_duckdb`): `rows_sql` classifies every line of
a file (``blank``, ``other``, an event name, ``call`` or ``odd``) with the checks that prove a
call reads the same as in Python; `report_sql` groups the calls in one scan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from costmeter._report import DAY_MODEL
from costmeter._report_decode import (
    CALL,
    EXCEEDED,
    FIELD_KEYS,
    INT_FIELDS,
    OTEL_MARK,
    OTEL_TAG_PREFIX,
)
from costmeter._report_totals import TIE  # error values this close to a tie: Python rounds

__all__ = ["GRAIN", "INTS", "SUMMED", "SUMS", "report_sql", "rows_sql"]

_OTEL = dict(FIELD_KEYS)
#: The token counts read, in record order (``estimated_input_tokens`` last); all but it summed.
INTS = tuple(name for name, _ in FIELD_KEYS if name in INT_FIELDS)
SUMMED = tuple(name for name in INTS if name != "estimated_input_tokens")
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
_MIN_EXPONENT = -18  # the DECIMAL(38,18) the costs are summed in


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
    fields = ["event", *INTS, *_NAMES[:5], "cost_usd"]
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
        f"max_line_size=2097152, compression='{compression}')"
    )


def _cost_text(key: str) -> str:
    """The text of the number after the first ``"key":`` (or ``"key": ``) in the line."""
    pattern = '"' + key.replace(".", "\\.") + '": ?([0-9][0-9.eE+-]*)[,}]'
    return f"regexp_extract(line, {_q(pattern)}, 1)"


def rows_sql(
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
    checks = [_ints_ok([f"v_{name}" for name in INTS])]
    checks += [_name_ok(f"v_{name}") for name in _NAMES[:4]]
    checks += [_name_ok(f"v_{by}") for by in ("budget", "budget_key", "api") if by in bys]
    # the cost's own text, taken from the line, is a plain non-negative number (of at most 18
    # decimals): the DECIMAL made of it is the Decimal Python reads
    checks.append(f"(c IS NULL OR (raw != '' AND exponent >= {_MIN_EXPONENT}))")
    if tag_key is not None:
        checks.append(f"(tag IN ('true', 'false') OR {_name_ok('tag')} OR {_ints_ok(['tag'])})")
    if need_time:
        checks.append(
            "(ts IS NULL OR (regexp_full_match(ts, "
            "'\"\\d{4}-\\d\\d-\\d\\dT([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{6})?(Z|\\+00:00)?\"')"
            " AND when_ IS NOT NULL))"
        )
    values = ",\n".join(f"{_column(name, fields)} AS v_{name}" for name in (*INTS, *_NAMES))
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


GRAIN = ("cls", "w", "rb", "name", "tier", "cached", "unpriced", "estimated", "bucket", "tie")
SUMS = ("n", *(f"s_{name}" for name in SUMMED), "cost", "exponent", "low", "high", "err")


def report_sql(
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
    sums = ", ".join(f"sum(i_{name})" for name in SUMMED)
    typed = ", ".join(
        f"CASE WHEN cls = 'call' THEN v_{name}::BIGINT END AS i_{name}" for name in INTS
    )
    grain = ", ".join([*GRAIN, *(f"k{i}" for i in range(len(bys)))])
    when_cached = "w = 'in' AND c IS NOT NULL AND cached"
    return f"""
SELECT {grain}, count(*), {sums}, sum(money), min(exponent),
    min({inp}), max({inp}), sum(err)
FROM (
    SELECT *,
        CASE WHEN acc AND abs(scaled - floor(scaled) - 0.5) >= {TIE} THEN
            (CASE WHEN scaled - floor(scaled) < 0.5 THEN floor(scaled) ELSE floor(scaled) + 1 END
             * CASE WHEN err < 100 THEN 1 ELSE -1 END
             - CASE WHEN err < 100 THEN 0 ELSE 1 END)::BIGINT END AS bucket,
        CASE WHEN acc AND abs(scaled - floor(scaled) - 0.5) < {TIE} THEN err END AS tie
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
