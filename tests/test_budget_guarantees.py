"""
What a budget guarantees when the application, the runtime or the process misbehave.

The application's decimal context, entering one budget twice, a task cancelled while it
reserves, a process killed mid-call, garbage in a ledger, a password in a ledger URL, a bad
``warn_at``, ``fork()`` under load, inspecting a ledger that does not exist, per-user caps, and
alert callbacks. Calls go through `FakeOpenAI` over loopback; Redis cases use a real
``redis-server`` (the `redis_server` fixture of ``test_ledger``).

Prices are registered by hand so every cost is exact in two significant digits: input $0 and
output $1 per 1M tokens, so a call billed 200 output tokens costs exactly $0.0002. Its worst
case (what a budget reserves) is the estimator's business, not these tests': limits are set
from `_worst()` so that exactly the intended number of calls fits.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter import (
    BudgetAlert,
    BudgetExceededError,
    BudgetKeyMissingError,
    ConfigurationError,
    LedgerError,
)
from costmeter._budget import Reservation, settle_async, take_async
from costmeter._ledger import MemoryLedger, open_ledger
from costmeter.cli import main
from costmeter.testing import FakeOpenAI

from .test_ledger import (
    Clock,
    _client,
    _free_port,
    redis_server,  # noqa: F401  (the fixture, requested by name)
)

MODEL = "gpt-4.1-mini"
PER_CALL = Decimal("0.0002")  # 200 output tokens at $1 / 1M, input at $0
HEADERS = {"x-fake-output-tokens": "200"}


@pytest.fixture(autouse=True)
def _exact_prices() -> None:
    costmeter.register_prices({MODEL: {"input": "0", "output": "1"}})


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _call(client: costmeter.OpenAI) -> None:
    client.responses.create(model=MODEL, input="hi", max_output_tokens=200, extra_headers=HEADERS)


def _worst() -> Decimal:
    """What a budget reserves for one `_call` (the estimator's worst case, at least $0.0002)."""
    worst = costmeter.estimate(model=MODEL, input="hi", max_output_tokens=200).cost_usd
    assert worst is not None
    assert worst >= PER_CALL
    return worst


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll *check* until true or *timeout* (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _any_ledger(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str | None:
    if kind == "memory":
        return None
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'budgets.db'}"
    url: str = request.getfixturevalue("redis_server")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(params=["sqlite", "redis"])
def persistent_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger of each persistent kind."""
    url = _any_ledger(request, tmp_path, request.param)
    assert url is not None
    return url


# -- 1. the application's decimal context --------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_app_decimal_context_cannot_inflate_admission(
    kind: str, server: FakeOpenAI, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """
    prec=2 with ROUND_DOWN in the app's context: $0.01 still caps the spend of $0.0002 calls (a
    sum rounded down to 2 digits would stall at $0.010 and admit every call).
    """
    url = _any_ledger(request, tmp_path, kind)
    client = _client(server)
    refused = 0
    with decimal.localcontext() as ctx:
        ctx.prec = 2
        ctx.rounding = decimal.ROUND_DOWN
        with costmeter.budget("0.01", name="ctx", ledger=url) as b:
            for _ in range(60):
                try:
                    _call(client)
                except BudgetExceededError:
                    refused += 1

    assert 60 == server.calls + refused
    assert 1 <= refused
    assert b.spent_usd == server.calls * PER_CALL <= Decimal("0.01")


# -- 2. one budget entered twice -----------------------------------------------------------------


def test_nested_same_object_charges_once(server: FakeOpenAI) -> None:
    """``with b: with b:`` holds and charges each call once."""
    b = costmeter.budget("1", name="twice")
    with b, b:
        _call(_client(server))

    assert (1, PER_CALL) == (b.calls, b.spent_usd)


def test_same_name_on_one_ledger_charges_once(persistent_url: str, server: FakeOpenAI) -> None:
    """Two objects for one persistent budget, both active: one charge, the smaller cap applies."""
    a = costmeter.budget("1", name="shared", ledger=persistent_url)
    b = costmeter.budget("1", name="shared", ledger=persistent_url)
    with a, b:
        _call(_client(server))
    assert (1, PER_CALL) == (a.calls, a.spent_usd)

    tight = costmeter.budget(PER_CALL * 3 / 2, name="shared", ledger=persistent_url)
    with a, tight, pytest.raises(BudgetExceededError):
        _call(_client(server))  # $0.0002 spent + $0.0002 > $0.0003
    assert 1 == server.calls


# -- 3. cancellation while reserving / settling --------------------------------------------------


def _count_transactions(budget: costmeter.Budget, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    done: list[int] = []
    transact = budget._ledger.transact

    def counting(*args: Any, **kwargs: Any) -> Any:
        result = transact(*args, **kwargs)
        done.append(1)
        return result

    monkeypatch.setattr(budget._ledger, "transact", counting)
    return done


async def _cancel_while_locked(path: Path, work: Coroutine[Any, Any, Any]) -> None:
    """Run *work* in a task while another connection holds the SQLite write lock; cancel it."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        task = asyncio.create_task(work)
        await asyncio.sleep(0.2)  # the worker thread is now waiting for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_cancelled_while_reserving_releases_the_hold(
    tmp_path: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A task cancelled while its reservation waits on a locked SQLite file: once the lock is
    gone the worker thread reserves and then releases; nothing stays held and the next call
    (which could not fit beside a leaked hold) is admitted.
    """
    url = f"sqlite:///{tmp_path / 'b.db'}"
    b = costmeter.budget(_worst() + PER_CALL / 2, name="cancel", ledger=url, ledger_timeout=30)
    assert Decimal(0) == b.spent_usd  # creates the file
    done = _count_transactions(b, monkeypatch)
    await _cancel_while_locked(tmp_path / "b.db", take_async((b,), PER_CALL, MODEL))

    assert await asyncio.to_thread(_eventually, lambda: len(done) >= 2)  # reserve, release
    assert Decimal(0) == b.reserved_usd
    client = costmeter.AsyncOpenAI(api_key="k", base_url=server.base_url, max_retries=0)
    async with b:
        await client.responses.create(
            model=MODEL, input="hi", max_output_tokens=200, extra_headers=HEADERS
        )
    assert (1, PER_CALL, Decimal(0)) == (server.calls, b.spent_usd, b.reserved_usd)


async def test_cancelled_while_settling_still_charges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task cancelled while settling: the worker thread still charges the call."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    b = costmeter.budget("1", name="settle", ledger=url, ledger_timeout=30)
    held = await take_async((b,), PER_CALL, MODEL)
    done = _count_transactions(b, monkeypatch)
    await _cancel_while_locked(tmp_path / "b.db", settle_async(held, Decimal("0.0001")))

    assert await asyncio.to_thread(_eventually, lambda: len(done) >= 1)
    assert (Decimal("0.0001"), Decimal(0), 1) == (b.spent_usd, b.reserved_usd, b.calls)


async def test_async_take_and_settle_in_memory_and_refusal() -> None:
    """In-memory budgets run inline; a refusal raises as from `Reservation.take`."""
    b = costmeter.budget("0.0003", name="mem")
    held = await take_async((b,), PER_CALL, MODEL)
    with pytest.raises(BudgetExceededError):
        await take_async((b,), PER_CALL, MODEL)  # $0.0002 held + $0.0002 > $0.0003
    [settled] = await settle_async(held, PER_CALL)
    assert (PER_CALL, Decimal("0.0001")) == (settled.spent_usd, settled.remaining_usd)


# -- 4. a process killed after sending -----------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from decimal import Decimal
    import costmeter
    from costmeter._budget import Reservation

    url, name, lease, sent = sys.argv[1:5]
    b = costmeter.budget("5", name=name, ledger=url, lease_seconds=float(lease))
    held = Reservation.take((b,), Decimal("0.25"), "gpt-x", sent=sent == "take")
    if sent == "mark":
        held.mark_sent()
        held.mark_sent()  # idempotent
    print("READY", flush=True)
    time.sleep(120)
    """
)


