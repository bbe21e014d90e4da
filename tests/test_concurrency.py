"""
One budget, hammered by 64 threads or 64 asyncio tasks through a real loopback server.

The guarantee under test (issue 4): with ``max_output_tokens`` set and the input visible to the
estimator, total spend never exceeds the limit — not by one call, however the calls interleave —
because each call reserves its worst case atomically before it is sent. And the books balance:
what the budget charged is exactly the sum of the ``costmeter.call`` events, every refusal raised
`BudgetExceededError` and reached no server, and nothing stays reserved.

The fake bills ``len(prompt JSON) // 4 + 8`` input tokens; the prompt below tokenizes to more
than that locally, so the reserved worst case is a true upper bound, and every call is billed
its full ``max_output_tokens`` (``x-fake-output-tokens``) so the bound is tight on the output side.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter import Budget, BudgetExceededError
from costmeter.testing import FakeOpenAI

from .helpers import calls, money

WORKERS = 64
CALLS_EACH = 3
MODEL = "gpt-4.1-mini"
MAX_OUTPUT = 200
PROMPT = "a1 b2 c3 d4 e5 f6 g7 h8 i9 j0 k1 l2 m3 n4 o5 p6"
HEADERS = {"x-fake-output-tokens": str(MAX_OUTPUT)}
TIMEOUT = 10.0


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fresh loopback server per test."""
    with FakeOpenAI(stream_events=4) as fake:
        yield fake
        assert [] == fake.errors


def _worst_case() -> Decimal:
    estimate = costmeter.estimate(model=MODEL, input=PROMPT, max_output_tokens=MAX_OUTPUT)
    assert estimate.cost_usd is not None
    return estimate.cost_usd


def _limit() -> Decimal:
    """
    Room for half of the first wave of simultaneous calls, plus an odd remainder no call fits
    into: the cap is hit while all workers are reserving at once, where a race would show.
    """
    return _worst_case() * (WORKERS // 2) + _worst_case() / 3


class Tally:
    """Thread-safe counts of what the callers saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.refused = 0
        self.other: list[BaseException] = []

    def record(self, outcome: str | BaseException) -> None:
        with self.lock:
            if outcome == "ok":
                self.ok += 1
            elif outcome == "refused":
                self.refused += 1
            else:
                assert isinstance(outcome, BaseException)
                self.other.append(outcome)


def _one_sync(client: costmeter.OpenAI, i: int) -> str | BaseException:
    try:
        if i % 2:
            stream = client.responses.create(
                model=MODEL,
                input=PROMPT,
                max_output_tokens=MAX_OUTPUT,
                stream=True,
                extra_headers=HEADERS,
            )
            with stream:
                for _ in stream:
                    pass
        else:
            client.responses.create(
                model=MODEL, input=PROMPT, max_output_tokens=MAX_OUTPUT, extra_headers=HEADERS
            )
    except BudgetExceededError:
        return "refused"
    except Exception as exc:  # reported by the test
        return exc
    return "ok"


async def _one_async(client: costmeter.AsyncOpenAI, i: int) -> str | BaseException:
    try:
        if i % 2:
            stream = await client.responses.create(
                model=MODEL,
                input=PROMPT,
                max_output_tokens=MAX_OUTPUT,
                stream=True,
                extra_headers=HEADERS,
            )
            async with stream:
                async for _ in stream:
                    pass
        else:
            await client.responses.create(
                model=MODEL, input=PROMPT, max_output_tokens=MAX_OUTPUT, extra_headers=HEADERS
            )
    except BudgetExceededError:
        return "refused"
    except Exception as exc:
        return exc
    return "ok"


def _check_books(budget: Budget, tally: Tally, logs: list[Any], server: FakeOpenAI) -> None:
    """Zero overshoot, and every cent and every refusal accounted for."""
    events = calls(list(logs))
    refusals = [e for e in logs if e["event"] == "costmeter.budget.exceeded"]
    charged = sum((money(e["cost_usd"]) or Decimal(0) for e in events), Decimal(0))
    assert [] == tally.other
    assert WORKERS * CALLS_EACH == tally.ok + tally.refused
    assert 0 < tally.ok  # the cap really was contended:
    assert 0 < tally.refused  # some calls got in, some were refused
    assert budget.spent_usd <= budget.limit_usd
    assert charged == budget.spent_usd
    assert (Decimal(0), tally.refused, tally.refused) == (
        budget.reserved_usd,
        budget.refused,
        len(refusals),
    )
    assert (tally.ok, tally.ok, tally.ok) == (server.calls, budget.calls, len(events))
    assert {"ok"} == {e["outcome"] for e in events}
    assert {"reported"} == {e["usage_source"] for e in events}
    assert [] == [e for e in logs if e["event"] == "costmeter.internal_error"]


def _client(server: FakeOpenAI) -> costmeter.OpenAI:
    return costmeter.OpenAI(
        base_url=server.base_url, api_key="sk-concurrency", max_retries=0, timeout=TIMEOUT
    )


def test_shared_budget_entered_in_each_thread(server: FakeOpenAI) -> None:
    """64 threads each enter one shared Budget (no context copying): it holds exactly."""
    shared = Budget(_limit(), name="shared")
    tally = Tally()
    start = threading.Barrier(WORKERS)

    def worker(client: costmeter.OpenAI) -> None:
        start.wait()
        with shared:
            for i in range(CALLS_EACH):
                tally.record(_one_sync(client, i))

    with _client(server) as client, capture_logs() as logs:
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 2)

    assert not any(thread.is_alive() for thread in threads)
    _check_books(shared, tally, logs, server)


def test_scoped_budget_carried_into_pool_with_copy_context(server: FakeOpenAI) -> None:
    """A ``with budget()`` carried into a 64-thread pool by contextvars.copy_context() holds."""
    tally = Tally()
    start = threading.Barrier(WORKERS)

    def work(client: costmeter.OpenAI, i: int) -> None:
        if i < WORKERS:
            start.wait()
        tally.record(_one_sync(client, i))

    with _client(server) as client, capture_logs() as logs:
        with costmeter.budget(_limit(), name="scoped") as scoped:
            with ThreadPoolExecutor(WORKERS) as pool:
                futures = [
                    pool.submit(contextvars.copy_context().run, work, client, i)
                    for i in range(WORKERS * CALLS_EACH)
                ]
                for future in futures:
                    future.result(TIMEOUT * 2)

    _check_books(scoped, tally, logs, server)


@pytest.mark.parametrize("shared", [False, True], ids=["inherited", "shared-object"])
async def test_async_tasks(server: FakeOpenAI, shared: bool) -> None:
    """64 tasks on one budget (inherited from the caller, or a shared object each enters)."""
    budget = Budget(_limit(), name="async")
    tally = Tally()

    async def worker(client: costmeter.AsyncOpenAI) -> None:
        if shared:
            async with budget:
                for i in range(CALLS_EACH):
                    tally.record(await _one_async(client, i))
        else:
            for i in range(CALLS_EACH):
                tally.record(await _one_async(client, i))

    client = costmeter.AsyncOpenAI(
        base_url=server.base_url, api_key="sk-concurrency", max_retries=0, timeout=TIMEOUT
    )
    async with client:
        with capture_logs() as logs:
            if shared:
                await asyncio.wait_for(
                    asyncio.gather(*(worker(client) for _ in range(WORKERS))), TIMEOUT * 2
                )
            else:
                with budget:
                    await asyncio.wait_for(
                        asyncio.gather(*(worker(client) for _ in range(WORKERS))), TIMEOUT * 2
                    )

    _check_books(budget, tally, logs, server)
