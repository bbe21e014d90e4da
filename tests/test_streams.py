"""
Every way a Responses stream can end, sync and async, over real loopback HTTP and real SSE.

Each end state must produce exactly one ``costmeter.call`` event with the right ``outcome``; when
the usage event never arrived, the event carries the estimate (input: the pre-flight estimate;
output: the tokens of the deltas actually received) and says so with
``usage_source="estimated"`` — never ``$0`` as if it had been measured.

The sync and async clients run the same test bodies through a small driver (`SyncDriver`,
`AsyncDriver`) so that the two shells are held to one specification.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
import pytest_asyncio
from pydantic import BaseModel
from structlog.testing import capture_logs

import costmeter
from costmeter import Usage, cost_of
from costmeter.testing import FakeOpenAI, fake_input_tokens

from .helpers import calls, money

MODEL = "gpt-4.1-mini"
SERVED = "gpt-4.1-mini-2025-04-14"
PROMPT = "Write one sentence about foxes."
KW: dict[str, Any] = {"model": MODEL, "input": PROMPT}
DELTAS = 20  # the fake server's default: one text delta per visible output token
DELTA_EVENT = "response.output_text.delta"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    """One loopback server for the module (starting one per test would dominate the runtime)."""
    try:
        with FakeOpenAI() as fake:
            yield fake
    finally:
        gc.unfreeze()


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeOpenAI) -> Iterator[None]:
    """
    Each test starts with no faults, no stored responses and no inter-event delay.

    The tests force garbage collection to reach the finalizer path of dropped streams. Earlier
    garbage is collected first (so no finalizer can bill into this test's logs), then what is
    alive is frozen out of the collector's scans: a ``gc.collect()`` in the test then only
    walks the objects the test created, instead of taking a tenth of a second.
    """
    gc.collect()
    gc.freeze()
    server.reset()
    server.event_delay = 0.0
    yield
    assert [] == server.errors
    server.event_delay = 0.0


class SyncDriver:
    """Drives `costmeter.OpenAI`; ``async`` only so both drivers share one interface."""

    mode = "sync"

    def __init__(self, base_url: str) -> None:
        self.client = costmeter.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0)

    async def create(self, **kwargs: Any) -> Any:
        return self.client.responses.create(**{**KW, **kwargs})

    async def drain(self, stream: Any) -> list[Any]:
        return list(stream)

    async def read_deltas(self, stream: Any, stop_after: int) -> list[str]:
        """Iterate with a plain ``for`` and ``break`` once *stop_after* deltas arrived."""
        deltas: list[str] = []
        for event in stream:
            if event.type == DELTA_EVENT:
                deltas.append(event.delta)
                if len(deltas) == stop_after:
                    break
        return deltas

    async def read_until(self, stream: Any, event_type: str) -> Any:
        """Iterate until an event of *event_type*, return it, and ``break``."""
        for event in stream:
            if event.type == event_type:
                return event
        return None

    async def close(self, stream: Any) -> None:
        stream.close()

    async def in_with_block(self, stop_after: int) -> list[str]:
        with self.client.responses.create(**KW, stream=True) as stream:
            return await self.read_deltas(stream, stop_after)

    async def retrieve_stream(self, response_id: str, starting_after: int) -> list[Any]:
        return list(
            self.client.responses.retrieve(response_id, stream=True, starting_after=starting_after)
        )

    async def manager_resume(self, response_id: str, starting_after: int) -> list[Any]:
        with self.client.responses.stream(
            response_id=response_id, starting_after=starting_after
        ) as stream:
            return list(stream)

    async def manager_final(self) -> Any:
        with self.client.responses.stream(**KW) as stream:
            return stream.get_final_response()

    async def manager_until_done(self) -> Any:
        with self.client.responses.stream(**KW) as stream:
            return stream.until_done().get_final_response()

    async def manager_events(self, stop_after: int | None) -> list[str]:
        deltas: list[str] = []
        with self.client.responses.stream(**KW) as stream:
            for event in stream:
                if event.type == DELTA_EVENT:
                    deltas.append(event.delta)
                    if len(deltas) == stop_after:
                        break
        return deltas

    async def parse(self, text_format: type[BaseModel]) -> Any:
        return self.client.responses.parse(**KW, text_format=text_format)

    async def raw_lines(self) -> list[str]:
        with self.client.responses.with_streaming_response.create(**KW, stream=True) as raw:
            return list(raw.iter_lines())

    async def raw_response(self, **kwargs: Any) -> Any:
        return self.client.responses.with_raw_response.create(**KW, **kwargs)

    async def raw_unread(self) -> int:
        """Open a raw streaming response and leave its ``with`` block without reading."""
        with self.client.responses.with_streaming_response.create(**KW, stream=True) as raw:
            return raw.status_code

    async def parse_raw(self, raw: Any) -> Any:
        return raw.parse()


class AsyncDriver(SyncDriver):
    """Drives `costmeter.AsyncOpenAI` through the same operations."""

    mode = "async"

    def __init__(self, base_url: str) -> None:
        self.aclient = costmeter.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)

    async def create(self, **kwargs: Any) -> Any:
        return await self.aclient.responses.create(**{**KW, **kwargs})

    async def drain(self, stream: Any) -> list[Any]:
        return [event async for event in stream]

    async def read_deltas(self, stream: Any, stop_after: int) -> list[str]:
        deltas: list[str] = []
        async for event in stream:
            if event.type == DELTA_EVENT:
                deltas.append(event.delta)
                if len(deltas) == stop_after:
                    break
        return deltas

    async def read_until(self, stream: Any, event_type: str) -> Any:
        async for event in stream:
            if event.type == event_type:
                return event
        return None

    async def close(self, stream: Any) -> None:
        await stream.close()

    async def in_with_block(self, stop_after: int) -> list[str]:
        async with await self.aclient.responses.create(**KW, stream=True) as stream:
            return await self.read_deltas(stream, stop_after)

    async def retrieve_stream(self, response_id: str, starting_after: int) -> list[Any]:
        stream = await self.aclient.responses.retrieve(
            response_id, stream=True, starting_after=starting_after
        )
        return [event async for event in stream]

    async def manager_resume(self, response_id: str, starting_after: int) -> list[Any]:
        async with self.aclient.responses.stream(
            response_id=response_id, starting_after=starting_after
        ) as stream:
            return [event async for event in stream]

    async def manager_final(self) -> Any:
        async with self.aclient.responses.stream(**KW) as stream:
            return await stream.get_final_response()

    async def manager_until_done(self) -> Any:
        async with self.aclient.responses.stream(**KW) as stream:
            return await (await stream.until_done()).get_final_response()

    async def manager_events(self, stop_after: int | None) -> list[str]:
        deltas: list[str] = []
        async with self.aclient.responses.stream(**KW) as stream:
            async for event in stream:
                if event.type == DELTA_EVENT:
                    deltas.append(event.delta)
                    if len(deltas) == stop_after:
                        break
        return deltas

    async def parse(self, text_format: type[BaseModel]) -> Any:
        return await self.aclient.responses.parse(**KW, text_format=text_format)

    async def raw_lines(self) -> list[str]:
        async with self.aclient.responses.with_streaming_response.create(**KW, stream=True) as raw:
            return [line async for line in raw.iter_lines()]

    async def raw_response(self, **kwargs: Any) -> Any:
        return await self.aclient.responses.with_raw_response.create(**KW, **kwargs)

    async def raw_unread(self) -> int:
        async with self.aclient.responses.with_streaming_response.create(**KW, stream=True) as raw:
            return raw.status_code


Driver = SyncDriver


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sync", "async"])
async def drive(request: pytest.FixtureRequest, server: FakeOpenAI) -> AsyncIterator[Driver]:
    """
    The same scenario through the sync and the async metered client (one client per module:
    building one costs more than most of these tests).
    """
    if request.param == "sync":
        driver = SyncDriver(server.base_url)
        yield driver
        driver.client.close()
    else:
        adriver = AsyncDriver(server.base_url)
        yield adriver
        await adriver.aclient.close()


async def _collected(logs: list[dict[str, Any]], expected: int = 1) -> list[dict[str, Any]]:
    """
    Let the garbage collector and the event loop finalize dropped streams, then return events.

    A dropped async generator is closed by a task the loop schedules; a bounded number of loop
    turns (not a timer) gives it the chance to run.
    """
    for _ in range(50):
        gc.collect()
        await asyncio.sleep(0)
        if len(calls(logs)) >= expected:
            break
    return calls(logs)


def _estimated_input() -> int:
    return costmeter.estimate(**KW).input_tokens


def _reported(event: dict[str, Any], usage: dict[str, Any]) -> None:
    """Assert *event* bills exactly *usage* as reported by the server."""
    assert (
        "reported",
        usage["input_tokens"],
        usage["output_tokens"],
        usage["output_tokens_details"]["reasoning_tokens"],
    ) == (
        event["usage_source"],
        event["input_tokens"],
        event["output_tokens"],
        event["reasoning_tokens"],
    )
    assert cost_of(SERVED, usage).total_usd == money(event["cost_usd"])


def _estimated(event: dict[str, Any], deltas: list[str]) -> None:
    """
    Assert *event* bills the estimate: pre-flight input tokens, output tokens of the deltas
    received, priced (> $0) and flagged as estimated.
    """
    output = costmeter.count_tokens("".join(deltas), model=SERVED)
    assert ("estimated", _estimated_input(), output) == (
        event["usage_source"],
        event["input_tokens"],
        event["output_tokens"],
    )
    expected = cost_of(SERVED, Usage(input_tokens=_estimated_input(), output_tokens=output))
    assert expected.total_usd == money(event["cost_usd"])
    assert money(event["cost_usd"]) > 0


def _final_usage(server: FakeOpenAI) -> dict[str, Any]:
    """The usage the fake server reports for the module's standard request."""
    assert 20 == server.output_tokens
    return {
        "input_tokens": fake_input_tokens(KW),
        "output_tokens": DELTAS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "input_tokens_details": {"cached_tokens": 0},
    }


class TestEndStates:
    async def test_fully_consumed(self, drive: Driver, server: FakeOpenAI) -> None:
        """A stream read to its end bills the usage of its response.completed event."""
        with capture_logs() as logs:
            events = await drive.drain(await drive.create(stream=True))

        assert "response.completed" == events[-1].type
        [event] = calls(logs)
        assert ("ok", True, events[-1].response.id, SERVED) == (
            event["outcome"],
            event["stream"],
            event["response_id"],
            event["response_model"],
        )
        assert event["request_id"].startswith("req_")
        _reported(event, _final_usage(server))

    async def test_break_early(self, drive: Driver) -> None:
        """
        ``break`` after two deltas, then the stream is dropped: one event, cancelled, billed at
        the estimate of what was consumed.
        """
        with capture_logs() as logs:
            stream = await drive.create(stream=True)
            deltas = await drive.read_deltas(stream, stop_after=2)
            del stream
            events = await _collected(logs)

        assert 2 == len(deltas)
        [event] = events
        assert "cancelled" == event["outcome"]
        _estimated(event, deltas)

    async def test_break_on_the_terminal_event(self, drive: Driver, server: FakeOpenAI) -> None:
        """
        Breaking as soon as response.completed arrives (a common agent-loop pattern) and
        closing: the usage did arrive, so the call is ok and billed as reported.
        """
        with capture_logs() as logs:
            stream = await drive.create(stream=True)
            completed = await drive.read_until(stream, "response.completed")
            await drive.close(stream)

        assert completed is not None
        [event] = calls(logs)
        assert "ok" == event["outcome"]
        _reported(event, _final_usage(server))

    async def test_close(self, drive: Driver) -> None:
        """``close()`` after a few deltas finishes the call at once, before any GC."""
        with capture_logs() as logs:
            stream = await drive.create(stream=True)
            deltas = await drive.read_deltas(stream, stop_after=3)
            await drive.close(stream)
            events = calls(logs)

        [event] = events
        assert "cancelled" == event["outcome"]
        _estimated(event, deltas)

    async def test_leaving_the_with_block(self, drive: Driver) -> None:
        """Leaving ``with`` (``async with``) early closes the stream: one cancelled event."""
        with capture_logs() as logs:
            deltas = await drive.in_with_block(stop_after=1)
            events = calls(logs)

        [event] = events
        assert "cancelled" == event["outcome"]
        _estimated(event, deltas)

    async def test_never_iterated_then_dropped(self, drive: Driver) -> None:
        """
        A stream nobody reads is still billed when it is garbage-collected (the response
        finalizer): input at the estimate, no output seen.
        """
        with capture_logs() as logs:
            stream = await drive.create(stream=True)
            before = len(calls(logs))
            del stream
            events = await _collected(logs)

        assert 0 == before
        [event] = events
        assert ("cancelled", "estimated", 0) == (
            event["outcome"],
            event["usage_source"],
            event["output_tokens"],
        )
        _estimated(event, [])

    async def test_network_error_mid_stream(self, drive: Driver, server: FakeOpenAI) -> None:
        """
        The connection drops after two deltas: the SDK's own APIConnectionError reaches the
        caller unchanged, and the event says error, billed at the estimate.
        """
        server.cut_stream_next(after_events=6)  # created, in_progress, item, part, 2 deltas

        with capture_logs() as logs:
            stream = await drive.create(stream=True)
            with pytest.raises(openai.APIConnectionError) as raised:
                await drive.drain(stream)
            events = calls(logs)

        assert type(raised.value) is openai.APIConnectionError
        [event] = events
        assert ("error", "APIConnectionError") == (event["outcome"], event["error_type"])
        _estimated(event, ["The", " quick"])  # the fake server's first two deltas

    @pytest.mark.parametrize("status", ["incomplete", "failed"])
    async def test_terminal_incomplete_or_failed(
        self, drive: Driver, server: FakeOpenAI, status: str
    ) -> None:
        """response.incomplete / response.failed end the stream; their usage is billed."""
        server.end_stream_with(status)  # type: ignore[arg-type]

        with capture_logs() as logs:
            events = await drive.drain(await drive.create(stream=True))

        assert f"response.{status}" == events[-1].type
        [event] = calls(logs)
        assert status == event["outcome"]
        _reported(event, _final_usage(server))

    async def test_failed_without_usage_is_estimated(
        self, drive: Driver, server: FakeOpenAI
    ) -> None:
        """A response.failed with no usage is billed at the estimate, never as a measured $0."""
        server.end_stream_with("failed")
        server.usage_override_next(None)

        with capture_logs() as logs:
            events = await drive.drain(await drive.create(stream=True))

        deltas = [e.delta for e in events if e.type == DELTA_EVENT]
        [event] = calls(logs)
        assert "failed" == event["outcome"]
        _estimated(event, deltas)


class TestAsyncCancellation:
    async def test_task_cancelled_mid_stream(self, server: FakeOpenAI) -> None:
        """Cancelling the task reading a stream gives one event, outcome cancelled, estimated."""
        server.event_delay = 0.02  # keep the stream in flight while the task is cancelled
        first_delta = asyncio.Event()
        deltas: list[str] = []

        async def reader(client: costmeter.AsyncOpenAI) -> None:
            async for event in await client.responses.create(**KW, stream=True):
                if event.type == DELTA_EVENT:
                    deltas.append(event.delta)
                    first_delta.set()

        async with costmeter.AsyncOpenAI(
            api_key="sk-test", base_url=server.base_url, max_retries=0
        ) as client:
            with capture_logs() as logs:
                task = asyncio.create_task(reader(client))
                await first_delta.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                events = await _collected(logs)

        assert 1 <= len(deltas) < DELTAS
        [event] = events
        assert ("cancelled", "CancelledError") == (event["outcome"], event["error_type"])
        _estimated(event, deltas)


class TestStreamManager:
    async def test_get_final_response(self, drive: Driver, server: FakeOpenAI) -> None:
        """responses.stream(...) + get_final_response(): one reported event."""
        with capture_logs() as logs:
            final = await drive.manager_final()

        [event] = calls(logs)
        assert ("ok", final.id) == (event["outcome"], event["response_id"])
        _reported(event, _final_usage(server))

    async def test_until_done(self, drive: Driver, server: FakeOpenAI) -> None:
        """until_done() consumes the stream: one reported event."""
        with capture_logs() as logs:
            final = await drive.manager_until_done()

        [event] = calls(logs)
        assert DELTAS == final.usage.output_tokens
        _reported(event, _final_usage(server))

    async def test_iterating_events(self, drive: Driver, server: FakeOpenAI) -> None:
        """Iterating the manager's events to the end: one reported event."""
        with capture_logs() as logs:
            deltas = await drive.manager_events(stop_after=None)

        assert DELTAS == len(deltas)
        _reported(calls(logs)[0], _final_usage(server))
        assert 1 == len(calls(logs))

    async def test_manager_exit_after_break(self, drive: Driver) -> None:
        """Breaking out of the manager's events and leaving its ``with``: cancelled, estimated."""
        with capture_logs() as logs:
            deltas = await drive.manager_events(stop_after=4)
            events = calls(logs)

        [event] = events
        assert "cancelled" == event["outcome"]
        _estimated(event, deltas)


class TestOtherPaths:
    async def test_parse(self, drive: Driver, server: FakeOpenAI) -> None:
        """responses.parse (non-stream, bypasses create) is billed once from its usage."""

        class Out(BaseModel):
            x: int

        server.replay_next(_parsed_body(), stream=False)

        with capture_logs() as logs:
            parsed = await drive.parse(Out)

        assert 1 == parsed.output_parsed.x
        [event] = calls(logs)
        _reported(event, _parsed_body()["usage"])

    async def test_raw_lines_only(self, drive: Driver, server: FakeOpenAI) -> None:
        """with_streaming_response(stream=True) read only as raw lines is billed as reported."""
        with capture_logs() as logs:
            lines = await drive.raw_lines()

        assert "event: response.completed" in lines
        [event] = calls(logs)
        assert ("ok", True) == (event["outcome"], event["stream"])
        _reported(event, _final_usage(server))

    async def test_raw_lines_cut_mid_stream(self, drive: Driver, server: FakeOpenAI) -> None:
        """
        A raw reader whose connection drops sees the transport error itself (there is no SDK
        layer to wrap it); the event names that error and bills the deltas the raw lines held.
        """
        server.cut_stream_next(after_events=6)

        with capture_logs() as logs, pytest.raises(httpx2.RemoteProtocolError):
            await drive.raw_lines()

        [event] = calls(logs)
        assert ("error", "RemoteProtocolError") == (event["outcome"], event["error_type"])
        _estimated(event, ["The", " quick"])

    async def test_raw_stream_left_unread(self, drive: Driver) -> None:
        """A raw streaming response closed unread: one cancelled event at the input estimate."""
        with capture_logs() as logs:
            status = await drive.raw_unread()
            events = calls(logs)

        assert 200 == status
        [event] = events
        assert "cancelled" == event["outcome"]
        _estimated(event, [])

    async def test_with_raw_response(self, drive: Driver, server: FakeOpenAI) -> None:
        """with_raw_response: billed once whether or not the caller parses."""
        with capture_logs() as logs:
            raw = await drive.raw_response()
            parsed = await drive.parse_raw(raw)

        [event] = calls(logs)
        assert (parsed.id, raw.headers["x-request-id"]) == (
            event["response_id"],
            event["request_id"],
        )
        _reported(event, _final_usage(server))

    async def test_with_raw_response_stream(self, drive: Driver, server: FakeOpenAI) -> None:
        """with_raw_response(stream=True), parsed into a stream and read: one reported event."""
        with capture_logs() as logs:
            raw = await drive.raw_response(stream=True)
            events = await drive.drain(await drive.parse_raw(raw))

        assert "response.completed" == events[-1].type
        [event] = calls(logs)
        _reported(event, _final_usage(server))


class TestBackgroundReplay:
    async def test_replay_after_full_stream_is_free(
        self, drive: Driver, server: FakeOpenAI
    ) -> None:
        """A background stream read in full, then replayed with starting_after: billed once."""
        with capture_logs() as logs:
            events = await drive.drain(await drive.create(stream=True, background=True))
            response_id = events[-1].response.id
            replayed = await drive.retrieve_stream(response_id, starting_after=5)

        assert all(e.sequence_number > 5 for e in replayed)
        [event] = calls(logs)
        assert (response_id, True) == (event["response_id"], event["background"])
        _reported(event, _final_usage(server))

    async def test_resume_after_a_dropped_connection_bills_once(
        self, drive: Driver, server: FakeOpenAI
    ) -> None:
        """
        A background stream whose connection drops keeps running (and billing) server-side, so
        it is not billed at the estimate: resuming it with retrieve(stream=True,
        starting_after=N) sees the terminal usage, which is billed once however often it is
        replayed.
        """
        server.cut_stream_next(after_events=6)

        with capture_logs() as logs:
            stream = await drive.create(stream=True, background=True)
            with pytest.raises(openai.APIConnectionError):
                await drive.drain(stream)
            after_cut = len(calls(logs))
            response_id = _created_id(server)
            for _ in range(2):
                replayed = await drive.retrieve_stream(response_id, starting_after=5)

        assert 0 == after_cut
        assert "response.completed" == replayed[-1].type
        [event] = calls(logs)
        assert ("ok", response_id, True, True) == (
            event["outcome"],
            event["response_id"],
            event["background"],
            event["stream"],
        )
        _reported(event, _final_usage(server))

    async def test_resume_with_the_stream_manager(self, drive: Driver, server: FakeOpenAI) -> None:
        """responses.stream(response_id=..., starting_after=N) resumes and bills once."""
        server.cut_stream_next(after_events=6)

        with capture_logs() as logs:
            with pytest.raises(openai.APIConnectionError):
                await drive.drain(await drive.create(stream=True, background=True))
            resumed = await drive.manager_resume(_created_id(server), starting_after=5)

        assert "response.completed" == resumed[-1].type
        assert all(e.sequence_number > 5 for e in resumed)
        [event] = calls(logs)
        assert "ok" == event["outcome"]
        _reported(event, _final_usage(server))

    async def test_break_then_resume_bills_once(self, drive: Driver, server: FakeOpenAI) -> None:
        """Breaking out of a background stream and resuming it later: one reported event."""
        with costmeter.budget("1.00") as cap, capture_logs() as logs:
            stream = await drive.create(stream=True, background=True)
            await drive.read_deltas(stream, stop_after=1)
            await drive.close(stream)
            held = cap.reserved_usd
            response_id = _created_id(server)
            await drive.retrieve_stream(response_id, starting_after=4)

        assert held > 0  # pending: the response may still be generating
        [event] = calls(logs)
        assert ("ok", Decimal(0)) == (event["outcome"], cap.reserved_usd)
        assert money(event["cost_usd"]) == cap.spent_usd
        _reported(event, _final_usage(server))


class TestBudgets:
    async def test_abandoned_stream_charges_its_estimate(self, drive: Driver) -> None:
        """A closed-early stream charges the estimate to the budget; nothing stays reserved."""
        with costmeter.budget("1.00", name="t") as cap:
            with capture_logs() as logs:
                stream = await drive.create(stream=True)
                during = cap.reserved_usd
                await drive.read_deltas(stream, stop_after=2)
                await drive.close(stream)

        [event] = calls(logs)
        assert during > 0
        assert (Decimal(0), money(event["cost_usd"]), 1) == (
            cap.reserved_usd,
            cap.spent_usd,
            cap.calls,
        )
        assert cap.spent_usd > 0

    async def test_dropped_stream_releases_on_gc(self, drive: Driver) -> None:
        """A never-read stream holds its reservation until it is collected, then charges."""
        with costmeter.budget("1.00") as cap:
            with capture_logs() as logs:
                stream = await drive.create(stream=True)
                del stream
                [event] = await _collected(logs)

        assert (Decimal(0), money(event["cost_usd"])) == (cap.reserved_usd, cap.spent_usd)

    async def test_network_error_charges_estimate(self, drive: Driver, server: FakeOpenAI) -> None:
        """A stream cut mid-way charges its estimate; the reservation is released."""
        server.cut_stream_next(after_events=6)
        with costmeter.budget("1.00") as cap:
            with capture_logs() as logs:
                stream = await drive.create(stream=True)
                with pytest.raises(openai.APIConnectionError):
                    await drive.drain(stream)

        [event] = calls(logs)
        assert (Decimal(0), money(event["cost_usd"])) == (cap.reserved_usd, cap.spent_usd)
        assert cap.spent_usd > 0


def _created_id(server: FakeOpenAI) -> str:
    """The id of the (single) response the fake server stored."""
    [response_id] = list(server._stored)
    return response_id


def _parsed_body() -> dict[str, Any]:
    usage = {
        "input_tokens": 31,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 38,
    }
    return {
        "id": "resp_parse1",
        "object": "response",
        "created_at": 1_760_000_000,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": SERVED,
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": '{"x": 1}', "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "service_tier": "default",
        "usage": usage,
    }