def _killed_holder(url: str, name: str, lease: float, *, sent: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, name, str(lease), sent],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COSTMETER_LOG_FILE": ""},
    )
    try:
        assert worker.stdout is not None
        assert "READY\n" == worker.stdout.readline(), worker.stderr and worker.stderr.read()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=10)


@pytest.mark.slow
def test_killed_after_sending_is_charged_on_expiry(persistent_url: str) -> None:
    """
    SIGKILL after `mark_sent` (or a ``take(sent=True)``): when the lease passes, the held $0.25
    becomes spend (the request was billed). Without either, the hold is released as before.
    """
    lease = 60.0
    _killed_holder(persistent_url, "sent", lease, sent="mark")
    _killed_holder(persistent_url, "taken-sent", lease, sent="take")
    _killed_holder(persistent_url, "unsent", lease, sent="no")

    now = Clock(time.time())
    sent = costmeter.budget("5", name="sent", ledger=persistent_url, clock=now)
    unsent = costmeter.budget("5", name="unsent", ledger=persistent_url, clock=now)
    taken = costmeter.budget("5", name="taken-sent", ledger=persistent_url, clock=now)
    assert (Decimal(0), Decimal("0.25")) == (sent.spent_usd, sent.reserved_usd)

    now.now += lease + 1
    assert (Decimal("0.25"), Decimal(0), 1) == (taken.spent_usd, taken.reserved_usd, taken.calls)
    assert (Decimal("0.25"), Decimal(0), 1) == (sent.spent_usd, sent.reserved_usd, sent.calls)
    assert {"gpt-x": Decimal("0.25")} == sent.by_model
    assert (Decimal(0), Decimal(0), 0) == (unsent.spent_usd, unsent.reserved_usd, unsent.calls)

    # The next operation writes the expiry into the ledger itself.
    Reservation.take((sent,), Decimal("0.1"), "m").settle(Decimal("0.1"))
    stored = open_ledger(persistent_url).read("sent", "total")
    assert (Decimal("0.35"), 2, {}) == (stored.spent, stored.calls, stored.holds)


