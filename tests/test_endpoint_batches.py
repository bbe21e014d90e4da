"""
The Batch API (api ``batches``): a batch is billed once per batch id, at Batch rates, when a
lookup sees it finish; ``batches.create`` reserves the worst case of an input file the client
uploaded itself, and says so when it cannot.

Rates: gpt-4o-mini $0.15 in / $0.60 out per 1M tokens standard (OpenAI pricing page,
genai-prices), Batch rates half of that: $0.075 / $0.30. davinci-002 is given a Batch tier of
$1 / $1 (OpenAI's published Batch price, half its $2 / $2) with `register_prices`, because
genai-prices has none for it.

Fake server numbers (see `costmeter.testing._batches`): a chat line's input tokens are
``len(compact JSON of [messages]) // 4 + 8``, its output 20 tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types import Batch
from structlog.testing import capture_logs

import costmeter
from costmeter._endpoints import Request
from costmeter._endpoints.batches import (
    BatchesEndpoint,
    FileWorstCase,
    _Memo,
    clear_memos,
    output_file_usage,
    worst_case_of_file,
)
from costmeter._observe import Observation
from costmeter._usage import Usage
from costmeter.testing import FakeOpenAI

from . import endpoint_fixtures
from .endpoint_fixtures import client_kwargs
from .helpers import calls, money

client, aclient = (
    endpoint_fixtures.client,
    endpoint_fixtures.aclient,
)
_fresh_server = endpoint_fixtures._fresh_server

MILLION = Decimal(1_000_000)
# gpt-4o-mini at Batch rates: half of the standard $0.15 / $0.60.
IN, OUT = Decimal("0.15") / 2, Decimal("0.60") / 2

CHAT_LINES = [
    {
        "custom_id": "first",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say this is a test"}],
            "max_tokens": 50,
        },
    },
    {
        "custom_id": "second",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello world"}],
            "max_tokens": 50,
        },
    },
]
# Fake usage: [[{"role":"user","content":"Say this is a test"}]] is 50 chars -> 50 // 4 + 8 = 20
# input tokens; the second line 43 chars -> 18. Each line 20 output tokens.
CHAT_COST = (38 * IN + 40 * OUT) / MILLION

COMPLETION_LINES = [
    {
        "custom_id": f"c{i}",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "davinci-002", "prompt": prompt, "max_tokens": 10, "n": 2},
    }
    for i, prompt in enumerate(["Say this is a test", "Hi"])
]
# Worst case at davinci-002's Batch rate ($1 / $1 per 1M): prompts of 5 and 1 cl100k tokens,
# output max_tokens 10 x 2 candidates for each of the 2 lines.
COMPLETION_RESERVE = (5 + 1 + 10 * 2 * 2) * Decimal(1) / MILLION
# Fake usage: prompts len // 4 + 1 -> 5 and 1 (the real counts too); output min(20, 10) x 2
# candidates per line: the bound is reached.
COMPLETION_COST = (5 + 1 + 10 * 2 * 2) * Decimal(1) / MILLION


def batch_calls(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches' ``costmeter.call`` events (file uploads have their own tests)."""
    return [e for e in calls(logs) if e["api"] == "batches"]


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"


@pytest.fixture(autouse=True)
def _fresh_memos() -> Iterator[None]:
    clear_memos()
    costmeter.register_prices(
        {
            "davinci-002": {
                "input": "2",
                "output": "2",
                "tiers": {"batch": {"input": "1", "output": "1"}},
            }
        }
    )
    yield
    clear_memos()


def _submit(client: costmeter.OpenAI, lines: list[dict[str, Any]], **extra: Any) -> Batch:
    """Upload *lines* as a batch input file and create the batch, through *client*."""
    upload = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint=lines[0]["url"], completion_window="24h", **extra
    )


def _posted_batches(server: FakeOpenAI) -> int:
    return sum(1 for r in server.requests if r.method == "POST" and r.path == "/v1/batches")


