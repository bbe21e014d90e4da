"""
Server faults and hostile logging, through real loopback HTTP: the user sees what the bare SDK shows.

Every scenario is run twice against the same `FakeOpenAI` fault: once with the bare
``openai.OpenAI``/``AsyncOpenAI``, once with costmeter's client inside a budget. The metered call
must raise the same exception (or return the same result, ids aside) as the bare one, emit exactly
one ``costmeter.call`` event with the right outcome, leave no reservation behind and charge
exactly what the event says. Strict mode is off, as users run it: an internal failure would be
swallowed and reported as ``costmeter.internal_error``, so the absence of that event is asserted.
"""

from __future__ import annotations

import asyncio
import io
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
import pytest
import structlog
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import OMIT, FakeOpenAI

from .helpers import calls, money

TIMEOUT = 5.0
# Prompts whose local estimate is at least what the fake bills, so a settled cost stays <= worst case.
PROMPT = "a1 b2 c3 d4 e5 f6 g7 h8"
MESSAGES = [{"role": "user", "content": PROMPT}]
FAST_RETRY = {"retry-after-ms": "5"}  # SDK honours it: retries take milliseconds, not seconds
_SCRUBBED = frozenset({"id", "created", "created_at", "completed_at", "item_id", "response_id"})


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    """One fake server for the module; every test starts with it reset."""
    with FakeOpenAI(output_tokens=12) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI, _strict_and_clean: None) -> Iterator[FakeOpenAI]:
    """The reset server, with strict mode off (as users run costmeter)."""
    server.reset()
    costmeter.set_strict(False)
    yield server
    assert [] == server.errors
    assert 0 == server.pending_faults


@dataclass
class Seen:
    """What a caller observed: a result or an exception, plus the stream events it got first."""

    outcome: str  # "returned" | "raised"
    value: Any
    events: list[Any] = field(default_factory=list)