def test_late_settle_of_an_expired_sent_hold_is_not_double_counted(persistent_url: str) -> None:
    """A slow (not dead) call whose sent hold expired: its settle replaces the worst case."""
    now = Clock(time.time())
    b = costmeter.budget("5", name="slow", ledger=persistent_url, lease_seconds=10, clock=now)
    slow = Reservation.take((b,), Decimal("0.25"), "gpt-x")
    slow.mark_sent()
    now.now += 11
    Reservation.take((b,), Decimal("0.1"), "m").settle(Decimal("0.1"))  # expires the hold
    assert Decimal("0.35") == b.spent_usd

    [settled] = slow.settle_report(Decimal("0.05"))
    assert (Decimal("0.15"), 2) == (b.spent_usd, b.calls)
    assert Decimal("0.15") == settled.spent_usd


# -- 5. what a settle returns --------------------------------------------------------------------


def test_settle_returns_each_budgets_numbers(persistent_url: str) -> None:
    """Per budget, outermost first: spend and remaining after this settle, crossings."""
    outer = costmeter.budget("1", name="outer", ledger=persistent_url, warn_at=(0.5,))
    inner = costmeter.budget("0.5", name="inner")
    Reservation.take((outer,), Decimal("0.2"), "m").settle(Decimal("0.2"))
    held = Reservation.take((outer, inner), Decimal("0.4"), "m")
    other = Reservation.take((outer,), Decimal("0.1"), "m")  # in flight: not remaining

    first, second = held.settle_report(Decimal("0.35"))

    assert (outer, Decimal("0.55"), Decimal("0.35"), (Decimal("0.5"),)) == (
        first.budget,
        first.spent_usd,
        first.remaining_usd,
        first.crossed_thresholds,
    )
    assert (inner, Decimal("0.35"), Decimal("0.15"), ()) == (
        second.budget,
        second.spent_usd,
        second.remaining_usd,
        second.crossed_thresholds,
    )
    assert [] == held.settle_report(Decimal("0.35"))  # settles once
    assert [] == held.settle(Decimal("0.35"))
    assert Decimal("0.55") == outer.spent_usd
    other.release()
    assert Decimal(0) == outer.reserved_usd


# -- 6. garbage in a ledger ----------------------------------------------------------------------


