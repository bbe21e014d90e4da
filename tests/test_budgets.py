"""Budgets: reserve before sending, settle after, refuse atomically, hold under concurrency."""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest
import respx
from structlog.testing import capture_logs

import costmeter
from costmeter import Budget, BudgetExceededError, ConfigurationError, UnknownModelError

from .helpers import BASE_URL, calls, money, response_body, response_events, sse

pytestmark = pytest.mark.httpx2(base_url=BASE_URL, assert_all_called=False)


@pytest.fixture(name="client")
def _client() -> costmeter.OpenAI:
    return costmeter.OpenAI(api_key="k", base_url=BASE_URL, max_retries=0)


def _worst_case(model: str, prompt: str, max_output: int) -> Decimal:
    estimate = costmeter.estimate(model=model, input=prompt, max_output_tokens=max_output)
    assert estimate.cost_usd is not None
    return estimate.cost_usd


class TestLimits:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2.00", Decimal("2.00")),
            (3, Decimal(3)),
            (Decimal("0.5"), Decimal("0.5")),
            (0.1, Decimal("0.1")),
        ],
    )
    def test_accepted(self, value: object, expected: Decimal) -> None:
        """str, int, Decimal and float (via repr) limits are exact."""
        assert expected == Budget(value).limit_usd  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "value", ["-1", -0.5, "NaN", float("nan"), math.inf, "Infinity", "abc", None, True, [1]]
    )
    def test_rejected(self, value: object) -> None:
        """Negative, NaN, infinite or non-numeric limits raise ConfigurationError naming them."""
        with pytest.raises(ConfigurationError, match="limit_usd") as info:
            costmeter.budget(value)  # type: ignore[arg-type]

        assert isinstance(info.value, ValueError)

    def test_error_is_not_an_openai_error(self) -> None:
        """BudgetExceededError is a CostmeterError, never caught by openai.APIError handlers."""
        assert issubclass(BudgetExceededError, costmeter.CostmeterError)
        assert not issubclass(BudgetExceededError, openai.OpenAIError)