def _scrub(value: Any) -> Any:
    """Drop per-response random ids and timestamps, so two runs of one fault compare equal."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _SCRUBBED}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _error_shape(exc: BaseException) -> tuple[str, str, Any]:
    return (
        type(exc).__module__ + "." + type(exc).__qualname__,
        str(exc),
        getattr(exc, "status_code", None),
    )


@dataclass(frozen=True)
class Scenario:
    """One fault: how to provoke it, the request, and what costmeter must record."""

    name: str
    arrange: Callable[[FakeOpenAI], None]
    api: str = "responses"
    stream: bool = False
    max_retries: int = 0
    outcome: str = "ok"  # the costmeter.call event's outcome
    usage_source: str = "reported"
    attempts: int = 1  # requests the server receives per call
    billed: bool = True  # the event carries a cost > 0
    usage_problem: bool = False
    output_seen: bool = True  # the caller got output text, so an estimate must count it
    lost_before: int = 0  # attempts whose response was lost before the last one (one event each)

    def kwargs(self) -> dict[str, Any]:
        if self.api == "chat":
            body: dict[str, Any] = {
                "model": "gpt-4.1-mini",
                "messages": MESSAGES,
                "max_completion_tokens": 64,
            }
            if self.stream:
                body["stream_options"] = {"include_usage": True}
        else:
            body = {"model": "gpt-4.1-mini", "input": PROMPT, "max_output_tokens": 64}
        if self.stream:
            body["stream"] = True
        return body


SCENARIOS = [
    Scenario(
        "429_retry_after_then_ok",
        lambda s: s.fail_next(429, headers={"retry-after": "0.01"}),
        max_retries=2,
        attempts=2,
    ),
    Scenario(
        "500s_then_ok",
        lambda s: s.fail_next(500, headers=FAST_RETRY, times=2),
        max_retries=2,
        attempts=3,
    ),
    Scenario(
        "500_no_retries",
        lambda s: s.fail_next(500),
        outcome="error",
        billed=False,
    ),
    # The API received these requests and their responses were lost: billed, so charged the
    # reserved worst case (issue 12, item 8).
    Scenario(
        "reset_before_headers",
        lambda s: s.reset_next(before_headers=True),
        outcome="error",
        usage_source="reserved",
        output_seen=False,
    ),
    Scenario(
        "reset_before_headers_then_ok",
        lambda s: s.reset_next(before_headers=True),
        max_retries=1,
        attempts=2,
        lost_before=1,
    ),
    Scenario(
        "reset_after_headers",
        lambda s: s.reset_next(before_headers=False),
        outcome="error",
        usage_source="reserved",
        output_seen=False,
    ),
    Scenario(
        "stream_reset_before_headers",
        lambda s: s.reset_next(before_headers=True),
        stream=True,
        outcome="error",
        usage_source="reserved",
        output_seen=False,
    ),
    Scenario(
        "stream_cut_mid_event",
        lambda s: s.cut_stream_next(after_events=6),
        stream=True,
        outcome="error",
        usage_source="estimated",
    ),
    Scenario(  # the server ended the stream before its terminal event: not "ok"
        "stream_cut_clean",
        lambda s: s.cut_stream_next(after_events=6, clean=True),
        stream=True,
        outcome="error",
        usage_source="estimated",
    ),
    Scenario(
        "chat_stream_cut_mid_event",
        lambda s: s.cut_stream_next(after_events=4),
        api="chat",
        stream=True,
        outcome="error",
        usage_source="estimated",
    ),
    Scenario(
        "malformed_sse",
        lambda s: s.malformed_sse_next(after_events=5),
        stream=True,
        outcome="error",
        usage_source="estimated",
    ),
    Scenario(
        "truncated_json",
        lambda s: s.truncated_json_next(),
        outcome="error",
        usage_source="estimated",
        output_seen=False,
    ),
    Scenario(
        "usage_missing",
        lambda s: s.usage_override_next(OMIT),
        usage_source="estimated",
    ),
    Scenario(
        "usage_null",
        lambda s: s.usage_override_next(None),
        usage_source="estimated",
    ),
    Scenario(
        "usage_fields_missing",
        lambda s: s.usage_override_next(
            {"input_tokens_details": OMIT, "output_tokens_details": OMIT}, merge=True
        ),
    ),
    Scenario(
        "usage_negative",
        lambda s: s.usage_override_next({"output_tokens": -5}, merge=True),
        usage_source="estimated",
        usage_problem=True,
    ),
    Scenario(
        "usage_huge",
        lambda s: s.usage_override_next(
            {"input_tokens": 10**15, "output_tokens": 10**15}, merge=True
        ),
    ),
    Scenario(
        "usage_missing_stream",
        lambda s: s.usage_override_next(OMIT),
        stream=True,
        usage_source="estimated",
    ),
    Scenario(
        "usage_negative_stream",
        lambda s: s.usage_override_next({"input_tokens": -1}, merge=True),
        stream=True,
        usage_source="estimated",
        usage_problem=True,
    ),
    Scenario(
        "chat_usage_null",
        lambda s: s.usage_override_next(None),
        api="chat",
        usage_source="estimated",
    ),
    Scenario(
        "chat_usage_missing_stream",
        lambda s: s.usage_override_next(OMIT),
        api="chat",
        stream=True,
        usage_source="estimated",
    ),
    Scenario(
        "model_missing",
        lambda s: s.usage_override_next({}, merge=True, drop_model=True),
    ),
    Scenario(
        "model_missing_stream",
        lambda s: s.usage_override_next({}, merge=True, drop_model=True),
        stream=True,
    ),
    Scenario(
        "chat_model_missing",
        lambda s: s.usage_override_next({}, merge=True, drop_model=True),
        api="chat",
    ),
]


def _create_sync(client: Any, scenario: Scenario) -> Any:
    kwargs = scenario.kwargs()
    if scenario.api == "chat":
        return client.chat.completions.create(**kwargs)
    return client.responses.create(**kwargs)


def _run_sync(client: Any, scenario: Scenario) -> Seen:
    events: list[Any] = []
    try:
        result = _create_sync(client, scenario)
        if not scenario.stream:
            return Seen("returned", _scrub(result.model_dump()))
        for event in result:
            events.append(_scrub(event.model_dump()))
    except Exception as exc:  # what the caller would see is the point
        return Seen("raised", _error_shape(exc), events)
    return Seen("returned", None, events)


async def _run_async(client: Any, scenario: Scenario) -> Seen:
    events: list[Any] = []
    kwargs = scenario.kwargs()
    try:
        if scenario.api == "chat":
            result = await client.chat.completions.create(**kwargs)
        else:
            result = await client.responses.create(**kwargs)
        if not scenario.stream:
            return Seen("returned", _scrub(result.model_dump()))
        async for event in result:
            events.append(_scrub(event.model_dump()))
    except Exception as exc:
        return Seen("raised", _error_shape(exc), events)
    return Seen("returned", None, events)


def _clients(server: FakeOpenAI, scenario: Scenario, asynchronous: bool) -> tuple[Any, Any]:
    options: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": "sk-fault-suite",
        "max_retries": scenario.max_retries,
        "timeout": TIMEOUT,
    }
    if asynchronous:
        return openai.AsyncOpenAI(**options), costmeter.AsyncOpenAI(**options)
    return openai.OpenAI(**options), costmeter.OpenAI(**options)


def _check_metered(scenario: Scenario, logs: list[Any], budget: costmeter.Budget) -> dict[str, Any]:
    assert [] == [e for e in logs if e["event"] == "costmeter.internal_error"]
    *lost, event = calls(list(logs))
    assert scenario.lost_before == len(lost)
    assert all(("error", "reserved") == (e["outcome"], e["usage_source"]) for e in lost)
    lost_cost = sum((money(e["cost_usd"]) for e in lost), Decimal(0))
    assert all(money(e["cost_usd"]) == money(e["estimated_cost_usd"]) > 0 for e in lost)
    cost = money(event["cost_usd"])
    assert (scenario.outcome, scenario.usage_source) == (event["outcome"], event["usage_source"])
    assert scenario.usage_problem == ("usage_problem" in event)
    assert scenario.billed == (cost is not None and cost > 0)
    if scenario.billed:
        assert scenario.output_seen == (event["output_tokens"] > 0)
        assert event["response_id"] is not None or not scenario.output_seen
    assert (Decimal(0), (cost or Decimal(0)) + lost_cost, 1 + scenario.lost_before) == (
        budget.reserved_usd,
        budget.spent_usd,
        budget.calls,
    )
    return event


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_sync_fault(fake: FakeOpenAI, scenario: Scenario) -> None:
    """Sync: same result or exception as the bare SDK; one event; budget settled to its cost."""
    bare_client, metered_client = _clients(fake, scenario, asynchronous=False)
    with bare_client, metered_client:
        scenario.arrange(fake)
        bare = _run_sync(bare_client, scenario)
        bare_attempts = fake.calls

        scenario.arrange(fake)
        with capture_logs() as logs, costmeter.budget("10", name="faults") as budget:
            metered = _run_sync(metered_client, scenario)

    assert bare == metered
    assert (scenario.attempts, scenario.attempts) == (bare_attempts, fake.calls - bare_attempts)
    _check_metered(scenario, logs, budget)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_async_fault(fake: FakeOpenAI, scenario: Scenario) -> None:
    """Async: same result or exception as the bare SDK; one event; budget settled to its cost."""
    bare_client, metered_client = _clients(fake, scenario, asynchronous=True)
    async with bare_client, metered_client:
        scenario.arrange(fake)
        bare = await _run_async(bare_client, scenario)
        bare_attempts = fake.calls

        scenario.arrange(fake)
        with capture_logs() as logs:
            async with costmeter.budget("10", name="faults") as budget:
                metered = await _run_async(metered_client, scenario)

    assert bare == metered
    assert (scenario.attempts, scenario.attempts) == (bare_attempts, fake.calls - bare_attempts)
    _check_metered(scenario, logs, budget)


# -- hostile logging: sinks and processors must not break or stall calls ---------------------------


class _RaisingStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk on fire")


class _BlockingStream(io.StringIO):
    """Blocks every write, with no timeout, until released; ``entered`` is set once one is stuck."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait()
        return super().write(text)