def _write_raw(url: str, name: str, field: str, value: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO costmeter_ledger VALUES (?, 'total', ?, ?)",
                (name, field, value),
            )
    else:
        import redis

        redis.Redis.from_url(url).hset(f"costmeter:budget:{name}:total", field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spent", "NaN"),
        ("spent", "sNaN"),
        ("spent", "Infinity"),
        ("spent", "-1"),
        ("spent", "abc"),
        ("model:m", "NaN"),
        ("hold:x", "NaN 1.0"),
        ("hold:x", "0.1 nan"),
        ("calls", "many"),
    ],
)
def test_garbage_in_the_ledger_is_a_ledger_error(
    persistent_url: str, server: FakeOpenAI, field: str, value: str
) -> None:
    """A NaN or garbage row: LedgerError naming the field, the call not sent."""
    b = costmeter.budget("1", name="bad", ledger=persistent_url)
    assert Decimal(0) == b.spent_usd  # creates the SQLite table
    _write_raw(persistent_url, "bad", field, value)

    with decimal.localcontext() as ctx:
        ctx.traps[decimal.InvalidOperation] = False  # garbage must not slip through as NaN
        with b, pytest.raises(LedgerError, match="unreadable budget state") as info:
            _call(_client(server))

    assert repr(field) in str(info.value)
    assert 0 == server.calls


# -- 7. passwords in ledger URLs -----------------------------------------------------------------

SECRET = "pw-s3cret-value"


