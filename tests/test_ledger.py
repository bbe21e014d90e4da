"""
Persistent budgets (issue 8): SQLite and Redis ledgers, calendar windows, leases, ledger outages.

Every behaviour test runs against both real backends: a SQLite file in a temp dir, and a real
``redis-server`` started by the `redis_url` fixture on a free loopback port (skipped, with a
message, only when redis-server is not installed and ``CI`` is unset).

The multi-process tests start one `FakeOpenAI` here and run worker processes (plain
subprocesses of this interpreter) against it, all sharing one budget through the ledger and
logging to one JSON-lines file. As in ``test_concurrency.py``, the prompt tokenizes locally to
more than the fake bills, and each call is billed its full ``max_output_tokens``, so the
reserved worst case is a true upper bound and tight on the output side.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter import BudgetExceededError, ConfigurationError, LedgerError
from costmeter._budget import Reservation
from costmeter._ledger import open_ledger
from costmeter._windows import window_end, window_key
from costmeter.cli import main
from costmeter.testing import FakeOpenAI

from .helpers import calls, money

MODEL = "gpt-4.1-mini"
MAX_OUTPUT = 200
PROMPT = "a1 b2 c3 d4 e5 f6 g7 h8 i9 j0 k1 l2 m3 n4 o5 p6"
HEADERS = {"x-fake-output-tokens": str(MAX_OUTPUT)}
PROCESSES = 8
CALLS_EACH = 50


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    """A settable Unix time, injected into budgets instead of sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- backends ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[str]:
    """A real redis-server on a free loopback port, in a temp dir, for this module."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed, and CI is set: .ci/run should install it")
        pytest.skip("redis-server not installed (apt-get install redis-server); CI runs these")
    with tempfile.TemporaryDirectory() as workdir:
        for _attempt in range(3):
            port = _free_port()
            process = subprocess.Popen(
                [
                    *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir),
                    *("--save", "", "--appendonly", "no", "--protected-mode", "yes"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                        conn.sendall(b"PING\r\n")
                        if conn.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    time.sleep(0.02)
            if process.poll() is None:
                break
        else:
            pytest.fail("could not start redis-server")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budgets.db'}"
    url: str = request.getfixturevalue("redis_server")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


def _raw(url: str, name: str, window: str = "total") -> Any:
    """The stored state, without expiring anything (what the ledger itself holds)."""
    return open_ledger(url).read(name, window)


# -- behaviour of one budget on a shared ledger --------------------------------------------------


class TestSharedLedger:
    def test_reserve_settle_seen_by_every_budget_object(self, ledger_url: str) -> None:
        """Two Budget objects with one name and ledger (as in two processes) share the books."""
        first = costmeter.budget("1", name="team", ledger=ledger_url)
        second = costmeter.budget("1", name="team", ledger=ledger_url)

        held = Reservation.take((first,), Decimal("0.3"), "gpt-5")
        assert Decimal("0.3") == second.reserved_usd
        assert Decimal("0.7") == second.remaining_usd
        held.settle(Decimal("0.125"))

        assert Decimal("0.125") == second.spent_usd
        assert Decimal(0) == second.reserved_usd
        assert 1 == second.calls
        assert {"gpt-5": Decimal("0.125")} == second.by_model

    def test_refusal_counts_and_holds_nothing(self, ledger_url: str) -> None:
        """A call the shared budget cannot cover is refused, counted, and reserves nothing."""
        first = costmeter.budget("0.10", name="tight", ledger=ledger_url)
        second = costmeter.budget("0.10", name="tight", ledger=ledger_url)
        Reservation.take((first,), Decimal("0.06"), "m")

        with pytest.raises(BudgetExceededError) as info:
            Reservation.take((second,), Decimal("0.06"), "m")

        assert Decimal("0.06") == info.value.reserved_usd
        assert "tight" == info.value.budget_name
        assert 1 == first.refused
        assert Decimal("0.06") == first.reserved_usd

    def test_nested_refusal_releases_holds_in_other_ledgers(self, ledger_url: str) -> None:
        """An inner budget refusing gives back what the outer persistent budget held."""
        outer = costmeter.budget("5", name="outer", ledger=ledger_url)
        inner = costmeter.budget("0.01")

        with pytest.raises(BudgetExceededError):
            Reservation.take((outer, inner), Decimal("0.02"), "m")

        assert Decimal(0) == outer.reserved_usd
        assert Decimal(0) == _raw(ledger_url, "outer").reserved

    def test_concurrent_reservations_never_overshoot(self, ledger_url: str) -> None:
        """16 threads, each with its own Budget object on the ledger: exactly what fits is held."""
        admitted: list[Reservation] = []

        def reserve() -> None:
            own = costmeter.budget("1", name="race", ledger=ledger_url)
            for _ in range(10):
                with contextlib.suppress(BudgetExceededError):
                    admitted.append(Reservation.take((own,), Decimal("0.03"), "m"))

        threads = [threading.Thread(target=reserve) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        stored = _raw(ledger_url, "race")
        assert 33 == len(admitted) == len(stored.holds)
        assert Decimal("0.99") == stored.reserved
        assert 160 - 33 == stored.refused

    def test_thresholds_announced_once_across_budget_objects(self, ledger_url: str) -> None:
        """Each warn_at fraction is crossed once per window, whichever process crosses it."""
        a = costmeter.budget("1", name="warned", ledger=ledger_url, warn_at=(0.5, 0.9))
        b = costmeter.budget("1", name="warned", ledger=ledger_url, warn_at=(0.5, 0.9))

        seen = []
        for budget_obj, amount in ((a, "0.3"), (b, "0.3"), (a, "0.1"), (b, "0.25")):
            held = Reservation.take((budget_obj,), Decimal(amount), "m")
            seen.append([fraction for _, fraction in held.settle(Decimal(amount))])

        assert [[], [Decimal("0.5")], [], [Decimal("0.9")]] == seen

    def test_warn_mode_lets_the_call_through(self, ledger_url: str) -> None:
        """on_exceed='warn' holds the worst case anyway and reports what it would have refused."""
        b = costmeter.budget("0.05", name="soft", ledger=ledger_url, on_exceed="warn")

        held = Reservation.take((b,), Decimal("0.06"), "m")

        assert 1 == len(held.warned)
        assert Decimal("0.06") == b.reserved_usd

    def test_reset_forgets_every_window(self, ledger_url: str) -> None:
        """Budget.reset() starts the shared budget over; a call still in flight charges after."""
        b = costmeter.budget("1", name="again", ledger=ledger_url)
        Reservation.take((b,), Decimal("0.2"), "m").settle(Decimal("0.2"))
        in_flight = Reservation.take((b,), Decimal("0.3"), "m")

        b.reset()
        assert (Decimal(0), Decimal(0)) == (b.spent_usd, b.reserved_usd)
        in_flight.settle(Decimal("0.1"))

        assert Decimal("0.1") == b.spent_usd

    def test_persistent_budget_needs_a_name(self, ledger_url: str) -> None:
        """Processes find a shared budget by name: an unnamed one is a configuration error."""
        with pytest.raises(ConfigurationError, match="needs a name"):
            costmeter.budget("1", ledger=ledger_url)


class TestLeases:
    def test_dead_hold_released_on_next_operation(self, ledger_url: str) -> None:
        """A hold past its lease is ignored by readers and dropped by the next write."""
        clock = Clock(_utc("2026-03-01T10:00:00"))
        dead = costmeter.budget("1", name="lease", ledger=ledger_url, lease_seconds=30, clock=clock)
        alive = costmeter.budget(
            "1", name="lease", ledger=ledger_url, lease_seconds=30, clock=clock
        )
        Reservation.take((dead,), Decimal("0.9"), "m")  # never settled: its process "died"
        with pytest.raises(BudgetExceededError):
            Reservation.take((alive,), Decimal("0.2"), "m")

        clock.now += 31
        assert Decimal(0) == alive.reserved_usd
        assert Decimal("0.9") == _raw(ledger_url, "lease").reserved  # not yet written back
        Reservation.take((alive,), Decimal("0.2"), "m").settle(Decimal("0.15"))

        assert 0 == len(_raw(ledger_url, "lease").holds)
        assert Decimal("0.15") == alive.spent_usd

    def test_settle_after_expiry_still_charges(self, ledger_url: str) -> None:
        """A call slower than its lease loses its hold, never its charge."""
        clock = Clock(_utc("2026-03-01T10:00:00"))
        b = costmeter.budget("1", name="slow", ledger=ledger_url, lease_seconds=5, clock=clock)
        held = Reservation.take((b,), Decimal("0.5"), "m")

        clock.now += 60
        held.settle(Decimal("0.4"))

        assert (Decimal("0.4"), Decimal(0), 1) == (b.spent_usd, b.reserved_usd, b.calls)

    def test_lease_must_be_positive(self) -> None:
        """A zero or negative lease would expire every hold at once."""
        with pytest.raises(ConfigurationError, match="lease_seconds"):
            costmeter.budget("1", lease_seconds=0)


class TestWindows:
    def test_day_rolls_over_at_utc_midnight(self, ledger_url: str) -> None:
        """A new day starts from zero; the old one stays in the ledger under its own key."""
        clock = Clock(_utc("2026-03-01T23:59:30"))
        b = costmeter.budget("1", name="daily", ledger=ledger_url, window="1d", clock=clock)
        Reservation.take((b,), Decimal("0.6"), "m").settle(Decimal("0.6"))
        yesterday = b.window_key

        clock.now += 60
        assert (Decimal(0), Decimal(1)) == (b.spent_usd, b.remaining_usd)
        Reservation.take((b,), Decimal("0.9"), "m").settle(Decimal("0.5"))

        assert "day:2026-03-01T00:00+00:00" == yesterday
        assert "day:2026-03-02T00:00+00:00" == b.window_key
        assert Decimal("0.6") == _raw(ledger_url, "daily", yesterday).spent
        assert Decimal("0.5") == b.spent_usd

    def test_call_spanning_midnight_charged_where_it_was_admitted(self, ledger_url: str) -> None:
        """The worst case was reserved in the old window, so the actual cost lands there."""
        clock = Clock(_utc("2026-03-01T23:59:59"))
        b = costmeter.budget("1", name="span", ledger=ledger_url, window="day", clock=clock)
        held = Reservation.take((b,), Decimal("0.5"), "m")
        admitted_in = b.window_key

        clock.now += 5
        held.settle(Decimal("0.25"))

        assert Decimal(0) == b.spent_usd
        old = _raw(ledger_url, "span", admitted_in)
        assert (Decimal("0.25"), Decimal(0)) == (old.spent, old.reserved)

    def test_hour_and_month_windows(self, ledger_url: str) -> None:
        """Hourly and monthly budgets roll over at the hour and at the first of the month."""
        clock = Clock(_utc("2026-12-31T23:30:00"))
        hourly = costmeter.budget("1", name="h", ledger=ledger_url, window="hour", clock=clock)
        monthly = costmeter.budget("1", name="mo", ledger=ledger_url, window="month", clock=clock)
        Reservation.take((hourly, monthly), Decimal("0.1"), "m").settle(Decimal("0.1"))

        clock.now += 1800
        assert (Decimal(0), Decimal(0)) == (hourly.spent_usd, monthly.spent_usd)
        assert "month:2027-01-01T00:00+00:00" == monthly.window_key
        clock.now -= 1
        assert (Decimal("0.1"), Decimal("0.1")) == (hourly.spent_usd, monthly.spent_usd)

    def test_time_zone_boundaries(self) -> None:
        """tz= moves the boundaries: 03:00 UTC is still the previous day in New York."""
        new_york = ZoneInfo("America/New_York")
        now = _utc("2026-11-27T03:00:00")

        assert "day:2026-11-26T00:00-05:00" == window_key("day", now, new_york)
        assert "day:2026-11-27T00:00+00:00" == window_key("day", now)
        assert _utc("2026-11-27T05:00:00") == window_end("day", now, new_york)
        assert _utc("2026-12-01T05:00:00") == window_end("month", now, new_york)
        assert window_end(None, now) is None

    def test_repeated_dst_hour_is_two_windows(self) -> None:
        """01:00-02:00 happens twice when New York leaves DST: two hourly windows, not one."""
        new_york = ZoneInfo("America/New_York")
        first = window_key("hour", _utc("2026-11-01T05:30:00"), new_york)
        second = window_key("hour", _utc("2026-11-01T06:30:00"), new_york)

        assert "hour:2026-11-01T01:00-04:00" == first
        assert "hour:2026-11-01T01:00-05:00" == second
        assert _utc("2026-11-01T07:00:00") == window_end("hour", _utc("2026-11-01T06:30"), new_york)

    def test_long_day_across_dst_change(self) -> None:
        """The day New York leaves DST lasts 25 hours, and its window does too."""
        new_york = ZoneInfo("America/New_York")
        now = _utc("2026-11-01T12:00:00")

        assert "day:2026-11-01T00:00-04:00" == window_key("day", now, new_york)
        assert _utc("2026-11-02T05:00:00") == window_end("day", now, new_york)

    @pytest.mark.parametrize(("window", "tz"), [("week", None), ("1d", "Mars/Olympus")])
    def test_bad_window_or_zone(self, window: str, tz: str | None) -> None:
        """Unknown windows and time zones are configuration errors naming the value."""
        with pytest.raises(ConfigurationError, match=r"Olympus|week"):
            costmeter.budget("1", window=window, tz=tz)


# -- ledger unavailable --------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fresh loopback server per test."""
    with FakeOpenAI() as fake:
        yield fake


