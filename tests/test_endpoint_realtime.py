"""
The WebSocket APIs through the public clients against the loopback `FakeRealtime`:
``realtime.connect()`` (api ``realtime``) and ``responses.connect()`` (api
``responses.websocket``), sync and async: one ``costmeter.call`` per response, priced exactly;
budgets reserve on ``response.create`` before the frame is sent.

Rates (genai-prices, per 1M tokens): gpt-realtime text in $4, cached text $0.40, audio in $32,
cached audio $0.40, image in $5, cached image $0.50, text out $16, audio out $64;
gpt-4o-mini in $0.15, out $0.60.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeRealtime
from tests.helpers import calls

M = Decimal(1_000_000)
# The fake's default Realtime usage (REALTIME_USAGE), by hand:
#   uncached text 300-100=200 x $4, uncached audio 600-80=520 x $32, uncached image 100-20=80 x $5
#   cached text 100 x $0.40, cached audio 80 x $0.40, cached image 20 x $0.50
#   output text 100 x $16, output audio 400 x $64
REALTIME_COST = (
    200 * Decimal(4)
    + 520 * Decimal(32)
    + 80 * Decimal(5)
    + 100 * Decimal("0.4")
    + 80 * Decimal("0.4")
    + 20 * Decimal("0.5")
    + 100 * Decimal(16)
    + 400 * Decimal(64)
) / M  # = 0.045122
# The fake's Responses usage: 40 input x $0.15 + 10 output x $0.60 (gpt-4o-mini).
RESPONSES_COST = (40 * Decimal("0.15") + 10 * Decimal("0.6")) / M  # = 0.000012


@pytest.fixture
def server() -> Iterator[FakeRealtime]:
    with FakeRealtime() as fake:
        yield fake


def _client(server: FakeRealtime, cls: Any) -> Any:
    return cls(
        api_key="test",
        base_url="http://127.0.0.1:9/v1",
        websocket_base_url=server.ws_url,
        max_retries=0,
        always_estimate=True,  # the tests check each response's estimate against its bill
    )


def _sync(server: FakeRealtime) -> costmeter.OpenAI:
    client: costmeter.OpenAI = _client(server, costmeter.OpenAI)
    return client


def _async(server: FakeRealtime) -> costmeter.AsyncOpenAI:
    client: costmeter.AsyncOpenAI = _client(server, costmeter.AsyncOpenAI)
    return client


def _until(connection: Any, kind: str) -> list[str]:
    seen = []
    for event in connection:
        seen.append(event.type)
        if event.type == kind:
            return seen
    raise AssertionError(f"connection closed before {kind}: {seen}")


async def _until_async(connection: Any, kind: str) -> list[str]:
    seen = []
    async for event in connection:
        seen.append(event.type)
        if event.type == kind:
            return seen
    raise AssertionError(f"connection closed before {kind}: {seen}")


def _money(value: float | None) -> Decimal:
    assert value is not None
    return Decimal(str(value))


class TestRealtime:
    def test_one_event_per_response_priced_exactly(self, server: FakeRealtime) -> None:
        with capture_logs() as logs, _sync(server).realtime.connect(model="gpt-realtime") as conn:
            for _ in range(2):
                conn.response.create(response={"output_modalities": ["text"]})
                _until(conn, "response.done")

        events = calls(logs)
        assert [e["api"] for e in events] == ["realtime", "realtime"]
        for event in events:
            assert _money(event["cost_usd"]) == REALTIME_COST == Decimal("0.045122")
            assert (event["input_tokens"], event["cached_input_tokens"]) == (1000, 200)
            assert (event["audio_input_tokens"], event["image_input_tokens"]) == (600, 100)
            assert (event["output_tokens"], event["audio_output_tokens"]) == (500, 400)
            assert (event["model"], event["outcome"], event["usage_source"]) == (
                "gpt-realtime",
                "ok",
                "reported",
            )
        assert len({e["response_id"] for e in events}) == 2

    async def test_async(self, server: FakeRealtime) -> None:
        client = _async(server)
        with capture_logs() as logs:
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await conn.response.create()
                await _until_async(conn, "response.done")

        [event] = calls(logs)
        assert (event["api"], _money(event["cost_usd"])) == ("realtime", REALTIME_COST)

    def test_estimate_counts_what_the_connection_sent(self, server: FakeRealtime) -> None:
        """One second of pcm16 at 24 kHz (48,000 bytes) is 10 audio tokens; text output capped."""
        audio = "A" * 64_000  # base64 of 48,000 bytes
        with capture_logs() as logs, _sync(server).realtime.connect(model="gpt-realtime") as conn:
            conn.input_audio_buffer.append(audio=audio)
            conn.response.create(response={"output_modalities": ["text"], "max_output_tokens": 100})
            _until(conn, "response.done")

        [event] = calls(logs)
        assert event["estimated_input_tokens"] == 10
        # 10 audio tokens x $32 + 100 text output tokens x $16
        assert _money(event["estimated_cost_usd"]) == (10 * 32 + 100 * 16) / M
        assert event["estimate_complete"] is False

    def test_budget_refuses_response_create_before_sending(self, server: FakeRealtime) -> None:
        """
        No max_output_tokens: 4,096 (DEFAULT_MAX_OUTPUT_TOKENS) audio output tokens x $64 =
        $0.262144 cannot fit in $0.10; the frame is never sent.
        """
        with _sync(server).realtime.connect(model="gpt-realtime") as conn:
            with costmeter.budget("0.10"), pytest.raises(costmeter.BudgetExceededError):
                conn.response.create()
            with capture_logs() as logs, costmeter.budget("1") as ok:
                conn.response.create()
                _until(conn, "response.done")

        assert server.types_received() == ["response.create"]  # only the admitted one
        [event] = calls(logs)
        assert ok.spent_usd == REALTIME_COST == _money(event["cost_usd"])

    def test_server_started_response_is_billed(self, server: FakeRealtime) -> None:
        """A committed audio turn (server VAD) starts a response with no response.create."""
        with (
            capture_logs() as logs,
            costmeter.budget("5") as spend,
            _sync(server).realtime.connect(model="gpt-realtime") as conn,
        ):
            conn.input_audio_buffer.append(audio="AAAA")
            conn.input_audio_buffer.commit()
            _until(conn, "response.done")

        assert "response.create" not in server.types_received()
        [event] = calls(logs)
        assert (event["api"], _money(event["cost_usd"])) == ("realtime", REALTIME_COST)
        assert spend.spent_usd == REALTIME_COST

    def test_connection_closed_mid_response_finishes_the_call(self, server: FakeRealtime) -> None:
        client = _sync(server)
        with (
            capture_logs() as logs,
            client.realtime.connect(
                model="gpt-realtime", extra_headers={"x-fake-hang": "1"}
            ) as conn,
        ):
            conn.response.create(response={"output_modalities": ["text"], "max_output_tokens": 50})
            _until(conn, "response.output_text.delta")
            assert calls(logs) == []

        [event] = calls(logs)
        assert (event["outcome"], event["usage_source"]) == ("cancelled", "estimated")
        # Nothing sent before: no input; the one delta "hi" is 1 output token x $16.
        assert _money(event["cost_usd"]) == 1 * 16 / M

    def test_rejected_response_create_is_not_billed(self, server: FakeRealtime) -> None:
        """An error event naming the response.create's event_id: released, charged $0."""
        client = _sync(server)
        with (
            capture_logs() as logs,
            costmeter.budget("1") as spend,
            client.realtime.connect(
                model="gpt-realtime", extra_headers={"x-fake-reject": "1"}
            ) as conn,
        ):
            conn.response.create(event_id="evt_create_1")
            _until(conn, "error")
            [event] = calls(logs)
            assert spend.reserved_usd == 0

        assert (event["outcome"], event["error_type"], event["cost_usd"]) == (
            "error",
            "ServerError",
            0.0,
        )
        assert spend.spent_usd == 0

    def test_large_response_done_frame(self, server: FakeRealtime) -> None:
        """A response.done of 100 kB (long output) is still found by its leading type."""
        client = _sync(server)
        with (
            capture_logs() as logs,
            client.realtime.connect(
                model="gpt-realtime", extra_headers={"x-fake-pad": "100000"}
            ) as conn,
        ):
            conn.response.create()
            _until(conn, "response.done")

        [event] = calls(logs)
        assert _money(event["cost_usd"]) == REALTIME_COST

    def test_usage_knob_text_only_cache(self, server: FakeRealtime) -> None:
        """Missing detail objects: the input is text (10 x $4), cached text 5 x $0.40."""
        usage = {
            "input_tokens": 15,
            "output_tokens": 3,
            "input_token_details": {"cached_tokens": 5},
        }
        headers = {"x-fake-usage": json.dumps(usage)}
        client = _sync(server)
        with (
            capture_logs() as logs,
            client.realtime.connect(model="gpt-realtime-mini", extra_headers=headers) as conn,
        ):
            conn.response.create()
            _until(conn, "response.done")

        [event] = calls(logs)
        # gpt-realtime-mini: text in $0.60, cached $0.06, text out $2.40
        expected = (10 * Decimal("0.6") + 5 * Decimal("0.06") + 3 * Decimal("2.4")) / M
        assert _money(event["cost_usd"]) == expected