@pytest.mark.parametrize(
    "template",
    [
        "redis://:{pw}@127.0.0.1:{port}/0",
        "redis://admin:{pw}@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password={pw}",
        "redis://127.0.0.1:{port}/0?db=0&password={pw}",
        "rediss://:{pw}@127.0.0.1:{port}/0",
        "rediss://admin:{pw}@127.0.0.1:{port}/0?ssl_cert_reqs=none",
        "unix://:{pw}@/nonexistent/redis.sock?db=0",
        "unix:///nonexistent/redis.sock?password={pw}",
    ],
)
def test_redis_password_never_shown(
    template: str, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not in persistent_url, repr, LedgerError, costmeter.warning events, nor the CLI's output."""
    url = template.format(pw=SECRET, port=_free_port())
    closed = costmeter.budget("5", name="fleet", ledger=url, ledger_timeout=0.5)
    open_ = costmeter.budget(
        "5", name="fleet", ledger=url, ledger_timeout=0.5, on_ledger_error="allow"
    )
    with pytest.raises(ConfigurationError) as unnamed:
        costmeter.budget("5", ledger=url)
    with closed, pytest.raises(LedgerError) as info:
        _call(_client(server))
    with capture_logs() as logs, open_:
        _call(_client(server))
    code = main(["budget", "show", "fleet", "--ledger", url, "--timeout", "0.5"])
    out, err = capsys.readouterr()

    warnings_ = [e for e in logs if e["event"] == "costmeter.warning"]
    assert 2 == len(warnings_)
    assert 5 == code
    shown = [
        closed.ledger_url,
        repr(closed),
        repr(closed._ledger),
        str(info.value),
        repr(info.value),
        str(unnamed.value),
        repr(warnings_),
        out,
        err,
    ]
    assert [] == [text for text in shown if SECRET in text]
    assert "***" in closed.ledger_url


# -- 8. warn_at ----------------------------------------------------------------------------------


def test_warn_at_bare_number_is_one_fraction(server: FakeOpenAI) -> None:
    """warn_at=0.0001 (or "0.0001") means (0.0001,): announced once, when first crossed."""
    for warn_at in (0.0001, "0.0001", Decimal("0.0001")):
        with capture_logs() as logs, costmeter.budget("1", warn_at=warn_at):
            _call(_client(server))
            _call(_client(server))
        crossed = [e["fraction"] for e in logs if e["event"] == "costmeter.budget.threshold"]
        assert [0.0001] == crossed


@pytest.mark.parametrize("warn_at", [None, object(), [0.5, "x"], [1.5], [-0.1], True])
def test_bad_warn_at_is_a_configuration_error(warn_at: Any) -> None:
    """Never a TypeError: a ConfigurationError naming warn_at."""
    with pytest.raises(ConfigurationError, match="warn_at"):
        costmeter.budget("1", warn_at=warn_at)


# -- 9. fork() while other threads reserve -------------------------------------------------------


def _setter(event: threading.Event) -> Callable[[BudgetAlert], None]:
    return lambda _alert: event.set()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_threads_reserve_never_hangs_children() -> None:
    """
    Threads reserve and settle in a loop (with alerts) while the main thread forks 30
    children, each making budgeted reservations and getting an alert: every child exits.

    (SQLite itself cannot be used across fork() while other threads are inside it; see
    README. In-memory budgets, alerts and Redis are costmeter's own locks.)
    """
    shared = costmeter.budget(
        "1000", name="forked", warn_at=(0.0,), on_threshold=lambda _alert: None
    )
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            Reservation.take((shared,), Decimal("0.000001"), "m").settle(Decimal("0.000001"))

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for thread in threads:
        thread.start()
    children = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            for _ in range(30):
                pid = os.fork()
                if pid == 0:  # the child: reservations and an alert, then out
                    code = 1
                    try:
                        alerted = threading.Event()
                        own = costmeter.budget("0.1", warn_at=(0.5,), on_threshold=_setter(alerted))
                        for b in (shared, own):
                            Reservation.take((b,), Decimal("0.1"), "m").settle(Decimal("0.1"))
                        code = 0 if alerted.wait(20) else 3
                    finally:
                        os._exit(code)
                children.append(pid)
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(statuses) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    hung = [pid for pid in children if pid not in statuses]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert ([], {0}) == (hung, set(statuses.values()))


# -- 10. inspecting ------------------------------------------------------------------------------


def test_budget_show_never_creates_a_ledger_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show/reset on a missing SQLite file: exit 1, a clear message, no file."""
    path = tmp_path / "typo.db"
    for action in ("show", "reset"):
        assert 1 == main(["budget", action, "daily", "--ledger", f"sqlite:///{path}"])
        assert f"no ledger file at {path}" in capsys.readouterr().err
    assert not path.exists()


def test_budget_show_opens_read_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """show reads an existing ledger without writing to it (a read-only file is fine)."""
    path = tmp_path / "b.db"
    url = f"sqlite:///{path}"
    b = costmeter.budget("1", name="daily", ledger=url)
    Reservation.take((b,), Decimal("0.3"), "m").settle(Decimal("0.25"))
    open_ledger(url)._connection().close()  # type: ignore[attr-defined]
    path.chmod(0o444)
    try:
        assert 0 == main(["budget", "show", "daily", "--ledger", url, "--format", "json"])
    finally:
        path.chmod(0o644)
    assert '"spent_usd": "0.25"' in capsys.readouterr().out


def test_redis_ledger_without_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No redis package: 'install costmeter[redis]', from the API and from the CLI."""
    monkeypatch.setitem(sys.modules, "redis", None)
    url = f"redis://:{SECRET}@127.0.0.1:{_free_port()}/0"
    with pytest.raises(ConfigurationError, match=r"install costmeter\[redis\]") as info:
        costmeter.budget("1", name="x", ledger=url)
    assert SECRET not in str(info.value)

    assert 2 == main(["budget", "show", "x", "--ledger", url])
    assert "install costmeter[redis]" in capsys.readouterr().err


# -- 11. per-user budgets ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_per_user_caps(
    kind: str,
    server: FakeOpenAI,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each user gets the whole cap, per day; an untagged call is refused, naming the tag."""
    url = _any_ledger(request, tmp_path, kind)
    clock = Clock(time.time())
    client = _client(server)
    limit = PER_CALL + _worst()  # a first call spends $0.0002; a second fits, a third not
    per_user = costmeter.budget(
        limit, name="per-user", per="tag:user", window="day", ledger=url, clock=clock
    )
    with per_user:
        for user in ("alice", "bob"):
            with costmeter.tags(user=user):
                _call(client)
                _call(client)
        with costmeter.tags(user="alice"), pytest.raises(BudgetExceededError) as refused:
            _call(client)
        with pytest.raises(BudgetKeyMissingError, match="'user'") as untagged:
            _call(client)
        assert (PER_CALL * 2, 1) == (
            per_user.for_key("alice").spent_usd,
            per_user.for_key("alice").refused,
        )
        with costmeter.tags(user="bob"):
            assert (PER_CALL * 2, limit - PER_CALL * 2) == (
                per_user.spent_usd,
                per_user.remaining_usd,
            )
        with pytest.raises(ConfigurationError, match="tags"):
            _ = per_user.spent_usd  # no key in this context
        if url is not None:
            show = ["budget", "show", "per-user", "--key", "bob", "--ledger", url]
            capsys.readouterr()  # the events so far
            assert 0 == main([*show, "--format", "json"])
            [shown] = json.loads(capsys.readouterr().out)["windows"]
            assert (PER_CALL * 2, 2) == (Decimal(shown["spent_usd"]), shown["calls"])

        clock.now += 86400  # a new day: alice starts again
        with costmeter.tags(user="alice"):
            _call(client)

    assert 5 == server.calls
    assert "alice" == refused.value.budget_key
    assert isinstance(untagged.value, ConfigurationError)
    assert PER_CALL == per_user.for_key("alice").spent_usd


def test_per_user_reservation_exposes_the_key() -> None:
    """`Reservation.budget_key` / `budget_keys` and `Settled.budget_key` name the user."""
    per_user = costmeter.budget("1", name="per-user", per="tag:user")
    plain = costmeter.budget("1", name="plain")
    with costmeter.tags(user="carol"):
        held = Reservation.take((plain, per_user), PER_CALL, MODEL)
    assert ("carol", (None, "carol")) == (held.budget_key, held.budget_keys)
    assert [None, "carol"] == [s.budget_key for s in held.settle_report(PER_CALL)]


def test_per_user_memory_ledger_drops_ended_windows() -> None:
    """20,000 users in one hour, then the next hour: only the new hour's keys are kept."""
    clock = Clock(1_767_225_600.0)  # 2026-01-01T00:00Z
    ledger = MemoryLedger()
    hourly = costmeter.budget("1", per="tag:user", window="hour", ledger=ledger, clock=clock)
    for i in range(20_000):
        with costmeter.tags(user=f"u{i}"):
            Reservation.take((hourly,), PER_CALL, MODEL).settle(PER_CALL)
    assert 20_000 == len(ledger)

    clock.now += 3600
    with costmeter.tags(user="late"):
        Reservation.take((hourly,), PER_CALL, MODEL).settle(PER_CALL)
    assert 1 == len(ledger)


@pytest.mark.parametrize("per", ["user", "tag:", "tags:user", 3])
def test_bad_per(per: Any) -> None:
    with pytest.raises(ConfigurationError, match="per"):
        costmeter.budget("1", per=per)


# -- 12. alerts ----------------------------------------------------------------------------------


def test_alerts_run_off_the_call_path_once_each(server: FakeOpenAI) -> None:
    """
    on_threshold once per crossed fraction, on_exceeded once per refusal, on a background
    thread: a callback still blocked does not hold up the calls; a failing one is logged.
    """
    alerts: list[tuple[BudgetAlert, int]] = []
    gate = threading.Event()

    def on_threshold(alert: BudgetAlert) -> None:
        gate.wait(30)
        alerts.append((alert, threading.get_ident()))

    def on_exceeded(alert: BudgetAlert) -> None:
        alerts.append((alert, threading.get_ident()))
        raise RuntimeError("pager down")

    client = _client(server)
    limit = PER_CALL * 3 + _worst()  # four calls fit, a fifth does not
    first, second = PER_CALL * 3 / 2 / limit, PER_CALL * 5 / 2 / limit
    with (
        capture_logs() as logs,
        costmeter.budget(
            limit,
            name="alerting",
            warn_at=(first, second),
            on_threshold=on_threshold,
            on_exceeded=on_exceeded,
        ),
    ):
        for _ in range(4):
            _call(client)  # crosses the first fraction on the 2nd call, the second on the 3rd
        with pytest.raises(BudgetExceededError):
            _call(client)
        assert [] == alerts  # the first callback is still blocked; the calls were not
        gate.set()
        assert _eventually(lambda: len(alerts) == 3)
        assert _eventually(lambda: any(e["event"] == "costmeter.warning" for e in logs))

    assert [("threshold", first), ("threshold", second)] == [
        (a.kind, a.fraction) for a, _ in alerts[:2]
    ]
    [(refusal, _)] = alerts[2:]
    assert ("exceeded", True, PER_CALL * 4, _worst()) == (
        refusal.kind,
        refusal.refused,
        refusal.spent_usd,
        refusal.estimated_cost_usd,
    )
    assert threading.get_ident() not in {thread for _, thread in alerts}
    [failed] = [e for e in logs if e["event"] == "costmeter.warning"]
    assert ("budget_alert_failed", "RuntimeError", "alerting") == (
        failed["warning"],
        failed["error_type"],
        failed["budget"],
    )


def test_alert_callbacks_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="on_threshold"):
        costmeter.budget("1", on_threshold="https://hooks.example")  # type: ignore[arg-type]


