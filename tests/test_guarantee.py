"""
The budget guarantee, hole by hole (issue 12): each test provokes one way a budget used to be
overspent or a billed call charged $0, through the public API over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import openai
import pydantic
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI
from tests.helpers import calls, chat_body, money

PROMPT = "Summarise the plot of Hamlet in one sentence."


def _client(fake: FakeOpenAI, **options: Any) -> costmeter.OpenAI:
    return costmeter.OpenAI(
        base_url=fake.base_url, api_key="sk-guarantee", max_retries=0, **options
    )


def _spent(events: list[dict[str, Any]], key: str = "charged_usd") -> Decimal:
    return sum((money(e[key]) or Decimal(0) for e in events), Decimal(0))


class TestNothingBilledIsChargedZero:
    def test_unpriceable_usage_is_charged_its_reservation(self, fake: FakeOpenAI) -> None:
        """Audio tokens with no audio rate: cost unknown, so the budget is charged the worst case
        it reserved (not $0), the event says so, and the cap still refuses in time."""
        with _client(fake) as client, capture_logs() as logs:
            budget = costmeter.Budget("0.0004", name="audio-gap")
            refused = 0
            for _ in range(10):
                fake.usage_override_next(
                    {"input_tokens_details": {"cached_tokens": 0, "audio_tokens": 5}}, merge=True
                )
                try:
                    with budget:
                        client.responses.create(
                            model="gpt-4.1-mini", input=PROMPT, max_output_tokens=64
                        )
                except costmeter.BudgetExceededError:
                    refused += 1
            fake.clear_faults()

        events = calls(logs)
        assert refused > 0
        assert all(e["price_status"] == "unpriced_audio_tokens" for e in events)
        assert all(e["cost_usd"] is None for e in events)
        assert all(money(e["charged_usd"]) == money(e["estimated_cost_usd"]) > 0 for e in events)
        assert budget.spent_usd == _spent(events) <= budget.limit_usd
        assert 10 - refused == len(events) == fake.calls

    def test_a_timed_out_call_and_each_retry_is_charged(self, fake: FakeOpenAI) -> None:
        """A request the API received but whose response never came (client timeout, SDK
        retries included): every attempt is one event charged its reserved worst case."""
        fake.delay_next(3.0, times=3)
        with (
            _client(fake, timeout=0.3).with_options(max_retries=2) as client,
            capture_logs() as logs,
            costmeter.budget("1", name="timeouts") as budget,
            pytest.raises(openai.APITimeoutError),
        ):
            client.responses.create(model="gpt-4.1-mini", input=PROMPT, max_output_tokens=64)

        events = calls(logs)
        assert 3 == len(events) == fake.calls
        assert all(("error", "reserved") == (e["outcome"], e["usage_source"]) for e in events)
        worst = money(events[0]["estimated_cost_usd"])
        assert worst is not None
        assert worst > 0
        assert [worst] * 3 == [money(e["cost_usd"]) for e in events]
        assert (worst * 3, Decimal(0)) == (budget.spent_usd, budget.reserved_usd)

    def test_a_retry_the_budget_cannot_cover_is_not_sent(self, fake: FakeOpenAI) -> None:
        """After a lost attempt (billed), the SDK's retry is a second billed request: a budget
        with room for one worst case refuses it before it is sent."""
        fake.delay_next(3.0, times=1)
        with _client(fake, timeout=0.3).with_options(max_retries=2) as client:
            worst = costmeter.estimate(
                model="gpt-4.1-mini", input=PROMPT, max_output_tokens=64
            ).cost_usd
            assert worst is not None
            with (
                costmeter.budget(worst * Decimal("1.5")) as budget,
                pytest.raises(costmeter.BudgetExceededError),
            ):
                client.responses.create(model="gpt-4.1-mini", input=PROMPT, max_output_tokens=64)
        fake.clear_faults()

        assert 1 == fake.calls
        assert (worst, Decimal(0)) == (budget.spent_usd, budget.reserved_usd)


class TestWorstCase:
    def test_chat_n_multiplies_the_reservation(self, fake: FakeOpenAI) -> None:
        """n=8 completions bill 8x the output: a cap that covers one is not enough for eight."""
        messages = [{"role": "user", "content": PROMPT}]
        one = costmeter.estimate(
            model="gpt-4.1-mini", messages=messages, max_completion_tokens=1000
        ).cost_usd
        assert one is not None
        with (
            _client(fake) as client,
            costmeter.budget(one * 4),
            pytest.raises(costmeter.BudgetExceededError),
        ):
            client.chat.completions.create(
                model="gpt-4.1-mini", messages=messages, max_completion_tokens=1000, n=8
            )
        assert 0 == fake.calls


class _Answer(pydantic.BaseModel):
    answer: int


class TestReceivedBodiesAreBilledAsReported:
    def test_parse_validation_error_keeps_the_reported_usage(self, fake: FakeOpenAI) -> None:
        """parse() raising on a 2xx body: the body reported its usage, and that is billed."""
        body = chat_body(model="gpt-4.1-mini-2025-04-14", prompt=30, completion=212)
        body["choices"][0]["message"]["content"] = '{"answer": "not a number"}'
        fake.replay_next(body, stream=False)
        with (
            _client(fake) as client,
            capture_logs() as logs,
            pytest.raises(pydantic.ValidationError),
        ):
            client.chat.completions.parse(
                model="gpt-4.1-mini",
                messages=[{"role": "user", "content": PROMPT}],
                response_format=_Answer,
            )

        [event] = calls(logs)
        assert ("error", "reported", 212) == (
            event["outcome"],
            event["usage_source"],
            event["output_tokens"],
        )
        assert event["cost_usd"] > 0

    def test_length_finish_reason_error_keeps_the_reported_usage(self, fake: FakeOpenAI) -> None:
        """LengthFinishReasonError (output cut by the bound) is billed from its usage."""
        with (
            _client(fake) as client,
            capture_logs() as logs,
            pytest.raises(openai.LengthFinishReasonError),
        ):
            client.chat.completions.parse(
                model="gpt-4.1-mini",
                messages=[{"role": "user", "content": PROMPT}],
                response_format=_Answer,
                max_completion_tokens=5,
            )

        [event] = calls(logs)
        assert ("reported", 5) == (event["usage_source"], event["output_tokens"])

    @pytest.mark.parametrize("stream", [False, True])
    def test_gzip_bodies_read_raw_are_decoded(self, fake: FakeOpenAI, stream: bool) -> None:
        """with_streaming_response over a gzip-encoded body: the usage is read after decoding."""
        headers = {"x-fake-gzip": "1", "x-fake-output-tokens": "50"}
        with _client(fake) as client, capture_logs() as logs:
            with client.responses.with_streaming_response.create(
                model="gpt-4.1-mini", input=PROMPT, stream=stream, extra_headers=headers
            ) as response:
                assert "gzip" == response.headers["content-encoding"]
                for _ in response.iter_lines():
                    pass

        [event] = calls(logs)
        assert ("reported", 50) == (event["usage_source"], event["output_tokens"])
        assert event["input_tokens"] > 7


@pytest.mark.parametrize("asynchronous", [False, True])
class TestLegacyHttpxClient:
    """A 0.x ``httpx`` client passed as ``http_client=`` (litellm and dspy do this)."""

    async def test_raw_and_streamed_calls_meter_as_with_httpx2(
        self, fake: FakeOpenAI, asynchronous: bool
    ) -> None:
        kwargs = {"model": "gpt-4.1-mini", "input": PROMPT}
        headers = {"x-fake-output-tokens": "40"}
        with capture_logs() as logs:
            if asynchronous:
                async with costmeter.AsyncOpenAI(
                    base_url=fake.base_url,
                    api_key="sk-guarantee",
                    max_retries=0,
                    http_client=httpx.AsyncClient(),
                ) as aclient:
                    async with aclient.responses.with_streaming_response.create(
                        **kwargs, stream=True, extra_headers=headers
                    ) as raw:
                        async for _ in raw.iter_lines():
                            pass
                    stream = await aclient.responses.create(
                        **kwargs, stream=True, extra_headers=headers
                    )
                    async for _ in stream:
                        pass
            else:
                with costmeter.OpenAI(
                    base_url=fake.base_url,
                    api_key="sk-guarantee",
                    max_retries=0,
                    http_client=httpx.Client(),
                ) as client:
                    with client.responses.with_streaming_response.create(
                        **kwargs, stream=True, extra_headers=headers
                    ) as raw:
                        for _ in raw.iter_lines():
                            pass
                    for _ in client.responses.create(**kwargs, stream=True, extra_headers=headers):
                        pass

        events = calls(logs)
        assert [("reported", 40)] * 2 == [(e["usage_source"], e["output_tokens"]) for e in events]


class TestUnpricedRequests:
    def test_unmetered_endpoint_is_refused_inside_a_budget(self, fake: FakeOpenAI) -> None:
        """A billed endpoint costmeter cannot price is refused before sending, naming it."""
        with _client(fake) as client, costmeter.budget("5"):
            with pytest.raises(costmeter.UnpricedRequestError, match="fine_tuning"):
                client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file="file-abc")
        assert [] == fake.requests

    def test_unmetered_endpoint_is_logged_outside_a_budget(self, fake: FakeOpenAI) -> None:
        with _client(fake) as client, capture_logs() as logs, pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file="file-abc")

        warnings = [e for e in logs if e["event"] == "costmeter.warning"]
        assert [("unmetered_request", "fine_tuning")] == [
            (w["warning"], w["api"]) for w in warnings
        ]

    def test_unknown_model_refusal_is_logged(self, fake: FakeOpenAI) -> None:
        with (
            _client(fake) as client,
            capture_logs() as logs,
            costmeter.budget("5", name="unknown"),
            pytest.raises(costmeter.UnknownModelError),
        ):
            client.responses.create(model="gpt-99-nonesuch", input=PROMPT)

        [refusal] = [e for e in logs if e["event"] == "costmeter.budget.exceeded"]
        assert ("unknown", "unpriced", True) == (
            refusal["budget"],
            refusal["reason"],
            refusal["refused"],
        )
        assert 0 == fake.calls

    def test_an_empty_model_is_left_to_the_api(self, fake: FakeOpenAI) -> None:
        """No model: the API answers (400), costmeter does not invent an UnknownModelError."""
        with (
            _client(fake) as client,
            costmeter.budget("5"),
            pytest.raises(openai.BadRequestError),
        ):
            client.responses.create(model="", input=PROMPT)


class TestMisc:
    def test_same_budget_entered_twice_charges_once(self, fake: FakeOpenAI) -> None:
        budget = costmeter.Budget("1")
        with _client(fake) as client, capture_logs() as logs, budget, budget:
            client.responses.create(model="gpt-4.1-mini", input=PROMPT)

        [event] = calls(logs)
        assert money(event["cost_usd"]) == budget.spent_usd

    def test_exact_count_request_honours_the_calls_options(self, fake: FakeOpenAI) -> None:
        """exact_input_tokens: the count request carries the call's headers and retry policy."""
        fake.fail_next(500, path="/v1/responses/input_tokens")
        with _client(fake, exact_input_tokens=True) as client, capture_logs() as logs:
            client.with_options(max_retries=0).responses.create(
                model="gpt-4.1-mini", input=PROMPT, extra_headers={"x-team": "search"}
            )

        counts = [r for r in fake.requests if r.path.endswith("/input_tokens")]
        assert 1 == len(counts)  # max_retries=0 also holds for the count
        assert "search" == counts[0].headers.get("x-team")
        assert ["exact_input_tokens_failed"] == [
            e["warning"] for e in logs if e["event"] == "costmeter.warning"
        ]

    def test_background_lookup_events_name_the_model(self, fake: FakeOpenAI) -> None:
        with _client(fake) as creator, _client(fake) as poller, capture_logs() as logs:
            created = creator.responses.create(model="gpt-4.1-mini", input=PROMPT, background=True)
            while poller.responses.retrieve(created.id).status not in ("completed", "failed"):
                pass

        [event] = calls(logs)
        assert event["model"] is not None

    async def test_cancelled_reservation_on_a_locked_ledger_is_given_back(
        self, fake: FakeOpenAI, tmp_path: Any
    ) -> None:
        """A task cancelled while reserving on a SQLite ledger leaves nothing reserved."""
        import sqlite3

        path = tmp_path / "ledger.db"
        budget = costmeter.Budget("5", name="cancel", ledger=f"sqlite:///{path}", ledger_timeout=5)
        async with costmeter.AsyncOpenAI(
            base_url=fake.base_url, api_key="sk-guarantee", max_retries=0
        ) as client:
            async with budget:
                await client.responses.create(model="gpt-4.1-mini", input=PROMPT)
            spent = budget.spent_usd
            lock = sqlite3.connect(path, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # the ledger is busy: the reservation waits
            try:

                async def call() -> None:
                    async with budget:
                        await client.responses.create(model="gpt-4.1-mini", input=PROMPT)

                task = asyncio.create_task(call())
                await asyncio.sleep(0.3)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            for _ in range(100):  # the worker thread finishes, then gives its hold back
                if budget.reserved_usd == 0:
                    break
                await asyncio.sleep(0.05)

        assert (spent, Decimal(0)) == (budget.spent_usd, budget.reserved_usd)
        assert 1 == fake.calls


def test_a_call_from_an_atexit_handler_is_metered(tmp_path: Any) -> None:
    """A metered call with a large input made while the interpreter shuts down still works."""
    import subprocess
    import sys

    script = tmp_path / "at_exit.py"
    script.write_text(
        "import atexit, json\n"
        "import costmeter\n"
        "from costmeter.testing import FakeOpenAI\n"
        "from structlog.testing import capture_logs\n"
        "server = FakeOpenAI().start()\n"
        "client = costmeter.OpenAI(base_url=server.base_url, api_key='sk-x', max_retries=0)\n"
        "def last_call():\n"
        "    with capture_logs() as logs:\n"
        "        client.responses.create(model='gpt-4.1-mini', input='word ' * 20000)\n"
        "    print(json.dumps([e['event'] for e in logs]))\n"
        "atexit.register(last_call)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )

    assert 0 == done.returncode, done.stderr
    assert '["costmeter.call"]' == done.stdout.strip().splitlines()[-1]


def test_a_background_response_created_elsewhere_is_charged_where_it_finishes(
    fake: FakeOpenAI,
) -> None:
    """Created by another process (here: a bare client), polled by a worker inside a budget:
    billed once, by the poll that sees it finish, and charged to the worker's budget."""
    with openai.OpenAI(base_url=fake.base_url, api_key="sk-web", max_retries=0) as web:
        created = web.responses.create(model="gpt-4.1-mini", input=PROMPT, background=True)
    with (
        _client(fake) as worker,
        capture_logs() as logs,
        costmeter.budget("1", name="worker") as budget,
    ):
        while worker.responses.retrieve(created.id).status not in ("completed", "failed"):
            pass
        worker.responses.retrieve(created.id)  # polled again: billed once

    [event] = calls(logs)
    assert (created.id, "worker") == (event["response_id"], event["budget"])
    assert money(event["cost_usd"]) == budget.spent_usd > 0
    assert Decimal(0) == budget.reserved_usd