class TestLifecycle:
    def test_billed_once_at_batch_rates(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            upload = client.files.create(file=("in.jsonl", _jsonl(CHAT_LINES)), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            assert batch.status == "validating"
            assert client.batches.retrieve(batch.id).status == "in_progress"
            assert batch_calls(logs) == []  # the batch is still running
            done = client.batches.retrieve(batch.id)
            assert done.status == "completed"
            client.batches.retrieve(batch.id)  # seen again: not billed again
        [event] = batch_calls(logs)
        assert event["api"] == "batches"
        assert event["response_id"] == batch.id
        assert event["background"] is True
        assert event["service_tier"] == "batch"
        assert (event["input_tokens"], event["output_tokens"]) == (38, 40)
        assert money(event["cost_usd"]) == CHAT_COST
        assert event["usage_source"] == "reported"

    def test_second_client_in_the_process_bills_it_once(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        batch = _submit(client, CHAT_LINES)
        with capture_logs() as logs, costmeter.OpenAI(**client_kwargs(server)) as other:
            other.batches.retrieve(batch.id)
            other.batches.retrieve(batch.id)  # completed: billed here, for the creating call
            client.batches.retrieve(batch.id)
            other.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert money(event["cost_usd"]) == CHAT_COST

    async def test_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            upload = await aclient.files.create(
                file=("in.jsonl", _jsonl(CHAT_LINES)), purpose="batch"
            )
            batch = await aclient.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            while (await aclient.batches.retrieve(batch.id)).status != "completed":
                pass
            await aclient.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert money(event["cost_usd"]) == CHAT_COST

    def test_with_raw_response(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            upload = client.files.with_raw_response.create(
                file=("in.jsonl", _jsonl(CHAT_LINES)), purpose="batch"
            ).parse()
            batch = client.batches.with_raw_response.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).parse()
            client.batches.with_raw_response.retrieve(batch.id)
            client.batches.with_raw_response.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert money(event["cost_usd"]) == CHAT_COST

    def test_cancelled_before_running_costs_nothing(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            batch = _submit(client, CHAT_LINES)
            assert client.batches.cancel(batch.id).status == "cancelled"
            client.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert money(event["cost_usd"]) == 0
        assert event["outcome"] == "cancelled"

    def test_model_from_the_input_lines(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            batch = _submit(client, CHAT_LINES, extra_headers={"x-fake-batch-omit": "model"})
            client.batches.retrieve(batch.id)
            client.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert event["response_model"] == "gpt-4o-mini"
        assert money(event["cost_usd"]) == CHAT_COST


class TestOutputFile:
    def test_batch_without_usage_is_billed_from_its_output_file(
        self, client: costmeter.OpenAI
    ) -> None:
        with capture_logs() as logs:
            batch = _submit(client, CHAT_LINES, extra_headers={"x-fake-batch-omit": "usage"})
            client.batches.retrieve(batch.id)
            done = client.batches.retrieve(batch.id)
            assert done.status == "completed"
            assert done.usage is None
            assert batch_calls(logs) == []  # waiting for the caller to read the output file
            assert done.output_file_id is not None
            lines = client.files.content(done.output_file_id).text.splitlines()
            client.files.content(done.output_file_id)  # read again: not billed again
        assert len(lines) == 2
        [event] = batch_calls(logs)
        assert event["response_id"] == batch.id
        assert (event["input_tokens"], event["output_tokens"]) == (38, 40)
        assert money(event["cost_usd"]) == CHAT_COST

    def test_other_files_bill_nothing(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            upload = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
            assert client.files.content(upload.id).content == b"hello"
        assert calls(logs) == []


class TestReservation:
    def test_worst_case_of_the_uploaded_lines_at_batch_rates(
        self, client: costmeter.OpenAI
    ) -> None:
        with capture_logs() as logs, costmeter.budget("0.01") as budget:
            batch = _submit(client, COMPLETION_LINES)
            assert budget.remaining_usd == Decimal("0.01") - COMPLETION_RESERVE
            client.batches.retrieve(batch.id)
            client.batches.retrieve(batch.id)
            assert budget.spent_usd == COMPLETION_COST
        [event] = batch_calls(logs)
        assert money(event["estimated_cost_usd"]) == COMPLETION_RESERVE
        assert money(event["cost_usd"]) == COMPLETION_COST
        assert COMPLETION_RESERVE >= COMPLETION_COST

    def test_hold_released_when_cancelled_before_running(self, client: costmeter.OpenAI) -> None:
        with costmeter.budget(1) as budget:
            batch = _submit(client, CHAT_LINES)  # the upload reserves nothing
            assert budget.remaining_usd < 1  # the worst case is held
            client.batches.cancel(batch.id)
            assert budget.remaining_usd == 1  # given back: nothing ran

    def test_estimate_covers_the_bill(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            batch = _submit(client, CHAT_LINES)
            client.batches.retrieve(batch.id)
            client.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"]) == CHAT_COST

    def test_too_small_budget_refuses_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        with costmeter.budget(COMPLETION_RESERVE / 2), pytest.raises(costmeter.BudgetExceededError):
            _submit(client, COMPLETION_LINES)
        assert _posted_batches(server) == 0

    async def test_async_refusal(self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI) -> None:
        upload = await aclient.files.create(
            file=("in.jsonl", _jsonl(COMPLETION_LINES)), purpose="batch"
        )
        with costmeter.budget(COMPLETION_RESERVE / 2), pytest.raises(costmeter.BudgetExceededError):
            await aclient.batches.create(
                input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
            )
        assert _posted_batches(server) == 0

    def test_file_uploaded_elsewhere_has_no_worst_case(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        bare = openai.OpenAI(**client_kwargs(server))
        upload = bare.files.create(file=("in.jsonl", _jsonl(CHAT_LINES)), purpose="batch")
        with costmeter.budget(1), pytest.raises(costmeter.CostmeterError):
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert _posted_batches(server) == 0
        with capture_logs() as logs:  # outside a budget: sent, and billed when it finishes
            batch = client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            client.batches.retrieve(batch.id)
            client.batches.retrieve(batch.id)
        [event] = batch_calls(logs)
        assert event["estimated_cost_usd"] is None
        assert event["estimate_complete"] is False
        assert ["input_file_not_seen"] == event["estimate_reasons"]  # why nothing was reserved
        assert money(event["cost_usd"]) == CHAT_COST


class TestHooks:
    def test_file_worst_case_sums_lines_at_batch_rates(self) -> None:
        worst = worst_case_of_file(_jsonl(COMPLETION_LINES))
        assert worst.cost_usd == COMPLETION_RESERVE
        assert (worst.lines, worst.input_tokens, worst.model) == (2, 6, "davinci-002")

    def test_large_file_input_bounded_by_bytes(self) -> None:
        """Past `count_up_to` bytes, a line's input is bounded by its length, not tokenized."""
        line_bytes = sum(len(json.dumps(line).encode()) for line in COMPLETION_LINES)
        worst = worst_case_of_file(_jsonl(COMPLETION_LINES), count_up_to=0)
        assert worst.input_tokens == line_bytes
        assert worst.cost_usd == (line_bytes + 10 * 2 * 2) * Decimal(1) / MILLION
        assert worst.cost_usd > COMPLETION_RESERVE
        assert worst.reasons == ("input_bounded_by_bytes",)

    def test_unmetered_line_makes_the_file_unpriceable(self) -> None:
        lines = [*COMPLETION_LINES, {"url": "/v1/fine_tuning/jobs", "method": "POST", "body": {}}]
        worst = worst_case_of_file(_jsonl(lines) + b"not json\n")
        assert worst.cost_usd is None
        assert not worst.complete
        assert worst.reasons == ("line 3: /v1/fine_tuning/jobs not metered", "line 4: not JSON")

    def test_create_without_a_seen_file(self) -> None:
        reserve = BatchesEndpoint().estimate(
            Request(api="batches", method="post", path="/batches", body={"input_file_id": "f"})
        )
        assert (reserve.cost_usd, reserve.complete) == (None, False)
        assert reserve.reasons == ("input_file_not_seen",)

    def test_running_batch_is_not_terminal(self) -> None:
        seen = Observation()
        BatchesEndpoint().observe(
            seen, {"id": "batch_1", "object": "batch", "status": "finalizing"}
        )
        assert (seen.response_id, seen.background, seen.terminal) == ("batch_1", True, False)

    def test_failed_batch_without_usage_bills_nothing(self) -> None:
        seen = Observation()
        BatchesEndpoint().observe(seen, {"id": "batch_1", "object": "batch", "status": "failed"})
        assert seen.terminal
        assert seen.usage == Usage()

    def test_output_file_usage_skips_failed_lines(self) -> None:
        ok = {
            "response": {
                "status_code": 200,
                "body": {
                    "model": "gpt-4o-mini",
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": 4,
                        "prompt_tokens_details": {"cached_tokens": 8},
                    },
                },
            }
        }
        failed = {"response": {"status_code": 500, "body": {"usage": {"prompt_tokens": 99}}}}
        usage, model = output_file_usage(_jsonl([ok, failed, ok]))
        assert usage == Usage(input_tokens=20, cached_input_tokens=16, output_tokens=8)
        assert model == "gpt-4o-mini"

    def test_memo_is_bounded_by_bytes(self) -> None:
        memo = _Memo(max_bytes=1000)
        worst = FileWorstCase(Decimal(1), 1, 1, True, (), "gpt-4o-mini")
        for i in range(10):
            memo.put(f"file-{i}", worst, worst.size())
        kept = [i for i in range(10) if memo.get(f"file-{i}") is not None]
        assert kept == [7, 8, 9]  # 3 x (256 + 11 + 6) bytes fit in 1000