class TestBetaRealtime:
    """The older ``beta.realtime.connect()`` (``OpenAI-Beta: realtime=v1``) is metered alike."""

    def test_sync(self, server: FakeRealtime) -> None:
        client = _sync(server)
        with (
            capture_logs() as logs,
            client.beta.realtime.connect(model="gpt-realtime") as conn,
        ):
            conn.response.create(response={"modalities": ["text"], "max_response_output_tokens": 8})
            _until(conn, "response.done")

        [event] = calls(logs)
        assert (event["api"], _money(event["cost_usd"])) == ("realtime", REALTIME_COST)
        assert _money(event["estimated_cost_usd"]) == 8 * 16 / M  # 8 text output tokens x $16

    async def test_async(self, server: FakeRealtime) -> None:
        client = _async(server)
        with capture_logs() as logs:
            async with client.beta.realtime.connect(model="gpt-realtime") as conn:
                await conn.response.create()
                await _until_async(conn, "response.done")

        [event] = calls(logs)
        assert (event["api"], _money(event["cost_usd"])) == ("realtime", REALTIME_COST)


class TestResponsesWebSocket:
    def test_sync_one_event_per_response(self, server: FakeRealtime) -> None:
        with capture_logs() as logs, _sync(server).responses.connect() as conn:
            for _ in range(2):
                conn.response.create(model="gpt-4o-mini", input="hello", max_output_tokens=50)
                _until(conn, "response.completed")

        events = calls(logs)
        assert [e["api"] for e in events] == ["responses.websocket"] * 2
        for event in events:
            assert _money(event["cost_usd"]) == RESPONSES_COST == Decimal("0.000012")
            assert _money(event["estimated_cost_usd"]) >= RESPONSES_COST

    async def test_async_and_budget_refusal(self, server: FakeRealtime) -> None:
        client = _async(server)
        with capture_logs() as logs:
            async with client.responses.connect() as conn:
                with costmeter.budget("0.0000001"), pytest.raises(costmeter.BudgetExceededError):
                    await conn.response.create(model="gpt-4o-mini", input="hello")
                await conn.response.create(model="gpt-4o-mini", input="hello")
                await _until_async(conn, "response.completed")

        assert server.types_received() == ["response.create"]
        [event] = calls(logs)
        assert (event["api"], _money(event["cost_usd"])) == ("responses.websocket", RESPONSES_COST)

    def test_rejected_and_unanswered(self, server: FakeRealtime) -> None:
        """An error answer bills nothing; a create left unanswered at close, its worst case."""
        client = _sync(server)
        with capture_logs() as logs:
            with client.responses.connect(extra_headers={"x-fake-reject": "1"}) as conn:
                conn.response.create(model="gpt-4o-mini", input="hello", max_output_tokens=50)
                _until(conn, "error")
            with costmeter.budget("1") as spend, client.responses.connect() as conn:
                conn.response.create(model="gpt-4o-mini", input="hello", max_output_tokens=50)

        rejected, unanswered = calls(logs)
        assert (rejected["outcome"], rejected["cost_usd"]) == ("error", 0.0)
        assert unanswered["usage_source"] == "reserved"
        assert _money(unanswered["cost_usd"]) == _money(unanswered["estimated_cost_usd"])
        assert spend.spent_usd == _money(unanswered["estimated_cost_usd"]) > 0

    def test_beta_responses_connect_is_metered(self, server: FakeRealtime) -> None:
        with capture_logs() as logs, _sync(server).beta.responses.connect() as conn:
            conn.response.create(model="gpt-4o-mini", input="hello")
            _until(conn, "response.completed")

        assert [e["api"] for e in calls(logs)] == ["responses.websocket"]