def test_budget_factory_has_budgets_signature() -> None:
    """costmeter.budget takes exactly Budget's arguments (one list, not two kept in step)."""
    import inspect

    assert inspect.signature(costmeter.Budget) == inspect.signature(costmeter.budget)
    assert isinstance(costmeter.budget("1", per="tag:team"), costmeter.Budget)


# -- 9. background responses across processes sharing a ledger ------------------------------------

_PROCESS = textwrap.dedent(
    """
    import sys
    import costmeter

    base_url, url, window, lease, first = sys.argv[1:6]
    costmeter.register_prices({"gpt-4.1-mini": {"input": "0", "output": "1"}})
    client = costmeter.OpenAI(api_key="k", base_url=base_url, max_retries=0)
    budget = costmeter.budget(
        "1", name="shared", ledger=url, window=window or None, lease_seconds=float(lease)
    )
    with budget:
        response_id = first
        if first == "create":
            created = client.responses.create(
                model="gpt-4.1-mini", input="hi", max_output_tokens=200, background=True,
                extra_headers={"x-fake-output-tokens": "200"},
            )
            response_id = created.id
            print(created.id, flush=True)
            if sys.stdin.readline().strip() != "poll":  # else: the other processes have polled
                print("DONE", flush=True)
                raise SystemExit(0)
        while client.responses.retrieve(response_id).status not in ("completed", "failed"):
            pass
        client.responses.retrieve(response_id)  # polled again
    print("DONE", flush=True)
    """
)