def _finishes(work: Any, timeout: float = 30.0) -> list[str]:
    """
    Run *work* (returning the caller's texts) in a daemon thread and return its result; fail if
    it is still running after *timeout* (a generous bound: it would never finish if a call
    waited on the sink, since the test releases the sink only afterwards).
    """
    result: list[list[str]] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "metered calls waited for a blocked log sink"
    return result[0]


def _call_twice(server: FakeOpenAI) -> list[str]:
    """One plain and one streamed metered call; the texts the caller got."""
    with costmeter.OpenAI(
        base_url=server.base_url, api_key="sk-fault-suite", max_retries=0, timeout=TIMEOUT
    ) as client:
        text = client.responses.create(model="gpt-4.1-mini", input=PROMPT).output_text
        streamed = "".join(
            event.delta
            for event in client.responses.create(model="gpt-4.1-mini", input=PROMPT, stream=True)
            if event.type == "response.output_text.delta"
        )
    return [text, streamed]


def test_raising_sink_does_not_break_calls(fake: FakeOpenAI) -> None:
    """A stream sink whose write raises: calls succeed, events still reach structlog."""
    sink = costmeter.log_to(_RaisingStream())
    try:
        with capture_logs() as logs:
            texts = _call_twice(fake)
            sink.close()  # drains the queue: every write has failed by now
    finally:
        sink.close()

    assert 2 == len([t for t in texts if t])
    assert 2 == len([e for e in logs if e["event"] == "costmeter.call"])
    assert 2 == sink.failures
    [error] = [e for e in logs if e["event"] == "costmeter.internal_error"]
    assert ("log_sink", "OSError") == (error["stage"], error["error_type"])


