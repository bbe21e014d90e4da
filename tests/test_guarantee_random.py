"""
The budget guarantee as a property (issue 12): hypothesis draws a workload — models, APIs, ``n``,
output bounds, streams, background responses polled to their end, served tiers, usage the
server reports (or loses), gzip, responses lost past the client's timeout, resets, cut streams —
and runs it from several threads under one shared budget on each kind of ledger, over real
loopback HTTP. After every workload:

* spend never exceeds the limit;
* the ledger's spend equals the sum of the events' ``charged_usd``;
* there is one ``costmeter.call`` event per request the server received (``max_retries=0``);
* nothing stays reserved;
* every call returned or raised exactly what the bare SDK does for the same fault (or was
  refused by the budget before anything was sent).

CI runs a bounded number of workloads; ``COSTMETER_GUARANTEE_EXAMPLES=500`` runs more (see the
README, "Guarantees").
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI
from tests.helpers import calls, money
from tests.test_ledger import redis_server  # noqa: F401  (a fixture: a real redis-server)

EXAMPLES = int(os.environ.get("COSTMETER_GUARANTEE_EXAMPLES", "12"))
TIMEOUT = 2.5  # the client's timeout (room for a loaded machine); a "lost" response is held 6 s
PROMPT = "Answer in one word: what colour is the sky on a clear day? " * 3


@dataclass(frozen=True)
class Job:
    api: str  # responses | chat
    model: str
    bound: int
    n: int
    stream: bool
    output: int  # what the server produces (capped by the bound)
    fault: str  # none | gzip | lost | reset | cut | usage_missing
    background: bool = False  # Responses, not streamed: created in the background, then polled

    @property
    def polled(self) -> bool:
        """A background response: billed when a poll sees it finish."""
        return self.background and self.api == "responses" and not self.stream

    def input_tokens(self) -> int:
        return _billed_input(self.api, self.model)

    def kwargs(self) -> dict[str, Any]:
        # The server bills the input as OpenAI's tokenizer counts it (the estimator's exactness
        # on real traffic is tested elsewhere): this test hunts for holes in the budget logic.
        headers = {
            "x-fake-output-tokens": str(self.output),
            "x-fake-input-tokens": str(self.input_tokens()),
        }
        if self.fault == "gzip":
            headers["x-fake-gzip"] = "1"
        if self.fault == "lost":
            headers["x-fake-delay-ms"] = "6000"
        body: dict[str, Any] = {"model": self.model, "extra_headers": headers}
        if self.api == "chat":
            body.update(messages=[{"role": "user", "content": PROMPT}], n=self.n)
            body["max_completion_tokens"] = self.bound
        else:
            body.update(input=PROMPT, max_output_tokens=self.bound)
            if self.polled:
                body["background"] = True
        if self.stream:
            body["stream"] = True
            if self.api == "chat":
                body["stream_options"] = {"include_usage": True}
        return body


def _billed_input(api: str, model: str) -> int:
    messages = [{"role": "user", "content": PROMPT}]
    if api == "chat":
        estimate = costmeter.estimate(model=model, messages=messages)
    else:
        estimate = costmeter.estimate(model=model, input=PROMPT)
    return estimate.input_tokens


jobs = st.builds(
    Job,
    api=st.sampled_from(["responses", "chat"]),
    model=st.sampled_from(["gpt-4.1-mini", "gpt-4o-mini", "gpt-5-mini", "gpt-4.1-nano"]),
    bound=st.integers(1, 400),
    n=st.integers(1, 3),
    stream=st.booleans(),
    output=st.integers(0, 600),
    fault=st.sampled_from(["none", "none", "gzip", "lost", "reset", "cut", "usage_missing"]),
    background=st.booleans(),
)


def _arrange(server: FakeOpenAI, job: Job) -> None:
    if job.fault == "reset":
        server.reset_next(before_headers=True)
    elif job.fault == "cut" and job.stream:
        server.cut_stream_next(after_events=3)
    elif job.fault == "usage_missing":
        from costmeter.testing import OMIT

        server.usage_override_next(OMIT)


def _run(client: Any, job: Job) -> str:
    """What the caller sees: 'ok', or the exception class name."""
    try:
        if job.api == "chat":
            result = client.chat.completions.create(**job.kwargs())
        else:
            result = client.responses.create(**job.kwargs())
        while job.polled and result.status in ("queued", "in_progress"):
            result = client.responses.retrieve(result.id)
        if job.stream:
            for _ in result:
                pass
    except Exception as exc:
        return type(exc).__name__
    return "ok"


_QUEUED = frozenset({"reset", "cut", "usage_missing"})  # faults queued on the server


class _Gate:
    """A readers-writer lock: jobs whose fault is a per-request header run concurrently; a job
    whose fault is queued on the server runs alone (no other request may take its fault)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        with self._cond:
            while self._exclusive or (exclusive and self._shared):
                self._cond.wait()
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


@pytest.fixture(scope="module", name="api")
def _api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _ledger(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str | None:
    if kind == "memory":
        return None
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'guarantee.db'}"
    url: str = request.getfixturevalue("redis_server")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded time in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    workload=st.lists(jobs, min_size=2, max_size=10),
    cap=st.decimals(Decimal("0.00001"), Decimal("0.002"), places=6),
    kind=st.sampled_from(["memory", "sqlite", "redis"]),
)
def test_no_workload_overspends(
    api: FakeOpenAI,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    workload: list[Job],
    cap: Decimal,
    kind: str,
) -> None:
    costmeter.set_strict(False)  # as users run it: internal failures are logged, not raised
    api.reset()
    # The bare SDK's answer to each fault, one by one (same server, same fault).
    with openai.OpenAI(
        base_url=api.base_url, api_key="sk-bare", max_retries=0, timeout=TIMEOUT
    ) as bare:
        expected = []
        for job in workload:
            _arrange(api, job)
            expected.append(_run(bare, job))
            api.clear_faults()
    api.reset()

    ledger = _ledger(kind, tmp_path, request)
    budget = costmeter.Budget(cap, name=f"hunt-{uuid.uuid4().hex}", ledger=ledger)  # fresh books
    seen: dict[int, str] = {}
    gate = _Gate()

    def worker(indices: list[int]) -> None:
        with costmeter.OpenAI(
            base_url=api.base_url, api_key="sk-hunt", max_retries=0, timeout=TIMEOUT
        ) as client:
            for i in indices:
                job = workload[i]
                with gate.hold(exclusive=job.fault in _QUEUED):
                    _arrange(api, job)
                    try:
                        with budget:
                            seen[i] = _run(client, job)
                    finally:
                        api.clear_faults()

    with capture_logs() as logs:
        threads = [
            threading.Thread(target=worker, args=(list(range(k, len(workload), 3)),))
            for k in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    events = calls(logs)

    assert [] == [e for e in logs if e["event"] == "costmeter.internal_error"]
    refused = {i for i, outcome in seen.items() if outcome == "BudgetExceededError"}
    for i, job in enumerate(workload):
        if i not in refused:
            assert expected[i] == seen[i], (job, expected[i], seen[i])
    assert budget.spent_usd <= budget.limit_usd
    assert budget.spent_usd == sum(
        (money(e["charged_usd"]) or Decimal(0) for e in events), Decimal(0)
    )
    assert Decimal(0) == budget.reserved_usd
    assert api.calls == len(events)