def _client(server: FakeOpenAI) -> costmeter.OpenAI:
    return costmeter.OpenAI(api_key="k", base_url=server.base_url, max_retries=0)


def _dead_redis_url() -> str:
    return f"redis://:s3cret@127.0.0.1:{_free_port()}/0"


class TestAsyncClients:
    async def test_ledger_io_stays_off_the_event_loop(
        self, ledger_url: str, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An async call's reserve and settle on SQLite/Redis run in a worker thread."""
        budget = costmeter.budget("5", name="async", ledger=ledger_url)
        threads: list[int] = []
        transact = budget._ledger.transact

        def spy(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return transact(*args, **kwargs)

        monkeypatch.setattr(budget._ledger, "transact", spy)
        client = costmeter.AsyncOpenAI(api_key="k", base_url=server.base_url, max_retries=0)

        with capture_logs() as logs:
            async with budget:
                await client.responses.create(model=MODEL, input="hi", max_output_tokens=50)

        assert 2 <= len(threads)  # reserve, settle
        assert threading.get_ident() not in threads
        assert budget.spent_usd == money(calls(logs)[0]["cost_usd"])


class TestLedgerUnavailable:
    def test_redis_down_fails_closed(self, server: FakeOpenAI) -> None:
        """Redis unreachable: LedgerError names the ledger (not its password); nothing is sent."""
        url = _dead_redis_url()
        with costmeter.budget("5", name="fleet", ledger=url, ledger_timeout=0.5):
            with pytest.raises(LedgerError) as info:
                _client(server).responses.create(model=MODEL, input="hi", max_output_tokens=50)

        assert "redis://:***@127.0.0.1" in str(info.value)
        assert "s3cret" not in str(info.value)
        assert "fleet" in str(info.value)
        assert 0 == server.calls

    def test_sqlite_locked_beyond_timeout_fails_closed(
        self, tmp_path: Path, server: FakeOpenAI
    ) -> None:
        """Another writer holding the file past ledger_timeout: refused, named, not sent."""
        url = f"sqlite:///{tmp_path / 'b.db'}"
        b = costmeter.budget("5", name="local", ledger=url, ledger_timeout=0.1)
        assert Decimal(0) == b.spent_usd  # creates the file and table
        blocker = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with b, pytest.raises(LedgerError, match=r"sqlite:///.*b\.db.*locked"):
                _client(server).responses.create(model=MODEL, input="hi", max_output_tokens=50)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        assert 0 == server.calls

    def test_allow_fails_open_with_warning(self, server: FakeOpenAI) -> None:
        """on_ledger_error='allow': the call goes through and costmeter.warning says why."""
        url = _dead_redis_url()
        with capture_logs() as logs:
            with costmeter.budget(
                "5", name="fleet", ledger=url, ledger_timeout=0.5, on_ledger_error="allow"
            ):
                _client(server).responses.create(model=MODEL, input="hi", max_output_tokens=50)

        warnings = [entry for entry in logs if entry["event"] == "costmeter.warning"]
        assert ["reserve", "settle"] == [w["stage"] for w in warnings]
        assert {"ledger_unavailable"} == {w["warning"] for w in warnings}
        assert 1 == server.calls
        assert 1 == len(calls(logs))

    def test_ledger_back_before_settle_records_the_charge(self, tmp_path: Path) -> None:
        """Fail-open reserve, ledger back at settle: the spend is recorded, not lost."""
        url = f"sqlite:///{tmp_path / 'b.db'}"
        b = costmeter.budget(
            "5", name="flaky", ledger=url, ledger_timeout=0.1, on_ledger_error="allow"
        )
        assert Decimal(0) == b.spent_usd
        blocker = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with capture_logs():
            held = Reservation.take((b,), Decimal("0.5"), "m")
        blocker.execute("ROLLBACK")
        blocker.close()
        held.settle(Decimal("0.2"))

        assert (Decimal("0.2"), 1) == (b.spent_usd, b.calls)

    @pytest.mark.parametrize(
        "url", ["postgres://x/y", "sqlite://relative.db", "sqlite:///:memory:", "sqlite:///"]
    )
    def test_bad_ledger_urls(self, url: str) -> None:
        """Unknown schemes and unshareable SQLite paths are configuration errors."""
        with pytest.raises(ConfigurationError):
            costmeter.budget("1", name="x", ledger=url)


# -- many processes ------------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import json, sys
    import structlog
    import costmeter

    def drop(*_):
        raise structlog.DropEvent

    url, base_url, log_path, limit, n, lease = sys.argv[1:7]
    structlog.configure(processors=[drop])  # events go to the shared file only
    costmeter.log_to(log_path)
    client = costmeter.OpenAI(api_key="k", base_url=base_url, max_retries=0)
    shared = costmeter.budget(
        limit, name="fleet", ledger=url, window="1d", lease_seconds=float(lease)
    )
    ok = refused = 0
    with shared:
        for i in range(int(n)):
            if i == 1 and n == "2":  # the kill test: say so, then wait for the go-ahead
                print("READY", flush=True)
                sys.stdin.readline()
            try:
                client.responses.create(
                    model=%(model)r, input=%(prompt)r, max_output_tokens=%(max_output)d,
                    extra_headers=%(headers)r,
                )
                ok += 1
            except costmeter.BudgetExceededError:
                refused += 1
    print("RESULT " + json.dumps({"ok": ok, "refused": refused}), flush=True)
    """
) % {"model": MODEL, "prompt": PROMPT, "max_output": MAX_OUTPUT, "headers": HEADERS}


def _spawn(args: list[str], *, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COSTMETER_LOG_FILE": ""},
    )


def _events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "costmeter.call"]


def _worst_case() -> Decimal:
    estimate = costmeter.estimate(model=MODEL, input=PROMPT, max_output_tokens=MAX_OUTPUT)
    assert estimate.cost_usd is not None
    return estimate.cost_usd


@pytest.mark.slow
def test_processes_share_one_budget(ledger_url: str, server: FakeOpenAI, tmp_path: Path) -> None:
    """
    8 processes x 50 calls on one ledger budget: zero overshoot, the server saw exactly the
    admitted calls, and the ledger's spend is the sum of every process's events.
    """
    worst = _worst_case()
    limit = worst * 150 + worst / 3  # the cap is hit while all processes are calling
    log = tmp_path / "events.jsonl"
    args = [ledger_url, server.base_url, str(log), str(limit), str(CALLS_EACH), "600"]

    workers = [_spawn(args) for _ in range(PROCESSES)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert 0 == worker.returncode, err
        results.append(json.loads(out.rsplit("RESULT ", 1)[1]))

    shared = costmeter.budget(limit, name="fleet", ledger=ledger_url, window="1d")
    admitted = sum(r["ok"] for r in results)
    events = _events(log)
    assert PROCESSES * CALLS_EACH == admitted + sum(r["refused"] for r in results)
    assert admitted == server.calls
    assert admitted == len(events) == shared.calls
    assert 150 <= admitted < PROCESSES * CALLS_EACH
    assert shared.spent_usd <= shared.limit_usd
    assert shared.spent_usd == sum(money(e["cost_usd"]) for e in events)
    assert Decimal(0) == shared.reserved_usd
    assert PROCESSES * CALLS_EACH - admitted == shared.refused
    assert [] == server.errors


@pytest.mark.slow
def test_kill_9_mid_call_loses_no_spend(
    ledger_url: str, server: FakeOpenAI, tmp_path: Path
) -> None:
    """
    A worker SIGKILLed while its second call is in flight: its settled first call stays charged,
    and once the (short) lease has passed its hold — marked sent, since the request had left —
    is charged as spend (OpenAI billed it), not released.
    """
    log = tmp_path / "events.jsonl"
    lease = 2.0
    worker = _spawn([ledger_url, server.base_url, str(log), "5", "2", str(lease)], stdin=True)
    assert worker.stdout is not None
    assert worker.stdin is not None
    assert "READY\n" == worker.stdout.readline()
    server.delay_next(5)
    worker.stdin.write("go\n")
    worker.stdin.flush()
    window = window_key("day", time.time())
    deadline = time.monotonic() + 30
    while server.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)

    first = _events(log)
    assert 1 == len(first)
    stored = _raw(ledger_url, "fleet", window)
    assert stored.spent == money(first[0]["cost_usd"])
    assert _worst_case() == stored.reserved  # the dead process's hold, still there
    [held] = stored.holds.values()
    assert held.sent
    billed = held.amount

    later = Clock(time.time() + lease + 1)
    survivor = costmeter.budget("5", name="fleet", ledger=ledger_url, window="1d", clock=later)
    with survivor, capture_logs() as logs:
        _client(server).responses.create(
            model=MODEL, input=PROMPT, max_output_tokens=MAX_OUTPUT, extra_headers=HEADERS
        )

    stored = _raw(ledger_url, "fleet", window)
    assert {} == stored.holds
    assert stored.spent == money(first[0]["cost_usd"]) + billed + money(calls(logs)[0]["cost_usd"])
    assert 3 == stored.calls


# -- the CLI -------------------------------------------------------------------------------------


class TestCli:
    def test_show_and_reset(self, ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """show prints the current window's numbers (JSON on request); reset clears them."""
        b = costmeter.budget("2", name="cli", ledger=ledger_url, window="day")
        Reservation.take((b,), Decimal("0.5"), "gpt-5").settle(Decimal("0.25"))
        Reservation.take((b,), Decimal("0.5"), "gpt-5")

        assert 0 == main(["budget", "show", "cli", "--ledger", ledger_url, "--format", "json"])
        shown = json.loads(capsys.readouterr().out, parse_float=Decimal)
        assert 0 == main(["budget", "show", "cli", "--ledger", ledger_url, "--window", "day"])
        table = capsys.readouterr().out
        assert 0 == main(["budget", "reset", "cli", "--ledger", ledger_url])
        reset_out = capsys.readouterr().out
        assert 1 == main(["budget", "show", "cli", "--ledger", ledger_url])

        assert [b.window_key] == [w["window"] for w in shown["windows"]]
        window = shown["windows"][0]
        expected = {
            "spent_usd": "0.25",
            "reserved_usd": "0.5",
            "limit_usd": "2",
            "remaining_usd": "1.25",
            "calls": 1,
            "refused": 0,
            "by_model": {"gpt-5": "0.25"},
        }
        assert expected == {key: window[key] for key in expected}
        assert "0.25" in table
        assert b.window_key in table
        assert "1 window" in reset_out
        assert Decimal(0) == b.spent_usd

    def test_ledger_down_exit_code(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unreachable ledger exits 5 and names it; a bad URL is a usage error (2)."""
        url = _dead_redis_url()

        assert 5 == main(["budget", "show", "x", "--ledger", url, "--timeout", "0.5"])
        assert "redis://:***@127.0.0.1" in capsys.readouterr().err
        assert 2 == main(["budget", "show", "x", "--ledger", "ftp://nope"])


@pytest.mark.parametrize("attempt", range(3))
def test_many_processes_opening_a_new_sqlite_ledger_at_once(tmp_path: Path, attempt: int) -> None:
    """
    Switching a fresh file to WAL takes a lock SQLite does not wait for: 8 processes making their
    first call on a new ledger at the same instant all get through (none fails with "database
    is locked"), and the ledger holds every call.
    """
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    go = tmp_path / "go"
    script = textwrap.dedent(
        """
        import os, sys, time
        from decimal import Decimal
        import costmeter
        from costmeter._budget import Reservation

        url, go = sys.argv[1], sys.argv[2]
        while not os.path.exists(go):
            time.sleep(0.001)
        b = costmeter.budget("100", name="fresh", ledger=url)
        Reservation.take((b,), Decimal("0.01"), "m").settle(Decimal("0.01"))
        print("ok", flush=True)
        """
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(1.5)  # every interpreter started and waiting
    go.touch()
    results = [worker.communicate(timeout=60) for worker in workers]
    assert [("ok\n", "")] * 8 == [(out, err[-300:]) for out, err in results]
    assert (Decimal("0.08"), 8) == (
        costmeter.budget("100", name="fresh", ledger=url).spent_usd,
        costmeter.budget("100", name="fresh", ledger=url).calls,
    )
