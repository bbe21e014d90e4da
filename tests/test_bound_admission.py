"""
Admission on a bound (issue 16): an in-memory budget with room to spare admits a text call on
its UTF-8 bound instead of tokenizing it; near the limit, in a shared ledger, or whenever the
exact worst case is needed (a lost response), the exact count decides and is what is charged.
"""

from __future__ import annotations

import contextvars
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import openai
import pytest
from hypothesis import given, settings
from structlog.testing import capture_logs

import costmeter
from costmeter._endpoints import Request, endpoint_for
from costmeter._input_count import count_request_input, utf8_length
from costmeter._tokenizer import encoding_for
from costmeter.testing import FakeOpenAI
from tests.conftest import load_traffic
from tests.helpers import calls, money

MODEL = "gpt-4.1-mini"
PROMPT = "Summarize the minutes of the meeting in three short bullet points, please. " * 20
LIMITS = {"max_output_tokens": 200}


def _exact() -> costmeter.Estimate:
    return costmeter.estimate(model=MODEL, input=PROMPT, **LIMITS)


def _client(fake: FakeOpenAI) -> costmeter.OpenAI:
    return costmeter.OpenAI(base_url=fake.base_url, api_key="sk-bound-tests", max_retries=0)


def _create(client: openai.OpenAI) -> Any:
    return client.responses.create(model=MODEL, input=PROMPT, **LIMITS)


# -- the bound is sound --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_utf8_length_is_never_below_the_token_count(text: str) -> None:
    for model in ("gpt-4o", "gpt-4"):  # o200k_base, cl100k_base
        assert utf8_length(text) >= len(encoding_for(model).encode_ordinary(text))


def test_utf8_length_of_lone_surrogates_covers_tiktokens_replacement() -> None:
    """tiktoken replaces a lone surrogate by U+FFFD (3 bytes); the bound must not raise."""
    text = "a\ud800b\udfffc"
    tokens = len(encoding_for("gpt-4o").encode(text))
    assert 9 == utf8_length(text) >= tokens