def _process(
    server: FakeOpenAI, url: str, log: Path, first: str, *, window: str = "", lease: float = 600
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _PROCESS, server.base_url, url, window, str(lease), first],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COSTMETER_LOG_FILE": str(log)},
    )


def _finish(process: subprocess.Popen[str], stdin: str = "") -> None:
    out, err = process.communicate(stdin, timeout=60)
    assert out.endswith("DONE\n"), err


def _call_events(*logs: Path) -> list[dict[str, Any]]:
    return [
        event
        for log in logs
        if log.exists()
        for event in (
            json.loads(line, parse_float=Decimal) for line in log.read_text().splitlines()
        )
        if event.get("event") == "costmeter.call"
    ]


def test_a_background_response_is_charged_once_across_processes(
    server: FakeOpenAI, persistent_url: str, tmp_path: Path
) -> None:
    """
    A web process creates a background response inside a budget and keeps running; two workers
    (other processes, same ledger) poll it; then the creator polls it too. One ``costmeter.call``
    event in all, one charge of the actual cost, and the creator's worst-case hold is gone.
    """
    logs = [tmp_path / f"{name}.jsonl" for name in ("web", "worker1", "worker2")]
    web = _process(server, persistent_url, logs[0], "create")
    assert web.stdout is not None
    response_id = web.stdout.readline().strip()
    assert response_id, web.stderr and web.stderr.read()
    shared = costmeter.budget("1", name="shared", ledger=persistent_url)
    assert (Decimal(0), Decimal(0)) == (shared.spent_usd, shared.calls)
    assert shared.reserved_usd >= PER_CALL  # the creator's hold, under the response's id

    _finish(_process(server, persistent_url, logs[1], response_id))
    _finish(_process(server, persistent_url, logs[2], response_id))
    _finish(web, "poll\n")

    [event] = _call_events(*logs)
    assert (response_id, "shared", PER_CALL) == (
        event["response_id"],
        event["budget"],
        Decimal(event["cost_usd"]),
    )
    assert (PER_CALL, Decimal(0), 1) == (shared.spent_usd, shared.reserved_usd, shared.calls)