class TestEnforcement:
    def test_refused_before_sending(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A call whose worst case exceeds the budget raises and the request is never sent."""
        route = httpx2_mock.post("/responses").respond(json=response_body())
        worst = _worst_case("gpt-5-mini", "hi", 1000)

        with (
            capture_logs() as logs,
            costmeter.budget(worst - Decimal("0.000001"), name="tiny") as b,
        ):
            with pytest.raises(BudgetExceededError) as info:
                client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=1000)

        assert not route.called
        assert (1, 0, "tiny", worst, "gpt-5-mini") == (
            b.refused,
            b.calls,
            info.value.budget_name,
            info.value.estimated_cost_usd,
            info.value.model,
        )
        assert ["costmeter.budget.exceeded"] == [e["event"] for e in logs]

    def test_settles_actual_cost(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """After the response the reservation is released and the actual cost charged."""
        body = response_body()
        httpx2_mock.post("/responses").respond(json=body)

        with capture_logs() as logs, costmeter.budget("1.00", name="b") as b:
            client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=100)

        [event] = calls(logs)
        actual = costmeter.cost_of(body["model"], body["usage"]).total_usd
        assert (actual, Decimal(0), 1) == (b.spent_usd, b.reserved_usd, b.calls)
        assert ("b", actual, Decimal("1.00") - actual) == (
            event["budget"],
            money(event["budget_spent_usd"]),
            money(event["budget_remaining_usd"]),
        )
        assert {"gpt-5-mini": actual} == b.by_model

    def test_nested_budgets_all_apply(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """The inner budget allows the call but the outer cannot cover it: refused."""
        route = httpx2_mock.post("/responses").respond(json=response_body())
        worst = _worst_case("gpt-5-mini", "hi", 1000)

        with (
            costmeter.budget(worst / 2, name="outer") as outer,
            costmeter.budget("10", name="inner") as inner,
        ):
            with pytest.raises(BudgetExceededError) as info:
                client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=1000)

        assert not route.called
        assert "outer" == info.value.budget_name
        assert (Decimal(0), Decimal(0)) == (outer.reserved_usd, inner.reserved_usd)

    def test_failed_request_charges_nothing(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A request that fails releases its reservation and charges nothing."""
        httpx2_mock.post("/responses").respond(status_code=500, json={"error": {"message": "x"}})

        with costmeter.budget("1") as b, pytest.raises(openai.InternalServerError):
            client.responses.create(model="gpt-5-mini", input="hi")

        assert (Decimal(0), Decimal(0), 1) == (b.spent_usd, b.reserved_usd, b.calls)

    def test_warn_mode_proceeds(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """on_exceed='warn' logs costmeter.budget.exceeded and sends the call anyway."""
        route = httpx2_mock.post("/responses").respond(json=response_body())

        with capture_logs() as logs, costmeter.budget("0", on_exceed="warn") as b:
            client.responses.create(model="gpt-5-mini", input="hi")

        assert route.called
        assert ["costmeter.budget.exceeded", "costmeter.call"] == [e["event"] for e in logs][:2]
        assert b.spent_usd > 0

    def test_unknown_model_fails_closed_inside_budget(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """Inside a budget an unpriced model is refused before sending, unless opted out."""
        route = httpx2_mock.post("/responses").respond(json=response_body(model="gpt-6.2-sol"))

        with costmeter.budget("1"), pytest.raises(UnknownModelError):
            client.responses.create(model="gpt-6.2-sol", input="hi")
        assert not route.called

        with costmeter.budget("1", allow_unpriced=True) as b:
            client.responses.create(model="gpt-6.2-sol", input="hi")
        assert (1, Decimal(0)) == (b.calls, b.spent_usd)

    def test_thresholds_once_each(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """costmeter.budget.threshold fires once per warn_at fraction when spend crosses it."""
        body = response_body(input_tokens=1000, output_tokens=1000, reasoning=0)
        httpx2_mock.post("/responses").respond(json=body)
        actual = costmeter.cost_of(body["model"], body["usage"]).total_usd

        with capture_logs() as logs, costmeter.budget(actual * 4, warn_at=(0.5, 0.75)):
            for _ in range(4):
                client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=1)

        fractions = [e["fraction"] for e in logs if e["event"] == "costmeter.budget.threshold"]
        assert [0.5, 0.75] == fractions

    def test_client_wide_cap(self, httpx2_mock: respx.Router) -> None:
        """A client-wide cap applies to every call of the client and its with_options copies."""
        route = httpx2_mock.post("/responses").respond(json=response_body())
        worst = _worst_case("gpt-5-mini", "hi", 100)
        client = costmeter.OpenAI(api_key="k", base_url=BASE_URL, budget=worst * 3 / 2)

        client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=100)
        with pytest.raises(BudgetExceededError):
            client.with_options(timeout=2).responses.create(
                model="gpt-5-mini", input="hi", max_output_tokens=100_000
            )

        assert 1 == route.call_count

    def test_abandoned_stream_charges_estimate(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A stream abandoned before usage charges input estimate + tokens of deltas received."""
        body = response_body()
        events = response_events(body, deltas=["one two three", " four five"])[:-1]
        httpx2_mock.post("/responses").respond(
            content=sse(events), headers={"content-type": "text/event-stream"}
        )

        with capture_logs() as logs, costmeter.budget("1") as b:
            stream = client.responses.create(model="gpt-5-mini", input="hi", stream=True)
            for _ in stream:
                pass

        [event] = calls(logs)
        output = costmeter.count_tokens("one two three four five", model="gpt-5-mini")
        assert ("estimated", output) == (event["usage_source"], event["output_tokens"])
        assert b.spent_usd == money(event["cost_usd"]) > 0


class TestSharing:
    def test_shared_budget_across_threads(self) -> None:
        """One Budget object entered in many threads is one shared cap."""
        shared = Budget("1")
        seen = []

        def work() -> None:
            with shared:
                seen.append(costmeter._budget.active_budgets())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: work(), range(16)))

        assert all(stack == (shared,) for stack in seen)
        assert () == costmeter._budget.active_budgets()

    def test_copy_context_carries_budget_into_pool(self) -> None:
        """contextvars.copy_context().run carries the active budget into a pool thread."""
        with costmeter.budget("1") as b:
            context = contextvars.copy_context()
            with ThreadPoolExecutor(1) as pool:
                inside = pool.submit(context.run, costmeter._budget.active_budgets).result()
                bare = pool.submit(costmeter._budget.active_budgets).result()

        assert ((b,), ()) == (inside, bare)

    async def test_async_with(self) -> None:
        """budget() works with async with, and tasks inherit it."""
        async with costmeter.budget("1") as b:
            inherited = await asyncio.create_task(
                asyncio.sleep(0, costmeter._budget.active_budgets())
            )

        assert (b,) == inherited


class TestReservationAtomicity:
    def test_many_threads_never_overshoot(self) -> None:
        """64 threads reserving against one budget never hold more than the limit."""
        from costmeter._budget import Reservation

        b = Budget("1")
        admitted = []
        lock = threading.Lock()

        def take() -> None:
            try:
                r = Reservation.take((b,), Decimal("0.03"), "m")
            except BudgetExceededError:
                return
            with lock:
                admitted.append(r)

        threads = [threading.Thread(target=take) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert 33 == len(admitted)
        assert Decimal("0.99") == b.reserved_usd