@pytest.mark.parametrize(
    ("name", "record"),
    [item for item in load_traffic() if item[1]["endpoint"] in ("responses", "chat.completions")],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bound_covers_the_estimate_on_recorded_requests(name: str, record: dict[str, Any]) -> None:
    """Tools, schemas, images, histories: the bound's worst case is never below the estimate's."""
    path = "/responses" if record["endpoint"] == "responses" else "/chat/completions"
    found = endpoint_for("post", path)
    assert found is not None
    endpoint = found[0]
    request = Request(endpoint.api, "post", path, record["request"])
    model = request.model or ""
    bound_tokens = count_request_input(endpoint.api, request.body, model, bound=True)[0]
    assert bound_tokens >= count_request_input(endpoint.api, request.body, model)[0]
    bound, exact = endpoint.bound(request), endpoint.estimate(request)
    assert bound is not None
    if exact.cost_usd is None:  # unpriced (audio with no audio rate): so is the bound
        assert (None, exact.unpriced) == (bound.cost_usd, bound.unpriced)
    else:
        assert bound.cost_usd is not None
        assert bound.cost_usd >= exact.cost_usd


# -- what a call holds, and what its event says -------------------------------------------------


def test_a_roomy_budget_holds_the_bound_and_never_counts(fake: FakeOpenAI) -> None:
    """In flight the budget holds the bound (at least the exact worst case); the event says so
    (`estimated_cost_usd` is the hold; no input was counted); the charge is the real cost."""
    exact = _exact()
    seen: list[Decimal] = []
    with _client(fake) as client, capture_logs() as logs, costmeter.budget("50") as budget:
        fake.delay_next(0.5)
        context = contextvars.copy_context()  # the budget is active in the calling thread
        call = threading.Thread(target=context.run, args=(_create, client))
        call.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            if budget.reserved_usd:
                seen.append(budget.reserved_usd)
            time.sleep(0.005)
        call.join()
    (event,) = calls(logs)
    assert exact.cost_usd is not None
    assert seen[0] == money(event["estimated_cost_usd"])
    assert seen[0] > exact.cost_usd  # English text: several bytes per token
    assert event["estimated_input_tokens"] is None
    assert (Decimal(0), money(event["cost_usd"])) == (budget.reserved_usd, budget.spent_usd)


def test_near_the_limit_the_exact_count_decides(fake: FakeOpenAI) -> None:
    """
    A budget with room for exactly the worst case admits the call (the bound does not fit:
    it is no refusal), counts no refusal, and the event carries the exact estimate.
    """
    exact = _exact()
    assert exact.cost_usd is not None
    with _client(fake) as client, capture_logs() as logs:
        with costmeter.budget(exact.cost_usd, name="tight") as budget:
            _create(client)
    (event,) = calls(logs)
    assert (exact.input_tokens, exact.cost_usd) == (
        event["estimated_input_tokens"],
        money(event["estimated_cost_usd"]),
    )
    assert (0, 1) == (budget.refused, budget.calls)
    assert [] == [e for e in logs if e["event"] == "costmeter.budget.exceeded"]


def test_a_bound_above_its_share_of_the_room_is_counted(fake: FakeOpenAI) -> None:
    """Room for the bound, but not ten times over: the call holds its exact worst case."""
    exact = _exact()
    assert exact.cost_usd is not None
    with _client(fake) as client, capture_logs() as logs:
        with costmeter.budget(exact.cost_usd * 5):
            _create(client)
    (event,) = calls(logs)
    assert exact.input_tokens == event["estimated_input_tokens"]


def test_a_warn_mode_budget_warns_on_the_exact_worst_case_only(fake: FakeOpenAI) -> None:
    """The bound does not fit a warn-mode budget but the exact worst case does: no warning."""
    exact = _exact()
    assert exact.cost_usd is not None
    with _client(fake) as client, capture_logs() as logs:
        with costmeter.budget(exact.cost_usd, on_exceed="warn"):
            _create(client)
        with costmeter.budget(exact.cost_usd / 2, on_exceed="warn"):
            _create(client)
    warnings = [e for e in logs if e["event"] == "costmeter.budget.exceeded"]
    assert 1 == len(warnings)
    assert exact.cost_usd == money(warnings[0]["estimated_cost_usd"])


def test_a_lost_response_is_charged_its_exact_worst_case(fake: FakeOpenAI) -> None:
    """Admitted on the bound, the response lost: charged the exact worst case, not the bound."""
    exact = _exact()
    with _client(fake) as client, capture_logs() as logs, costmeter.budget("50") as budget:
        fake.reset_next()
        with pytest.raises(openai.APIConnectionError):
            _create(client)
    (event,) = calls(logs)
    assert ("reserved", exact.input_tokens) == (
        event["usage_source"],
        event["estimated_input_tokens"],
    )
    assert exact.cost_usd == money(event["cost_usd"]) == money(event["charged_usd"])
    assert (Decimal(0), exact.cost_usd) == (budget.reserved_usd, budget.spent_usd)


async def test_async_lost_response_is_charged_its_exact_worst_case(fake: FakeOpenAI) -> None:
    exact = _exact()
    async with costmeter.AsyncOpenAI(
        base_url=fake.base_url, api_key="sk-bound-tests", max_retries=0
    ) as client:
        with capture_logs() as logs, costmeter.budget("50") as budget:
            fake.reset_next()
            with pytest.raises(openai.APIConnectionError):
                await client.responses.create(model=MODEL, input=PROMPT, **LIMITS)
    (event,) = calls(logs)
    assert exact.cost_usd == money(event["cost_usd"]) == budget.spent_usd


def test_a_shared_ledger_holds_the_exact_worst_case(fake: FakeOpenAI, tmp_path: Path) -> None:
    """SQLite/Redis holds are seen by other processes and charged when a process dies: exact."""
    exact = _exact()
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with _client(fake) as client, capture_logs() as logs:
        with costmeter.budget("50", name="shared", ledger=ledger):
            _create(client)
    (event,) = calls(logs)
    assert (exact.input_tokens, exact.cost_usd) == (
        event["estimated_input_tokens"],
        money(event["estimated_cost_usd"]),
    )


def test_near_the_limit_holds_taken_on_bounds_are_counted_first(fake: FakeOpenAI) -> None:
    """
    A call in flight holds its bound; a later call decided on its exact worst case (near the
    limit) first shrinks that hold to the exact worst case, so refusals never depend on bounds.
    """
    exact = _exact()
    assert exact.cost_usd is not None
    with _client(fake) as client, capture_logs() as logs, costmeter.budget("50"):
        _create(client)
    bound = money(calls(logs)[0]["estimated_cost_usd"])  # what a roomy budget holds for it
    assert bound is not None
    with _client(fake) as client, capture_logs() as logs:
        # room for the first call's bound (a tenth of the limit), not for the second's
        with costmeter.budget(bound * Decimal("10.5")) as budget:
            fake.delay_next(1.0)
            context = contextvars.copy_context()
            slow = threading.Thread(target=context.run, args=(_create, client))
            slow.start()
            deadline = time.monotonic() + 10
            while fake.pending_faults and time.monotonic() < deadline:  # it reached the server
                time.sleep(0.005)
            assert bound == budget.reserved_usd
            _create(client)  # decided on its exact worst case: the slow call's hold counted first
            in_flight = budget.reserved_usd
            slow.join()
    assert exact.cost_usd == in_flight
    slow_event, fast_event = sorted(calls(logs), key=lambda e: e["duration_ms"], reverse=True)
    assert exact.input_tokens == slow_event["estimated_input_tokens"]
    assert exact.input_tokens == fast_event["estimated_input_tokens"]