def test_a_creators_expired_hold_is_corrected_by_the_poll(
    server: FakeOpenAI, persistent_url: str, tmp_path: Path
) -> None:
    """
    The creator exits before anyone polls and its hold outlives its lease: the hold is charged
    its worst case, then the poll that sees the real cost replaces that charge (counted once,
    at its actual cost). In a daily budget the response is charged to the day it was created,
    whichever day it is polled.
    """
    log = tmp_path / "web.jsonl"
    web = _process(server, persistent_url, log, "create", window="day", lease=60)
    assert web.stdout is not None
    response_id = web.stdout.readline().strip()
    _finish(web, "exit\n")
    assert [] == _call_events(log)
    created_day = costmeter.budget("1", name="shared", ledger=persistent_url, window="day")
    worst = created_day.reserved_usd
    assert worst > PER_CALL

    later = Clock(time.time() + 2 * 86400)  # two days on: the hold's lease has long passed
    worker = costmeter.budget("1", name="shared", ledger=persistent_url, window="day", clock=later)
    with _client(server) as client, capture_logs() as logs, worker:
        while client.responses.retrieve(response_id).status != "completed":
            pass
    [event] = [e for e in logs if e["event"] == "costmeter.call"]
    assert PER_CALL == Decimal(str(event["cost_usd"]))
    assert (PER_CALL, Decimal(0), 1) == (
        created_day.spent_usd,
        created_day.reserved_usd,
        created_day.calls,
    )
    assert (Decimal(0), 0) == (worker.spent_usd, worker.calls)  # the polling day: nothing


def test_an_objects_charge_is_remembered_in_the_ledger_for_a_day(persistent_url: str) -> None:
    """
    What makes the charge once-only is stored in the ledger itself (so every process reads it):
    a second settle of the same object charges nothing and says so, until the record is
    forgotten a day later; a hold renamed to an object already charged is dropped.
    """
    now = Clock(time.time())
    b = costmeter.budget("5", name="objects", ledger=persistent_url, clock=now)
    creator = Reservation.take((b,), Decimal("0.25"), "gpt-x", sent=True)
    creator.hold_as_object("resp_1", now.now)
    assert Decimal("0.25") == b.reserved_usd

    [first] = Reservation.for_object((b,), "resp_1", now.now, "gpt-x").settle_report(PER_CALL)
    [again] = creator.settle_report(PER_CALL)
    assert (False, True) == (first.duplicate, again.duplicate)
    assert (PER_CALL, Decimal(0), 1) == (b.spent_usd, b.reserved_usd, b.calls)

    late = Reservation.take((b,), Decimal("0.25"), "gpt-x", sent=True)
    late.hold_as_object("resp_1", now.now)  # its object was charged: nothing stays held
    assert Decimal(0) == b.reserved_usd

    now.now += 86400 + 1
    [forgotten] = Reservation.for_object((b,), "resp_1", now.now - 86401, "gpt-x").settle_report(
        PER_CALL
    )
    assert (False, 2 * PER_CALL) == (forgotten.duplicate, b.spent_usd)


async def test_an_async_poll_settles_another_process_hold(
    server: FakeOpenAI, persistent_url: str, tmp_path: Path
) -> None:
    """The same across processes with an async client polling: the creator's hold is settled
    (its ledger I/O off the event loop), one event, the actual cost once."""
    web = _process(server, persistent_url, tmp_path / "web.jsonl", "create")
    assert web.stdout is not None
    response_id = web.stdout.readline().strip()
    _finish(web, "exit\n")
    shared = costmeter.budget("1", name="shared", ledger=persistent_url)
    assert shared.reserved_usd > PER_CALL  # the creator's hold, left in the ledger

    client = costmeter.AsyncOpenAI(api_key="k", base_url=server.base_url, max_retries=0)
    with capture_logs() as logs, shared:
        while (await client.responses.retrieve(response_id)).status != "completed":
            pass
        await client.responses.retrieve(response_id)  # polled again: nothing more
    await client.close()
    [event] = [e for e in logs if e["event"] == "costmeter.call"]
    assert (response_id, PER_CALL) == (event["response_id"], Decimal(str(event["cost_usd"])))
    assert (PER_CALL, Decimal(0), 1) == (shared.spent_usd, shared.reserved_usd, shared.calls)
