"""
Reading costmeter's JSON-lines logs back and adding up the money: the engine behind
``costmeter report`` (and the demo's report).

Streams every input line by line (plain, gzip, or ``-`` for stdin), so a multi-GB log is read in
constant memory; skips non-costmeter and malformed lines and counts them; sums money in
`Decimal` (numbers in the log are parsed as Decimal, never as binary floats).
"""

from __future__ import annotations

import csv
import gzip
import io
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
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costmeter._pricing import ModelPrice

__all__ = [
    "Progress",
    "Report",
    "Unreadable",
    "UsageError",
    "build_report",
    "event_time",
    "write_csv",
    "write_json",
    "write_table",
]

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_GZIP_MAGIC = b"\x1f\x8b"


class UsageError(Exception):
    """A problem with what the user gave us (exit 2)."""


class Unreadable(Exception):
    """A file could not be read (exit 3)."""

    def __init__(self, name: str, exc: BaseException) -> None:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        super().__init__(f"cannot read {name}: {detail}")


# -- report: reading -----------------------------------------------------------------------------


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

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


class _RawReader(io.RawIOBase):
    """Any binary file object as a raw stream, so `io.BufferedReader` can give it ``peek``."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
        progress = Progress(name, size, raw.tell if owned else None)
        count = 0
        try:
            for line in stream:
                count += 1
                if not count & 0x3FFF:
                    progress.tick(count)
                yield line
        except (OSError, EOFError, zlib.error) as exc:
            raise Unreadable(name, exc) from None
        finally:
            progress.done()
    finally:
        if owned:
            raw.close()


def event_time(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


class _Malformed(Exception):
    """A costmeter.call line whose fields do not have the documented types."""


def _int(event: dict[str, Any], key: str) -> int:
    value = event.get(key)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Malformed(key)


def _money(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):  # a renderer that writes Decimals as strings
        try:
            return Decimal(value)
        except ArithmeticError:
            raise _Malformed("cost_usd") from None
    raise _Malformed("cost_usd")


def _from_otel(event: dict[str, Any]) -> dict[str, Any]:
    """Undo `otel_genai_keys` so logs written with it report the same."""
    from costmeter._logging import _OTEL_RENAMES  # noqa: PLC0415

    plain: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    reverse = {otel: key for key, otel in _OTEL_RENAMES.items()}
    for key, value in event.items():
        if key in reverse:
            plain[reverse[key]] = value
        elif key.startswith("costmeter.tags."):
            tags[key[len("costmeter.tags.") :]] = value
        elif key.startswith("costmeter."):
            plain[key[len("costmeter.") :]] = value
        else:
            plain.setdefault(key, value)
    if tags:
        plain["tags"] = tags
    return plain


# -- report: adding up ---------------------------------------------------------------------------


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
    saved_usd: Decimal = _ZERO
    saved_unknown_calls: int = 0
    accuracy_calls: int = 0
    accuracy_sum: float = 0.0
    # |error| in percent, bucketed to 0.01 pp below 100 % (1 pp above): bounded memory.
    accuracy_hist: Counter[float] = field(default_factory=Counter)

    def add(self, call: _Call) -> None:
        self.calls += 1
        self.input_tokens += call.input_tokens
        self.cached_input_tokens += call.cached_input_tokens
        self.cache_write_input_tokens += call.cache_write_input_tokens
        self.output_tokens += call.output_tokens
        self.reasoning_tokens += call.reasoning_tokens
        if call.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += call.cost_usd
        if call.estimated_usage:
            self.estimated_usage_calls += 1
        if call.saved_usd is not None:
            self.saved_usd += call.saved_usd
        elif call.cached_input_tokens:
            self.saved_unknown_calls += 1
        if call.error_pct is not None:
            self.accuracy_calls += 1
            self.accuracy_sum += call.error_pct
            bucket = (
                round(call.error_pct, 2) if call.error_pct < 100 else float(round(call.error_pct))
            )
            self.accuracy_hist[bucket] += 1

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


@dataclass(slots=True)
class _Call:
    input_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal | None
    estimated_usage: bool
    saved_usd: Decimal | None
    error_pct: float | None


class _Prices:
    """`price_of` with a cache; unknown models are remembered as ``None``."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None], ModelPrice | None] = {}

    def saved(self, event: dict[str, Any], cached: int, input_tokens: int) -> Decimal | None:
        model = event.get("priced_as") or event.get("response_model") or event.get("model")
        tier = event.get("service_tier")
        if not isinstance(model, str) or not model:
            return None
        key = (model, tier if isinstance(tier, str) else None)
        if key not in self._cache:
            from costmeter._errors import CostmeterError  # noqa: PLC0415
            from costmeter._pricing import price_of  # noqa: PLC0415

            try:
                self._cache[key] = price_of(key[0], service_tier=key[1])
            except CostmeterError:
                self._cache[key] = None
        price = self._cache[key]
        if price is None:
            return None
        rates = price.for_input(input_tokens)
        return cached * (rates.input_per_mtok - rates.cached_input_per_mtok) / _MILLION


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