def test_blocked_sink_does_not_block_calls(fake: FakeOpenAI) -> None:
    """While the sink's writer is stuck inside write() (forever), calls still complete."""
    stream = _BlockingStream()
    sink = costmeter.log_to(stream)
    try:
        with capture_logs() as logs:
            texts = _finishes(lambda: _call_twice(fake))
            assert stream.entered.wait(TIMEOUT)  # the sink really is blocked...
            assert not stream.release.is_set()  # ...and the calls finished regardless
            texts += _finishes(lambda: _call_twice(fake))
    finally:
        stream.release.set()
        sink.close()

    assert 4 == len([t for t in texts if t])
    assert 4 == len([e for e in logs if e["event"] == "costmeter.call"])
    assert 4 == sink.written
    assert 4 == len(stream.getvalue().splitlines())


def test_slow_sink_costs_calls_nothing_and_loses_nothing(fake: FakeOpenAI) -> None:
    """A slow stream is written behind the calls' backs: every line arrives once it catches up."""
    gate = threading.Semaphore(0)

    class SlowStream(io.StringIO):
        def write(self, text: str) -> int:
            gate.acquire()  # one write per token the test hands out, no timeout
            return super().write(text)

    stream = SlowStream()
    sink = costmeter.log_to(stream)
    try:
        texts = _finishes(lambda: _call_twice(fake) + _call_twice(fake))
    finally:
        for _ in range(8):
            gate.release()
        sink.close()

    assert 4 == len([t for t in texts if t])
    assert 4 == len(stream.getvalue().splitlines())
    assert (0, 0) == (sink.failures, sink.dropped)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_raising_structlog_processor_does_not_break_calls(
    fake: FakeOpenAI, tmp_path: Any, asynchronous: bool
) -> None:
    """An application processor that raises: the call returns normally; sinks still get events."""

    def explode(_logger: Any, _method: str, _event_dict: Any) -> Any:
        raise RuntimeError("application processor bug")

    structlog.configure(processors=[explode, structlog.processors.JSONRenderer()])
    sink = costmeter.log_to(tmp_path / "events.jsonl")
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_key": "sk-fault-suite",
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    try:
        if asynchronous:

            async def run() -> str:
                async with costmeter.AsyncOpenAI(**options) as client:
                    result = await client.responses.create(model="gpt-4.1-mini", input=PROMPT)
                    return result.output_text

            text = asyncio.run(run())
        else:
            with costmeter.OpenAI(**options) as client:
                text = client.responses.create(model="gpt-4.1-mini", input=PROMPT).output_text
    finally:
        sink.close()

    assert text
    [line] = (tmp_path / "events.jsonl").read_text().splitlines()
    assert '"event":"costmeter.call"' in line


# -- offline: a network namespace with only loopback ----------------------------------------------

_OFFLINE_SCRIPT = """
import socket, costmeter
from costmeter.testing import FakeOpenAI
with FakeOpenAI() as server:
    client = costmeter.OpenAI(base_url=server.base_url, api_key="sk-offline", max_retries=0)
    assert client.responses.create(model="gpt-5-mini", input="hi").output_text
for address in (("192.0.2.1", 443), ("2001:db8::1", 443)):
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError:
        continue
    raise SystemExit(f"reached {address} from inside the namespace")
try:
    socket.getaddrinfo("api.openai.com", 443)
except OSError:
    print("offline-ok")
else:
    raise SystemExit("resolved a name from inside the namespace")
"""


def _unshare_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_available(), reason="needs unprivileged user+net namespaces")
def test_metering_works_in_a_namespace_with_only_loopback() -> None:
    """
    Inside ``unshare -rn`` (only ``lo``), a metered call to the loopback fake succeeds, and
    nothing outside is reachable: the same setting the CI runs the whole suite in.
    """
    script = (
        f"ip link set lo up && exec {shlex.quote(sys.executable)} -c {shlex.quote(_OFFLINE_SCRIPT)}"
    )
    result = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (0, "offline-ok") == (result.returncode, result.stdout.splitlines()[-1]), result.stderr
