"""
Chat Completions and embeddings through the metered clients, over real loopback HTTP
(`costmeter.testing.FakeOpenAI`): create (plain and streamed), parse, the stream() manager, the
raw and streaming-response variants, usage mapping, audio pricing, and budgets.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

import costmeter
from costmeter import cost_of
from costmeter._input_count import count_request_input, output_tokens_of
from costmeter.testing import FakeOpenAI

from .conftest import TRAFFIC
from .helpers import calls, chat_body, money

MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _record(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((TRAFFIC / name).read_text())
    return record


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    assert [] == server.errors
    assert 0 == server.pending_faults


def _kwargs(server: FakeOpenAI) -> dict[str, Any]:
    return {"api_key": "sk-test-chat", "base_url": server.base_url, "max_retries": 0}


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[costmeter.OpenAI]:
    with costmeter.OpenAI(**_kwargs(server)) as metered:
        yield metered


@pytest.fixture
def usage_client(server: FakeOpenAI) -> Iterator[costmeter.OpenAI]:
    """A client that opted in to stream usage (include_stream_usage=True)."""
    with costmeter.OpenAI(**_kwargs(server), include_stream_usage=True) as metered:
        yield metered


@pytest.fixture
async def aclient(server: FakeOpenAI) -> AsyncIterator[costmeter.AsyncOpenAI]:
    async with costmeter.AsyncOpenAI(**_kwargs(server)) as metered:
        yield metered


def _token_fields(event: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        event["input_tokens"],
        event["cached_input_tokens"],
        event["output_tokens"],
        event["reasoning_tokens"],
    )


class TestCreate:
    def test_reported_usage_with_cached_tokens(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A recorded response with cached prompt tokens: exact token fields and cost."""
        record = _record("openllmetry-16.json")
        server.replay_next(record["response"], stream=False)

        with capture_logs() as logs:
            result = client.chat.completions.create(**record["request"])

        assert isinstance(result, openai.types.chat.ChatCompletion)
        [event] = calls(logs)
        assert {
            "api": "chat.completions",
            "model": record["request"]["model"],
            "response_model": "gpt-4o-mini-2024-07-18",
            "response_id": record["response"]["id"],
            "stream": False,
            "outcome": "ok",
            "usage_source": "reported",
            "price_status": "ok",
        }.items() <= event.items()
        assert (1149, 1024, 353, 0) == _token_fields(event)
        expected = cost_of(record["model"], record["usage"], service_tier="default")
        assert expected.total_usd == money(event["cost_usd"])
        assert expected.cached_input_usd == money(event["cached_input_cost_usd"])

    def test_older_response_without_detail_objects(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A gpt-4-0613 response has no *_tokens_details: zero cached/reasoning, full cost."""
        record = _record("openllmetry-14.json")
        assert "prompt_tokens_details" not in record["usage"]
        server.replay_next(record["response"], stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(**record["request"])

        [event] = calls(logs)
        assert (82, 0, 16, 0) == _token_fields(event)
        assert Decimal("0.00342") == money(event["cost_usd"])  # 82 x $30 + 16 x $60 per 1M

    def test_reasoning_tokens(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """completion_tokens_details.reasoning_tokens are reported, inside output_tokens."""
        record = _record("pydantic-ai-37.json")
        server.replay_next(record["response"], stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(**record["request"])

        [event] = calls(logs)
        assert (11, 0, 809, 768) == _token_fields(event)
        assert cost_of(record["model"], record["usage"]).total_usd == money(event["cost_usd"])

    def test_request_body_unchanged(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """The metered client sends exactly the JSON the bare SDK sends, stream or not."""
        bare = openai.OpenAI(**_kwargs(server))
        sent = []
        for stream in (False, True):
            for sdk in (bare, client):
                result = sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=stream
                )
                for _ in result if stream else ():  # type: ignore[attr-defined]
                    pass
                assert server.last_request is not None
                sent.append(server.last_request.json)

        assert sent[0] == sent[1]
        assert sent[2] == sent[3]
        assert "stream_options" not in sent[3]

    def test_estimate_before_sending(self, server: FakeOpenAI) -> None:
        """The event carries the pre-flight estimate of the messages and its worst case."""
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50}
        client = costmeter.OpenAI(**_kwargs(server), always_estimate=True)

        with capture_logs() as logs:
            client.chat.completions.create(**body)  # type: ignore[call-overload]

        [event] = calls(logs)
        tokens, _complete, _ = count_request_input("chat.completions", body, "gpt-4o-mini")
        assert tokens == event["estimated_input_tokens"]
        # No service_tier: the project may default to priority, so the worst case is priced at
        # gpt-4o-mini's priority rates ($0.25 in / $1.00 out per 1M), on the input plus the
        # estimator's margin (5 %, rounded up, + 64 tokens).
        padded = tokens + -(-tokens * 5 // 100) + 64
        worst = (padded * Decimal("0.25") + 50 * Decimal("1.00")) / Decimal(10**6)
        assert worst == money(event["estimated_cost_usd"])

    def test_finish_reason_length_is_incomplete(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A completion cut by max_tokens (finish_reason "length") has outcome incomplete."""
        body = chat_body()
        body["choices"][0]["finish_reason"] = "length"
        server.replay_next(body, stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)

        assert ["incomplete"] == [e["outcome"] for e in calls(logs)]

    async def test_async_create(self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI) -> None:
        """The async client meters chat like the sync one."""
        record = _record("openllmetry-16.json")
        server.replay_next(record["response"], stream=False)

        with capture_logs() as logs:
            await aclient.chat.completions.create(**record["request"])

        [event] = calls(logs)
        assert (1149, 1024, 353, 0) == _token_fields(event)
        assert cost_of(record["model"], record["usage"]).total_usd == money(event["cost_usd"])


class TestStreams:
    def test_default_leaves_request_alone_and_estimates(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """
        Without the opt-in, no stream_options are added; the event estimates input (pre-flight)
        and output (tokens of the streamed deltas) and says so.
        """
        with capture_logs() as logs:
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            texts = [c.choices[0].delta.content or "" for c in stream if c.choices]

        assert server.last_request is not None
        assert "stream_options" not in server.last_request.json  # type: ignore[operator]
        [event] = calls(logs)
        assert ("ok", "estimated", True) == (
            event["outcome"],
            event["usage_source"],
            event["stream"],
        )
        assert event["estimated_input_tokens"] == event["input_tokens"]
        assert output_tokens_of(texts, "gpt-4o-mini-2024-07-18") == event["output_tokens"] > 0
        assert money(event["cost_usd"]) > 0

    def test_opt_in_hides_the_usage_chunk(
        self, usage_client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """
        include_stream_usage=True asks for usage and hides the extra usage-only chunk, so the
        common `chunk.choices[0]` loop keeps working; the event is reported, not estimated.
        """
        with capture_logs() as logs:
            stream = usage_client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            parts = [chunk.choices[0].delta.content for chunk in stream]  # no IndexError

        assert server.last_request is not None
        assert {"include_usage": True} == server.last_request.json["stream_options"]  # type: ignore[index]
        assert all(part is not None for part in parts[:-1])
        [event] = calls(logs)
        assert ("ok", "reported", 20) == (
            event["outcome"],
            event["usage_source"],
            event["output_tokens"],
        )

    def test_opt_in_merges_existing_stream_options(
        self, usage_client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """The caller's own stream_options are kept; include_usage is added next to them."""
        stream = usage_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_obfuscation": False},
        )
        for _ in stream:
            pass

        assert server.last_request is not None
        assert {"include_obfuscation": False, "include_usage": True} == (
            server.last_request.json["stream_options"]  # type: ignore[index]
        )

    def test_caller_asked_for_usage_sees_the_usage_chunk(
        self, usage_client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A caller who set include_usage themselves gets the usage chunk, as without costmeter."""
        stream = usage_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)

        assert [] == chunks[-1].choices
        assert chunks[-1].usage is not None

    def test_recorded_stream_with_usage(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """A recorded stream (caller asked include_usage) is billed from its usage chunk."""
        record = _record("pydantic-ai-41.json")
        server.replay_next(record["response"], stream=True)

        with capture_logs() as logs:
            for _ in client.chat.completions.create(**record["request"]):
                pass

        [event] = calls(logs)
        assert (423, 0, 15, 0) == _token_fields(event)
        assert "reported" == event["usage_source"]
        assert cost_of(record["model"], record["usage"]).total_usd == money(event["cost_usd"])

    def test_break_early_is_cancelled_and_estimated(self, usage_client: costmeter.OpenAI) -> None:
        """Leaving a stream after one chunk: one event, cancelled, estimated from what arrived."""
        with capture_logs() as logs:
            stream = usage_client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            for _ in stream:
                break
            stream.close()

        [event] = calls(logs)
        assert ("cancelled", "estimated") == (event["outcome"], event["usage_source"])

    def test_raw_stream_reader_is_never_altered(
        self, usage_client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """
        A raw SSE reader gets the bytes of the request they made: even with the opt-in no
        include_usage is injected; reading to [DONE] is an "ok" call, estimated.
        """
        with capture_logs() as logs:
            with usage_client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            ) as raw:
                lines = list(raw.iter_lines())

        assert "data: [DONE]" in lines
        assert server.last_request is not None
        assert "stream_options" not in server.last_request.json  # type: ignore[operator]
        [event] = calls(logs)
        assert ("ok", "estimated") == (event["outcome"], event["usage_source"])
        assert event["output_tokens"] > 0

    async def test_async_opt_in(self, server: FakeOpenAI) -> None:
        """Async twin of the opt-in: `chunk.choices[0]` works and the event is reported."""
        async with costmeter.AsyncOpenAI(**_kwargs(server), include_stream_usage=True) as aclient:
            with capture_logs() as logs:
                stream = await aclient.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True
                )
                parts = [chunk.choices[0].delta.content async for chunk in stream]

        assert len(parts) > 1
        [event] = calls(logs)
        assert ("ok", "reported", 20) == (
            event["outcome"],
            event["usage_source"],
            event["output_tokens"],
        )


class _Answer(BaseModel):
    city: str


class TestHelpersAndRawVariants:
    def test_parse(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """chat.completions.parse posts directly (bypassing create) and is metered."""
        body = chat_body(prompt=70, completion=9)
        body["choices"][0]["message"]["content"] = '{"city": "Paris"}'
        server.replay_next(body, stream=False)

        with capture_logs() as logs:
            parsed = client.chat.completions.parse(
                model="gpt-4o-mini", messages=MESSAGES, response_format=_Answer
            )

        assert "Paris" == parsed.choices[0].message.parsed.city  # type: ignore[union-attr]
        [event] = calls(logs)
        assert (70, 9, "reported") == (
            event["input_tokens"],
            event["output_tokens"],
            event["usage_source"],
        )

    def test_stream_manager_default(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """The stream() manager works unchanged and its call is metered once (estimated)."""
        with capture_logs() as logs:
            with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as s:
                final = s.get_final_completion()

        assert final.choices[0].message.content
        assert server.last_request is not None
        assert "stream_options" not in server.last_request.json  # type: ignore[operator]
        [event] = calls(logs)
        assert ("ok", "estimated") == (event["outcome"], event["usage_source"])

    def test_stream_manager_opt_in(self, usage_client: costmeter.OpenAI) -> None:
        """
        With the opt-in the stream() manager's call is billed from reported usage, and the
        manager's final completion carries that usage (the helper reads the usage chunk itself).
        """
        with capture_logs() as logs:
            with usage_client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as s:
                texts = [e.delta for e in s if e.type == "content.delta"]
                final = s.get_final_completion()

        assert texts
        assert final.usage is not None
        assert 20 == final.usage.completion_tokens
        [event] = calls(logs)
        assert ("ok", "reported", 20) == (
            event["outcome"],
            event["usage_source"],
            event["output_tokens"],
        )

    def test_with_raw_response(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """with_raw_response is metered without the caller parsing; parse() still works."""
        server.replay_next(chat_body(prompt=31), stream=False)

        with capture_logs() as logs:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )

        assert "Hi there" == raw.parse().choices[0].message.content
        [event] = calls(logs)
        assert (31, raw.headers["x-request-id"]) == (event["input_tokens"], event["request_id"])

    def test_streaming_response_json(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """with_streaming_response on a non-stream call, read with .json(), is metered."""
        server.replay_next(chat_body(prompt=44), stream=False)

        with capture_logs() as logs:
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            ) as raw:
                data = raw.json()

        assert "chatcmpl-1" == data["id"]
        assert [44] == [e["input_tokens"] for e in calls(logs)]


class TestAudio:
    def test_audio_tokens_priced_at_audio_rates(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """
        A recorded audio-input call: the 44 audio tokens are billed at the audio rate ($40 per
        1M for gpt-4o-audio-preview-2024-12-17), not the $2.50 text rate; the event shows it.
        """
        record = _record("pydantic-ai-32.json")
        server.replay_next(record["response"], stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(**record["request"])

        [event] = calls(logs)
        assert (44, 0) == (event["audio_input_tokens"], event["audio_output_tokens"])
        # 20 text x $2.50 + 44 audio x $40 input, 9 x $10 output, per 1M tokens
        assert Decimal("0.00190") == money(event["cost_usd"])
        assert Decimal("0.00176") == money(event["audio_input_cost_usd"])
        assert "ok" == event["price_status"]

    def test_audio_without_a_price_is_not_billed_as_text(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """No source has an audio rate for the model: cost is null and the status says why."""
        body = chat_body(model="gpt-4o-audio-preview", prompt=64, completion=9)
        body["usage"]["prompt_tokens_details"]["audio_tokens"] = 44
        server.replay_next(body, stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(model="gpt-4o-audio-preview", messages=MESSAGES)

        [event] = calls(logs)
        assert (None, "unpriced_audio_tokens", 64, 44) == (
            event["cost_usd"],
            event["price_status"],
            event["input_tokens"],
            event["audio_input_tokens"],
        )

    def test_registered_audio_prices(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """Audio rates given with register_prices() are used for the audio tokens."""
        costmeter.register_prices(
            {
                "gpt-4o-audio-preview": {
                    "input": "2.5",
                    "output": "10",
                    "audio_input": "40",
                    "audio_output": "80",
                }
            }
        )
        body = chat_body(model="gpt-4o-audio-preview", prompt=100, completion=50)
        body["usage"]["prompt_tokens_details"]["audio_tokens"] = 60
        body["usage"]["completion_tokens_details"]["audio_tokens"] = 30
        server.replay_next(body, stream=False)

        with capture_logs() as logs:
            client.chat.completions.create(model="gpt-4o-audio-preview", messages=MESSAGES)

        [event] = calls(logs)
        # input 40 x 2.5 + 60 x 40; output 20 x 10 + 30 x 80 (per 1M)
        assert Decimal("0.0051") == money(event["cost_usd"])
        assert Decimal("0.0024") == money(event["audio_output_cost_usd"])

    def test_text_only_events_keep_their_schema(self, client: costmeter.OpenAI) -> None:
        """Audio fields appear only when the usage has audio tokens."""
        with capture_logs() as logs:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        assert "audio_input_tokens" not in calls(logs)[0]


class TestEmbeddings:
    def test_usage_cost_and_estimate(self, server: FakeOpenAI) -> None:
        """An embeddings call: api "embeddings", reported input tokens, no output, exact cost."""
        texts = ["the first passage to embed", "and a second one"]

        with capture_logs() as logs:
            client = costmeter.OpenAI(**_kwargs(server), always_estimate=True)
            result = client.embeddings.create(model="text-embedding-3-small", input=texts)

        assert 2 == len(result.data)
        [event] = calls(logs)
        assert result.usage.prompt_tokens == event["input_tokens"]
        assert ("embeddings", 0, "reported", "ok") == (
            event["api"],
            event["output_tokens"],
            event["usage_source"],
            event["price_status"],
        )
        expected = cost_of("text-embedding-3-small", result.usage.model_dump()).total_usd
        assert expected == money(event["cost_usd"])
        body = {"model": "text-embedding-3-small", "input": texts}
        tokens, _, _ = count_request_input("embeddings", body, "text-embedding-3-small")
        assert tokens == event["estimated_input_tokens"] > 0

    async def test_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        """The async client meters embeddings too."""
        with capture_logs() as logs:
            await aclient.embeddings.create(model="text-embedding-3-large", input="one passage")

        [event] = calls(logs)
        assert ("embeddings", "text-embedding-3-large") == (event["api"], event["model"])
        assert money(event["cost_usd"]) > 0


class TestBudgets:
    def test_chat_refused_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """A chat call whose worst case exceeds the budget is refused; nothing is sent."""
        with capture_logs() as logs, pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.0001", name="tiny"):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)

        assert 0 == server.calls
        assert [] == calls(logs)
        [refusal] = [e for e in logs if e["event"] == "costmeter.budget.exceeded"]
        assert ("tiny", True) == (refusal["budget"], refusal["refused"])

    def test_embeddings_refused_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """An embeddings call the budget cannot cover is refused before sending."""
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.000001"):
                client.embeddings.create(
                    model="text-embedding-3-large", input=["a long passage " * 200]
                )

        assert 0 == server.calls

    async def test_async_chat_refused(
        self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI
    ) -> None:
        """The async client refuses the same way."""
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.0001"):
                await aclient.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, max_tokens=1000
                )

        assert 0 == server.calls

    def test_settles_the_reported_cost(self, client: costmeter.OpenAI) -> None:
        """Inside a budget, the chat call's reported cost is what the budget spends."""
        with capture_logs() as logs, costmeter.budget("1") as b:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        assert money(calls(logs)[0]["cost_usd"]) == b.spent_usd