def _group_of(by: str, event: dict[str, Any], when: datetime | None) -> str:
    if by == "model":
        return str(event.get("model") or event.get("response_model") or "(unknown)")
    if by == "day":
        return (
            "(no timestamp)" if when is None else when.astimezone(timezone.utc).date().isoformat()
        )
    if by == "budget":
        return str(event.get("budget") or "(none)")
    if by == "api":
        return str(event.get("api") or "(unknown)")
    if by.startswith("tag:"):
        tags = event.get("tags")
        value = tags.get(by[4:]) if isinstance(tags, dict) else None
        return "(untagged)" if value is None else str(value)
    return "TOTAL"


def _call_of(event: dict[str, Any], prices: _Prices) -> _Call:
    input_tokens = _int(event, "input_tokens")
    cached = _int(event, "cached_input_tokens")
    source = event.get("usage_source")
    estimated = _int(event, "estimated_input_tokens")
    error_pct = None
    if (
        source == "reported"
        and input_tokens > 0
        and event.get("estimated_input_tokens") is not None
    ):
        error_pct = abs(estimated - input_tokens) * 100.0 / input_tokens
    cost = _money(event.get("cost_usd"))
    saved: Decimal | None = _ZERO
    if cached:  # an unpriced call (cost null) has no savings either: its price was unknown
        saved = None if cost is None else prices.saved(event, cached, input_tokens)
    return _Call(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_input_tokens=_int(event, "cache_write_input_tokens"),
        output_tokens=_int(event, "output_tokens"),
        reasoning_tokens=_int(event, "reasoning_tokens"),
        cost_usd=cost,
        estimated_usage=source == "estimated",
        saved_usd=saved,
        error_pct=error_pct,
    )


def build_report(
    files: Sequence[str], by: str, since: datetime | None, until: datetime | None
) -> Report:
    report = Report(by=by)
    prices = _Prices()
    need_time = since is not None or until is not None or by == "day"
    decode = json.JSONDecoder(parse_float=Decimal).decode  # money stays exact: Decimal, not float
    for name in files:
        for line in _read_lines(name):
            report.lines += 1
            if b"costmeter." not in line:
                if line.strip():
                    report.other_lines += 1
                continue
            try:
                event = decode(line.decode("utf-8"))
            except ValueError:  # also UnicodeDecodeError
                report.malformed_lines += 1
                continue
            if not isinstance(event, dict):
                report.malformed_lines += 1
                continue
            name_of_event = event.get("event")
            if name_of_event != "costmeter.call":
                if isinstance(name_of_event, str) and name_of_event.startswith("costmeter."):
                    report.other_events[name_of_event] += 1
                else:
                    report.other_lines += 1
                continue
            if "gen_ai.usage.input_tokens" in event:
                event = _from_otel(event)
            when = event_time(event.get("timestamp")) if need_time else None
            if since is not None or until is not None:
                if when is None:
                    report.no_timestamp += 1
                    continue
                if (since is not None and when < since) or (until is not None and when >= until):
                    report.out_of_range += 1
                    continue
            try:
                call = _call_of(event, prices)
            except _Malformed:
                report.malformed_lines += 1
                continue
            report.total.add(call)
            if by != "none":
                key = _group_of(by, event, when)
                group = report.groups.get(key)
                if group is None:
                    group = report.groups[key] = _Totals()
                group.add(call)
    return report


# -- report: output ------------------------------------------------------------------------------

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
