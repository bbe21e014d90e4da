"""
Web search priced per tool variant (issue 13). Every expected amount is computed by hand from
OpenAI's pricing page ("Built-in tools" → "Web search tool call"): ``web_search`` $10 / 1k calls
+ content tokens at model rates (gpt-4o-mini and gpt-4.1-mini: a fixed 8,000 input tokens per
call); ``web_search_preview`` $10 / 1k on reasoning models, $25 / 1k with free content tokens on
non-reasoning ones. Token rates ($ per 1M, input / output): gpt-5 1.25 / 10, o3 2 / 8, gpt-4.1
2 / 8, gpt-4.1-mini 0.40 / 1.60, gpt-4o-mini 0.15 / 0.60, gpt-4o 2.50 / 10.
"""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI
from tests.helpers import calls, money, response_body

M = Decimal(1_000_000)


def _searched(
    model: str, input_tokens: int, *, reported: int | None, actions: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A response with *actions* ``web_search_call`` items and, unless ``None``, *reported*
    billable searches in ``tool_usage``."""
    body = response_body(model=model, input_tokens=input_tokens, output_tokens=30, reasoning=0)
    body["output"] = [
        {
            "id": f"ws_{i}",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": action, "query": "q"}
            if action == "search"
            else {"type": action, "url": "https://example.com"},
        }
        for i, action in enumerate(actions)
    ] + body["output"]
    if reported is not None:
        body["tool_usage"] = {"web_search": {"num_requests": reported}}
    return body


CASES = [
    # tool, model, input tokens, reported searches, expected fee, expected token cost
    pytest.param(
        "web_search",
        "gpt-5",
        20_000,
        2,
        2 * Decimal("0.01"),
        (20_000 * Decimal("1.25") + 30 * Decimal(10)) / M,
        id="web_search-gpt-5",
    ),
    pytest.param(
        "web_search_preview",
        "o3",
        9_000,
        1,
        Decimal("0.01"),
        (9_000 * Decimal(2) + 30 * Decimal(8)) / M,
        id="preview-reasoning-o3",
    ),
    pytest.param(
        "web_search_preview",
        "gpt-4.1",
        319,
        1,
        Decimal("0.025"),
        (319 * Decimal(2) + 30 * Decimal(8)) / M,
        id="preview-non-reasoning-gpt-4.1",
    ),
    pytest.param(
        "web_search",
        "gpt-4.1-mini",
        16_500,
        2,
        2 * Decimal("0.01"),  # 16,500 input tokens already hold the two 8,000-token blocks
        (16_500 * Decimal("0.40") + 30 * Decimal("1.60")) / M,
        id="fixed-block-reported-gpt-4.1-mini",
    ),
    pytest.param(
        "web_search",
        "gpt-4o-mini",
        300,
        1,
        Decimal("0.01") + 7_700 * Decimal("0.15") / M,  # the block's 7,700-token shortfall
        (300 * Decimal("0.15") + 30 * Decimal("0.60")) / M,
        id="fixed-block-shortfall-gpt-4o-mini",
    ),
]


@pytest.mark.parametrize(("tool", "model", "input_tokens", "searches", "fee", "tokens"), CASES)
def test_each_variant_is_priced_at_its_rate(
    fake: FakeOpenAI,
    tool: str,
    model: str,
    input_tokens: int,
    searches: int,
    fee: Decimal,
    tokens: Decimal,
) -> None:
    fake.replay_next(_searched(model, input_tokens, reported=searches), stream=False)
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-ws", max_retries=0) as client,
        capture_logs() as logs,
    ):
        client.responses.create(model=model, input="news?", tools=[{"type": tool}])

    [event] = calls(logs)
    assert (searches, fee, tokens + fee) == (
        event["web_search_calls"],
        money(event["tool_cost_usd"]),
        money(event["cost_usd"]),
    )


def test_search_items_are_counted_when_tool_usage_is_absent(fake: FakeOpenAI) -> None:
    """Without ``tool_usage``, each ``web_search_call`` whose action is a search is billed;
    opening or finding in a page is not a search."""
    body = _searched("gpt-4o", 500, reported=None, actions=("search", "open_page", "search"))
    fake.replay_next(body, stream=False)
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-ws", max_retries=0) as client,
        capture_logs() as logs,
    ):
        client.responses.create(
            model="gpt-4o", input="news?", tools=[{"type": "web_search_preview"}]
        )

    [event] = calls(logs)
    fee = 2 * Decimal("0.025")  # gpt-4o is not a reasoning model: the preview's $25 / 1k
    tokens = (500 * Decimal("2.50") + 30 * Decimal(10)) / M
    assert (2, fee, tokens + fee) == (
        event["web_search_calls"],
        money(event["tool_cost_usd"]),
        money(event["cost_usd"]),
    )


def test_reported_count_wins_over_items(fake: FakeOpenAI) -> None:
    """``num_requests`` excludes discounted searches: 0 reported means no fee, items or not."""
    body = _searched("gpt-4.1", 400, reported=0, actions=("search",))
    fake.replay_next(body, stream=False)
    with (
        costmeter.OpenAI(base_url=fake.base_url, api_key="sk-ws", max_retries=0) as client,
        capture_logs() as logs,
    ):
        client.responses.create(model="gpt-4.1", input="hi", tools=[{"type": "web_search"}])

    [event] = calls(logs)
    assert (0, (400 * Decimal(2) + 30 * Decimal(8)) / M) == (
        event["web_search_calls"],
        money(event["cost_usd"]),
    )


async def test_async_stream_prices_the_variant(fake: FakeOpenAI) -> None:
    body = _searched("gpt-4.1", 319, reported=3)
    created = {**body, "status": "in_progress", "usage": None, "tool_usage": None}
    fake.replay_next(
        [
            {"type": "response.created", "sequence_number": 0, "response": created},
            {"type": "response.completed", "sequence_number": 1, "response": body},
        ],
        stream=True,
    )
    with capture_logs() as logs:
        async with costmeter.AsyncOpenAI(
            base_url=fake.base_url, api_key="sk-ws", max_retries=0
        ) as client:
            stream = await client.responses.create(
                model="gpt-4.1",
                input="news?",
                tools=[{"type": "web_search_preview_2025_03_11"}],
                stream=True,
            )
            async for _ in stream:
                pass

    [event] = calls(logs)
    fee = 3 * Decimal("0.025")
    assert fee + (319 * Decimal(2) + 30 * Decimal(8)) / M == money(event["cost_usd"])


class TestReservation:
    """The worst case holds ``max_tool_calls`` searches at the variant's per-call worst."""

    @pytest.mark.parametrize(
        ("tool", "model", "per_search"),
        [
            ("web_search_preview", "gpt-4.1", Decimal("0.025")),
            ("web_search", "gpt-4.1", Decimal("0.01")),
            ("web_search", "gpt-4.1-mini", Decimal("0.01") + 8_000 * Decimal("0.40") / M),
            ("web_search_preview", "o3", Decimal("0.01")),
        ],
    )
    def test_reserved_per_variant(
        self, fake: FakeOpenAI, tool: str, model: str, per_search: Decimal
    ) -> None:
        base = costmeter.estimate(model=model, input="news?", max_output_tokens=100).cost_usd
        assert base is not None
        with (
            costmeter.OpenAI(
                base_url=fake.base_url, api_key="sk-ws", max_retries=0, always_estimate=True
            ) as client,
            capture_logs() as logs,
        ):
            client.responses.create(
                model=model,
                input="news?",
                tools=[{"type": tool}],
                max_tool_calls=3,
                max_output_tokens=100,
            )

        [event] = calls(logs)
        assert base + 3 * per_search == money(event["estimated_cost_usd"])

    def test_a_budget_short_of_the_preview_rate_refuses_before_sending(
        self, fake: FakeOpenAI
    ) -> None:
        base = costmeter.estimate(model="gpt-4.1", input="news?", max_output_tokens=100).cost_usd
        assert base is not None
        # enough for 2 searches at $10 / 1k, not at the non-reasoning preview's $25 / 1k
        with (
            costmeter.OpenAI(base_url=fake.base_url, api_key="sk-ws", max_retries=0) as client,
            costmeter.budget(base + 2 * Decimal("0.024"), name="ws"),
            pytest.raises(costmeter.BudgetExceededError),
        ):
            client.responses.create(
                model="gpt-4.1",
                input="news?",
                tools=[{"type": "web_search_preview"}],
                max_tool_calls=2,
                max_output_tokens=100,
            )
        assert [] == fake.requests


@pytest.mark.parametrize(
    ("model", "line"),
    [
        ("gpt-4o", "web_search_preview         $0.025 / call + content tokens: free (hosted tool)"),
        (
            "o3",
            "web_search_preview         $0.01 / call + content tokens: model rates (hosted tool)",
        ),
        (
            "gpt-4.1-mini",
            "web_search                 $0.01 / call + content tokens: 8,000 input tokens per call"
            " (hosted tool)",
        ),
    ],
)
def test_price_shows_each_variant(model: str, line: str) -> None:
    from costmeter.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert 0 == main(["price", model])

    assert line in [shown.strip() for shown in out.getvalue().splitlines()]


def test_price_lists_no_web_search_for_models_without_it() -> None:
    """An embedding model has no web search tool: no variant is listed."""
    from costmeter.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert 0 == main(["price", "text-embedding-3-small"])

    assert "web_search" not in out.getvalue()
