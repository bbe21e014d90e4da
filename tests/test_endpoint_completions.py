"""
Legacy completions (``client.completions.create``, api ``completions``): the endpoint's worst
case (every prompt, ``max_tokens`` default 16, ``max(n, best_of)`` candidates), its observation of
plain and streamed ``text_completion`` objects, and the fallback count (echo stripped).

Rates (genai-prices, OpenAI pricing page): gpt-3.5-turbo-instruct $1.50 in / $2.00 out per 1M
tokens; davinci-002 $2 / $2; babbage-002 $0.40 / $0.40.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter._endpoints import Request
from costmeter._endpoints.completions import CompletionsEndpoint
from costmeter._observe import Observation
from costmeter.testing import OMIT, FakeOpenAI

from . import endpoint_fixtures
from .endpoint_fixtures import client_kwargs
from .helpers import calls, money

client, aclient = (
    endpoint_fixtures.client,
    endpoint_fixtures.aclient,
)
_fresh_server = endpoint_fixtures._fresh_server

ENDPOINT = CompletionsEndpoint()
MILLION = Decimal(1_000_000)
INSTRUCT_IN, INSTRUCT_OUT = Decimal("1.5"), Decimal(2)  # gpt-3.5-turbo-instruct, $ per 1M
DAVINCI = Decimal(2)  # davinci-002, in and out


# Fake usage (costmeter.testing._completions): a prompt counts len // 4 + 1 tokens, each candidate
# 20 output tokens cut at max_tokens. "Say this is a test" -> 5 (5 real cl100k tokens too),
# "Hi" -> 1 (1 real token): the estimate sees the same input as the bill.
PLAIN = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}
PLAIN_COST = (5 * INSTRUCT_IN + 7 * INSTRUCT_OUT) / MILLION  # $0.0000215


class TestMetered:
    def test_plain(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            response = client.completions.create(**PLAIN)
        assert response.choices[0].text
        [event] = calls(logs)
        assert event["api"] == "completions"
        assert (event["input_tokens"], event["output_tokens"]) == (5, 7)
        assert money(event["cost_usd"]) == PLAIN_COST
        assert money(event["estimated_cost_usd"]) == PLAIN_COST  # 5 input + max_tokens 7
        assert event["outcome"] == "incomplete"  # cut at max_tokens: finish_reason "length"

    def test_n_and_best_of(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            response = client.completions.create(
                model="gpt-3.5-turbo-instruct",
                prompt=["Say this is a test", "Hi"],
                max_tokens=10,
                n=2,
                best_of=3,
            )
        assert len(response.choices) == 4  # n per prompt
        [event] = calls(logs)
        # 6 input tokens; output 10 x 3 candidates (all billed) x 2 prompts = 60
        expected = (6 * INSTRUCT_IN + 60 * INSTRUCT_OUT) / MILLION
        assert (event["input_tokens"], event["output_tokens"]) == (6, 60)
        assert money(event["cost_usd"]) == expected
        assert money(event["estimated_cost_usd"]) >= expected

    def test_stream_with_usage_chunk(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            stream = client.completions.create(
                model="davinci-002",
                prompt="Say this is a test",
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].text for c in stream if c.choices)
        assert text == "The quick brown"
        [event] = calls(logs)
        assert event["stream"] is True
        assert event["usage_source"] == "reported"
        assert money(event["cost_usd"]) == (5 + 3) * DAVINCI / MILLION

    def test_stream_without_usage_counts_the_text(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            for _ in client.completions.create(
                model="davinci-002", prompt="Say this is a test", max_tokens=3, stream=True
            ):
                pass
        [event] = calls(logs)
        assert event["usage_source"] == "estimated"
        # "The quick brown" is 3 cl100k tokens; input as estimated: 5
        assert (event["input_tokens"], event["output_tokens"]) == (5, 3)
        assert money(event["cost_usd"]) == (5 + 3) * DAVINCI / MILLION

    def test_usage_missing_with_echo_bills_only_the_generated_text(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        server.usage_override_next(OMIT, path="/v1/completions")
        with capture_logs() as logs:
            response = client.completions.create(**PLAIN, echo=True)
        assert response.choices[0].text.startswith("Say this is a test")
        [event] = calls(logs)
        assert event["usage_source"] == "estimated"
        # the text is the 5-token prompt + 7 generated tokens; the echoed prompt is not output
        assert (event["input_tokens"], event["output_tokens"]) == (5, 7)
        assert money(event["cost_usd"]) == PLAIN_COST

    def test_with_streaming_response(self, client: costmeter.OpenAI) -> None:
        with (
            capture_logs() as logs,
            client.completions.with_streaming_response.create(
                **PLAIN, stream=True, stream_options={"include_usage": True}
            ) as response,
        ):
            lines = list(response.iter_lines())
        assert any(line.startswith("data: ") for line in lines)
        [event] = calls(logs)
        assert event["usage_source"] == "reported"
        assert money(event["cost_usd"]) == PLAIN_COST

    def test_with_raw_response(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            raw = client.completions.with_raw_response.create(**PLAIN)
            assert raw.parse().usage is not None
        [event] = calls(logs)
        assert money(event["cost_usd"]) == PLAIN_COST

    async def test_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.completions.create(**PLAIN)
            stream = await aclient.completions.create(
                **PLAIN, stream=True, stream_options={"include_usage": True}
            )
            async for _ in stream:
                pass
        assert [money(e["cost_usd"]) for e in calls(logs)] == [PLAIN_COST, PLAIN_COST]


class TestBudget:
    def test_reserves_the_worst_case(self, client: costmeter.OpenAI) -> None:
        with costmeter.budget("0.001") as budget:
            client.completions.create(**PLAIN)
        assert budget.spent_usd == PLAIN_COST

    def test_too_small_refuses_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        with costmeter.budget(PLAIN_COST / 2), pytest.raises(costmeter.BudgetExceededError):
            client.completions.create(**PLAIN)
        assert not any(r.path == "/v1/completions" for r in server.requests)

    async def test_async_refusal(self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI) -> None:
        # best_of 5 multiplies the bound: 5 + 7 x 5 tokens no longer fit a one-call budget
        with costmeter.budget(PLAIN_COST * 2), pytest.raises(costmeter.BudgetExceededError):
            await aclient.completions.create(**PLAIN, best_of=5)
        assert not any(r.path == "/v1/completions" for r in server.requests)


def _request(stream: bool = False, **body: Any) -> Request:
    return Request(api="completions", method="post", path="/completions", body=body, stream=stream)


class TestWorstCase:
    def test_every_prompt_every_candidate(self) -> None:
        # "Say this is a test" is 5 cl100k tokens, "Hello world" 2: 7 input tokens.
        # Output: max_tokens 10 x max(n=2, best_of=3) candidates x 2 prompts = 60 tokens.
        reserve = ENDPOINT.estimate(
            _request(
                model="gpt-3.5-turbo-instruct",
                prompt=["Say this is a test", "Hello world"],
                max_tokens=10,
                n=2,
                best_of=3,
            )
        )
        assert reserve.input_tokens == 7
        assert reserve.cost_usd == (7 * Decimal("1.5") + 60 * Decimal(2)) / MILLION
        assert reserve.complete

    def test_default_max_tokens_is_16(self) -> None:
        reserve = ENDPOINT.estimate(_request(model="davinci-002", prompt="Hello world"))
        assert reserve.cost_usd == (2 * Decimal(2) + 16 * Decimal(2)) / MILLION

    def test_n_without_best_of(self) -> None:
        reserve = ENDPOINT.estimate(
            _request(model="babbage-002", prompt="Hello world", n=4, max_tokens=5)
        )
        assert reserve.cost_usd == (2 + 4 * 5) * Decimal("0.4") / MILLION

    def test_token_prompts(self) -> None:
        one = ENDPOINT.estimate(_request(model="babbage-002", prompt=[1, 2, 3], max_tokens=0))
        many = ENDPOINT.estimate(
            _request(model="babbage-002", prompt=[[1, 2, 3], [4, 5]], max_tokens=1)
        )
        assert (one.input_tokens, one.cost_usd) == (3, 3 * Decimal("0.4") / MILLION)
        assert many.input_tokens == 5
        assert many.cost_usd == (5 + 2) * Decimal("0.4") / MILLION

    def test_suffix_counts_with_every_prompt(self) -> None:
        reserve = ENDPOINT.estimate(
            _request(
                model="gpt-3.5-turbo-instruct",
                prompt=["Hello world", "Hello world"],
                suffix="Hello world",
                max_tokens=0,
            )
        )
        assert reserve.input_tokens == 2 * (2 + 2)

    def test_echo_adds_no_output(self) -> None:
        body = {"model": "davinci-002", "prompt": "Say this is a test", "max_tokens": 3}
        plain = ENDPOINT.estimate(_request(**body))
        echoed = ENDPOINT.estimate(_request(**body, echo=True))
        assert plain.cost_usd == echoed.cost_usd == (5 + 3) * Decimal(2) / MILLION

    def test_unknown_model_has_no_price(self) -> None:
        reserve = ENDPOINT.estimate(_request(model="no-such-model-xyz", prompt="Hello world"))
        assert reserve.cost_usd is None
        assert reserve.input_tokens == 2

    def test_batch_tier_falls_back_to_standard_rates(self) -> None:
        # genai-prices has no Batch rates for davinci-002: the dearer standard rates bound it.
        reserve = ENDPOINT.estimate(
            _request(model="davinci-002", prompt="Hello world", max_tokens=1, service_tier="batch")
        )
        assert reserve.cost_usd == 3 * Decimal(2) / MILLION


class TestObserve:
    def test_plain_response(self, server: FakeOpenAI) -> None:
        client = openai.OpenAI(**client_kwargs(server))
        response = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7
        )
        seen = Observation()
        ENDPOINT.observe(seen, response)
        assert seen.usage is not None
        # fake: prompt_tokens = len("Say this is a test") // 4 + 1 = 5; output min(20, 7) = 7
        assert (seen.usage.input_tokens, seen.usage.output_tokens) == (5, 7)
        assert seen.status == "incomplete"  # finish_reason "length"
        assert seen.response_model == "gpt-3.5-turbo-instruct"

    def test_stream_text_and_usage_chunk(self, server: FakeOpenAI) -> None:
        client = openai.OpenAI(**client_kwargs(server))
        seen = Observation()
        for chunk in client.completions.create(
            model="davinci-002",
            prompt="Hello world",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        ):
            ENDPOINT.observe(seen, chunk)
        assert seen.deltas == ["The", " quick", " brown"]
        assert seen.usage is not None
        assert (seen.usage.input_tokens, seen.usage.output_tokens) == (3, 3)
        assert seen.status == "incomplete"

    def test_fallback_counts_streamed_text_without_the_echo(self) -> None:
        request = _request(stream=True, model="davinci-002", prompt="Say this is a test", echo=True)
        seen = Observation()
        for text in ("Say this is a test", " The quick", " brown fox"):
            ENDPOINT.observe(seen, _chunk(text))
        usage = ENDPOINT.fallback_usage(request, seen, 5)
        # " The quick brown fox" is 4 tokens; the echoed 5-token prompt is not output.
        assert (usage.input_tokens, usage.output_tokens) == (5, 4)

    def test_fallback_plain_response_counts_its_choices(self) -> None:
        request = _request(model="davinci-002", prompt="Hello world", n=2)
        seen = Observation()
        ENDPOINT.observe(
            seen,
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": "davinci-002",
                "choices": [
                    {"index": 0, "text": "The quick brown fox", "finish_reason": "stop"},
                    {"index": 1, "text": " jumps over the lazy dog", "finish_reason": "stop"},
                ],
            },
        )
        usage = ENDPOINT.fallback_usage(request, seen, 2)
        assert usage.output_tokens == 9  # the two texts joined: the 9-token pangram
        assert seen.status == "completed"


def _chunk(text: str) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "davinci-002",
        "choices": [{"index": 0, "text": text, "finish_reason": None}],
    }
