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

from costmeter._endpoints import Request
from costmeter._endpoints.completions import CompletionsEndpoint
from costmeter._observe import Observation
from costmeter.testing import FakeOpenAI

ENDPOINT = CompletionsEndpoint()
MILLION = Decimal(1_000_000)


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
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
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
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
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


@pytest.fixture(scope="module")
def server() -> Any:
    with FakeOpenAI() as fake:
        yield fake
