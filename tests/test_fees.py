"""
Fees beyond tokens (issue 13): hosted tools, regional processing, tiers no source prices.
Each expected amount is computed by hand from OpenAI's published rates.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx2
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI
from tests.helpers import calls, money, response_body

TOOLS: list[dict[str, Any]] = [
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}},
    {"type": "image_generation", "model": "gpt-image-1"},
]


def _with_tools(body: dict[str, Any]) -> dict[str, Any]:
    def call(kind: str, i: int, **extra: Any) -> dict[str, Any]:
        return {"id": f"{kind}_{i}", "type": kind, "status": "completed", **extra}

    body["output"] = [
        *(call("file_search_call", i, queries=["q"], results=None) for i in range(3)),
        call("code_interpreter_call", 1, container_id="cntr_a", code="1+1", outputs=None),
        call("code_interpreter_call", 2, container_id="cntr_a", code="2+2", outputs=None),
        call("code_interpreter_call", 3, container_id="cntr_b", code="3+3", outputs=None),
        *body["output"],
    ]
    body["tool_usage"] = {
        "image_gen": {
            "input_tokens": 50,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
            "output_tokens": 1000,
            "total_tokens": 1050,
        },
        "web_search": {"num_requests": 0},
    }
    return body


def test_hosted_tool_fees_are_priced(fake: FakeOpenAI) -> None:
    """3 file searches, 2 containers (4g), image-tool tokens: each fee in tool_cost_usd."""
    body = _with_tools(response_body(model="gpt-4.1-2025-04-14", input_tokens=1000, reasoning=0))
    fake.replay_next(body, stream=False)
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-fees", max_retries=0) as client,
        capture_logs() as logs,
    ):
        client.responses.create(model="gpt-4.1", input="find it", tools=TOOLS)

    [event] = calls(logs)
    file_search = 3 * Decimal("2.50") / 1000  # $2.50 per 1,000 calls
    containers = 2 * Decimal("0.12")  # per 4g container session
    image_tool = (50 * Decimal(5) + 1000 * Decimal(40)) / 1_000_000  # gpt-image-1 $5 in, $40 out
    tokens = (1000 * Decimal(2) + 30 * Decimal(8)) / 1_000_000  # gpt-4.1 $2 in, $8 out

    assert (3, 2, 50, 1000) == (
        event["file_search_calls"],
        event["container_sessions"],
        event["image_gen_input_tokens"],
        event["image_gen_output_tokens"],
    )
    assert file_search + containers + image_tool == money(event["tool_cost_usd"])
    assert tokens + file_search + containers + image_tool == money(event["cost_usd"])


def test_tool_fees_are_reserved_from_max_tool_calls(fake: FakeOpenAI) -> None:
    """The worst case holds max_tool_calls calls of the dearest hosted tool offered."""
    one = costmeter.estimate(model="gpt-4.1", input="find it", max_output_tokens=100).cost_usd
    assert one is not None
    image_call = 6240 * Decimal(40) / 1_000_000  # the largest gpt-image-1 image
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-fees", max_retries=0) as client,
        capture_logs() as logs,
        costmeter.budget(one + image_call * 2, name="tools"),
    ):
        client.responses.create(
            model="gpt-4.1", input="find it", tools=TOOLS, max_tool_calls=2, max_output_tokens=100
        )
        with pytest.raises(costmeter.BudgetExceededError):
            client.responses.create(
                model="gpt-4.1",
                input="find it",
                tools=TOOLS,
                max_tool_calls=3,
                max_output_tokens=100,
            )

    [event] = calls(logs)
    assert one + 2 * image_call == money(event["estimated_cost_usd"])


class _ToLoopback(httpx2.BaseTransport):
    """Sends every request to the fake server, whatever host the client addresses."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.fake.port)
        return self.inner.handle_request(request)


def test_regional_host_adds_ten_percent(fake: FakeOpenAI) -> None:
    """A client on eu.api.openai.com (``data_residency="eu"``) is billed +10%, and says so."""
    body = response_body(model="gpt-4.1-2025-04-14", input_tokens=1000, reasoning=0)
    fake.replay_next(body, stream=False)
    with (
        costmeter.OpenAI(
            data_residency="eu",
            api_key="sk-fees",
            max_retries=0,
            http_client=httpx2.Client(transport=_ToLoopback(fake)),
        ) as client,
        capture_logs() as logs,
    ):
        client.responses.create(model="gpt-4.1", input="hi")
        elsewhere = client.with_options(base_url=fake.base_url)

    [event] = calls(logs)
    plain = (1000 * Decimal(2) + 30 * Decimal(8)) / 1_000_000
    assert ("eu", plain * Decimal("1.1")) == (event["region"], money(event["cost_usd"]))
    assert "eu.api.openai.com" == fake.last_request.headers.get("host")
    assert elsewhere._costmeter.region is None  # a copy aimed at another host is not regional


def test_a_tier_no_source_prices_is_priced_at_the_dearest(fake: FakeOpenAI) -> None:
    """A served tier nobody publishes a price for (``ultrafast``) is never left unpriced."""
    body = response_body(
        model="gpt-4.1-2025-04-14", input_tokens=1000, reasoning=0, service_tier="ultrafast"
    )
    fake.replay_next(body, stream=False)
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-fees", max_retries=0) as client,
        capture_logs() as logs,
    ):
        client.responses.create(model="gpt-4.1", input="hi")

    [event] = calls(logs)
    priority = (1000 * Decimal("3.5") + 30 * Decimal(14)) / 1_000_000  # gpt-4.1 priority rates
    assert ("unknown_tier", "ultrafast") == (event["price_status"], event["service_tier"])
    assert priority == money(event["cost_usd"])
