"""The metered clients over mocked HTTP (respx through pytest-httpx2): every billed path."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import respx
from structlog.testing import capture_logs

import costmeter
from costmeter import cost_of

from .helpers import BASE_URL, calls, money, response_body, response_events, sse

pytestmark = pytest.mark.httpx2(base_url=BASE_URL)


@pytest.fixture(name="client")
def _client() -> costmeter.OpenAI:
    return costmeter.OpenAI(api_key="sk-test-secret", base_url=BASE_URL, max_retries=0)


@pytest.fixture(name="aclient")
def _aclient() -> costmeter.AsyncOpenAI:
    return costmeter.AsyncOpenAI(api_key="sk-test-secret", base_url=BASE_URL, max_retries=0)


def _expected_cost(body: dict[str, Any]) -> Decimal:
    return cost_of(body["model"], body["usage"], service_tier=body["service_tier"]).total_usd


class TestDropIn:
    def test_subclasses(self, client: costmeter.OpenAI, aclient: costmeter.AsyncOpenAI) -> None:
        """The metered clients are the SDK's clients."""
        assert isinstance(client, openai.OpenAI)
        assert isinstance(aclient, openai.AsyncOpenAI)
        assert isinstance(
            costmeter.AzureOpenAI(
                api_key="k", api_version="2024-10-21", azure_endpoint="https://x.test"
            ),
            openai.AzureOpenAI,
        )

    def test_with_options_and_copy_stay_metered(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """Clients derived with with_options() and copy() keep metering and the client cap."""
        body = response_body()
        httpx2_mock.post("/responses").respond(json=body)
        capped = costmeter.OpenAI(api_key="k", base_url=BASE_URL, budget="5")

        with capture_logs() as logs:
            client.with_options(timeout=5).responses.create(model="gpt-5-mini", input="hi")
            client.copy(max_retries=0).responses.create(model="gpt-5-mini", input="hi")
            capped.with_options(timeout=3).responses.create(model="gpt-5-mini", input="hi")

        assert 3 == len(calls(logs))
        assert capped.with_options(timeout=3).budget is capped.budget
        assert 1 == capped.budget.calls  # type: ignore[union-attr]

    def test_request_body_unchanged(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """The bytes sent are exactly what the bare SDK sends."""
        route = httpx2_mock.post("/responses").respond(json=response_body())
        kwargs: dict[str, Any] = {
            "model": "gpt-5-mini",
            "input": [{"role": "user", "content": "Say hi"}],
            "max_output_tokens": 50,
            "service_tier": "flex",
        }
        bare = openai.OpenAI(api_key="sk-test-secret", base_url=BASE_URL, max_retries=0)

        bare.responses.create(**kwargs)
        client.responses.create(**kwargs)

        sent = [call.request for call in route.calls]
        assert sent[0].content == sent[1].content

    def test_returns_sdk_objects(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """create returns the SDK's own Response model."""
        httpx2_mock.post("/responses").respond(json=response_body())

        result = client.responses.create(model="gpt-5-mini", input="hi")

        assert isinstance(result, openai.types.responses.Response)
        assert "Hello!" == result.output_text


class TestNonStreaming:
    def test_one_event_with_exact_usage_and_cost(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A create emits one costmeter.call event with the reported tokens and exact cost."""
        body = response_body(input_tokens=1500, cached=1024, output_tokens=300, reasoning=200)
        httpx2_mock.post("/responses").respond(json=body, headers={"x-request-id": "req_42"})

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input="hello", max_output_tokens=400)

        [event] = calls(logs)
        assert {
            "api": "responses",
            "model": "gpt-5-mini",
            "response_model": "gpt-5-mini-2025-08-07",
            "response_id": "resp_abc123",
            "request_id": "req_42",
            "stream": False,
            "outcome": "ok",
            "input_tokens": 1500,
            "cached_input_tokens": 1024,
            "output_tokens": 300,
            "reasoning_tokens": 200,
            "usage_source": "reported",
            "price_status": "ok",
            "price_source": "genai-prices",
        }.items() <= event.items()
        assert _expected_cost(body) == money(event["cost_usd"])
        assert (None, None) == (event["estimated_input_tokens"], event["estimated_cost_usd"])

    def test_parse_is_metered(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """responses.parse bypasses create (it posts directly) and is still metered."""
        body = response_body(text='{"x": 1}')
        httpx2_mock.post("/responses").respond(json=body)

        from pydantic import BaseModel

        class Out(BaseModel):
            x: int

        with capture_logs() as logs:
            parsed = client.responses.parse(model="gpt-5-mini", input="hi", text_format=Out)

        assert 1 == parsed.output_parsed.x  # type: ignore[union-attr]
        assert 1 == len(calls(logs))

    def test_beta_responses(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """client.beta.responses is a separate class and still metered."""
        httpx2_mock.post("/responses").respond(json=response_body())

        with capture_logs() as logs:
            client.beta.responses.create(model="gpt-5-mini", input="hi")

        assert 1 == len(calls(logs))

    def test_compact(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """compact() is billed, priced as the request's model (the response names none)."""
        usage = {"input_tokens": 156, "output_tokens": 190, "total_tokens": 346}
        httpx2_mock.post("/responses/compact").respond(
            json={
                "id": "cmp_1",
                "object": "response.compaction",
                "created_at": 1,
                "output": [],
                "usage": usage,
            }
        )

        with capture_logs() as logs:
            client.responses.compact(model="gpt-4o-mini", input="long conversation")

        [event] = calls(logs)
        assert ("responses.compact", "gpt-4o-mini", 156) == (
            event["api"],
            event["model"],
            event["input_tokens"],
        )
        assert cost_of("gpt-4o-mini", usage).total_usd == money(event["cost_usd"])

    def test_free_endpoints_emit_nothing(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """input_tokens.count, input_items.list and delete bill nothing and log nothing."""
        httpx2_mock.post("/responses/input_tokens").respond(
            json={"object": "response.input_tokens", "input_tokens": 12}
        )
        httpx2_mock.get("/responses/resp_1/input_items").respond(
            json={
                "object": "list",
                "data": [],
                "first_id": None,
                "last_id": None,
                "has_more": False,
            }
        )
        httpx2_mock.delete("/responses/resp_1").respond(status_code=200, json={})

        with capture_logs() as logs:
            client.responses.input_tokens.count(model="gpt-5", input="hi")
            client.responses.input_items.list("resp_1")
            client.responses.delete("resp_1")

        assert [] == calls(logs)

    def test_incomplete_outcome(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """A response cut by max_output_tokens is billed with outcome incomplete."""
        httpx2_mock.post("/responses").respond(json=response_body(status="incomplete"))

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=30)

        assert "incomplete" == calls(logs)[0]["outcome"]

    def test_unknown_model_proceeds(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """An unpriced model outside a budget: the call proceeds, cost is null, status says why."""
        httpx2_mock.post("/responses").respond(json=response_body(model="gpt-6.2-sol"))

        with capture_logs() as logs:
            client.responses.create(model="gpt-6.2-sol", input="hi")

        [event] = calls(logs)
        assert (None, "unknown_model", 120) == (
            event["cost_usd"],
            event["price_status"],
            event["input_tokens"],
        )

    def test_served_tier_prices_the_call(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """The tier the response reports is the one priced (priority downgraded to default)."""
        body = response_body(model="gpt-5-2025-08-07", service_tier="default")
        httpx2_mock.post("/responses").respond(json=body)

        with capture_logs() as logs:
            client.responses.create(model="gpt-5", input="hi", service_tier="priority")

        [event] = calls(logs)
        assert "default" == event["service_tier"]
        assert cost_of("gpt-5", body["usage"]).total_usd == money(event["cost_usd"])


class TestErrors:
    def test_http_error_bills_nothing(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A failed request raises the SDK's own error and logs outcome error at $0."""
        httpx2_mock.post("/responses").respond(
            status_code=400, json={"error": {"message": "bad", "type": "invalid_request_error"}}
        )

        with capture_logs() as logs, pytest.raises(openai.BadRequestError):
            client.responses.create(model="gpt-5-mini", input="hi")

        [event] = calls(logs)
        assert ("error", "BadRequestError", 0.0, 0) == (
            event["outcome"],
            event["error_type"],
            event["cost_usd"],
            event["input_tokens"],
        )

    def test_retries_count_once(self, httpx2_mock: respx.Router) -> None:
        """SDK retries (500 then 200) produce one event with the successful usage."""
        client = costmeter.OpenAI(api_key="k", base_url=BASE_URL, max_retries=2)
        httpx2_mock.post("/responses").mock(
            side_effect=[
                respx.MockResponse(
                    500, json={"error": {"message": "x"}}, headers={"retry-after-ms": "0"}
                ),
                respx.MockResponse(200, json=response_body()),
            ]
        )

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input="hi")

        [event] = calls(logs)
        assert ("ok", 120) == (event["outcome"], event["input_tokens"])

    def test_internal_failure_never_breaks_the_call(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A bug inside costmeter becomes costmeter.internal_error; the user's call succeeds and the
        call event still goes out with its reported tokens, flagged unpriced.
        """
        costmeter.set_strict(False)
        httpx2_mock.post("/responses").respond(json=response_body())

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("pricing exploded")

        monkeypatch.setattr("costmeter._endpoints.cost_of", boom)

        with capture_logs() as logs:
            result = client.responses.create(model="gpt-5-mini", input="hi")

        assert "Hello!" == result.output_text
        [internal] = [e for e in logs if e["event"] == "costmeter.internal_error"]
        assert ("price", "pricing exploded") == (internal["stage"], internal["error"])
        [event] = calls(logs)
        assert (120, None, "error") == (
            event["input_tokens"],
            event["cost_usd"],
            event["price_status"],
        )


class TestRawResponses:
    def test_with_raw_response(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """with_raw_response is metered even if the caller never parses; parse() still works."""
        httpx2_mock.post("/responses").respond(
            json=response_body(), headers={"x-request-id": "req_raw"}
        )

        with capture_logs() as logs:
            raw = client.responses.with_raw_response.create(model="gpt-5-mini", input="hi")

        assert "req_raw" == raw.headers["x-request-id"]
        assert "Hello!" == raw.parse().output_text
        [event] = calls(logs)
        assert (120, "req_raw") == (event["input_tokens"], event["request_id"])

    def test_streaming_response_read_as_raw_lines(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A caller reading only raw SSE lines is still metered from the terminal event."""
        body = response_body(output_tokens=40, reasoning=0)
        httpx2_mock.post("/responses").respond(
            content=sse(response_events(body)), headers={"content-type": "text/event-stream"}
        )

        with capture_logs() as logs:
            with client.responses.with_streaming_response.create(
                model="gpt-5-mini", input="hi", stream=True
            ) as raw:
                lines = list(raw.iter_lines())

        assert any(line.startswith("data:") for line in lines)
        [event] = calls(logs)
        assert ("reported", 40, True) == (
            event["usage_source"],
            event["output_tokens"],
            event["stream"],
        )

    def test_streaming_response_json_body(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """with_streaming_response on a non-stream call, read with .json(), is metered."""
        httpx2_mock.post("/responses").respond(json=response_body())

        with capture_logs() as logs:
            with client.responses.with_streaming_response.create(
                model="gpt-5-mini", input="hi"
            ) as raw:
                data = raw.json()

        assert "resp_abc123" == data["id"]
        assert 120 == calls(logs)[0]["input_tokens"]


class TestBackground:
    def test_unfinished_at_exit_is_reported(self, tmp_path: Path) -> None:
        """
        A background response still running when the process exits cannot be billed (its usage
        was never seen): a costmeter.warning names it and the worst case, instead of silence.
        """
        log = tmp_path / "costs.jsonl"
        script = (
            "import sys, costmeter\n"
            "from costmeter.testing import FakeOpenAI\n"
            "costmeter.log_to(sys.argv[1])\n"
            "with FakeOpenAI() as server:\n"
            "    client = costmeter.OpenAI(api_key='k', base_url=server.base_url)\n"
            "    queued = client.responses.create(model='gpt-5-mini', input='hi', background=True)\n"
            "    print(queued.id)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(log)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert ["costmeter.warning"] == [e["event"] for e in events]
        [warning] = events
        assert ("background_response_unbilled", done.stdout.splitlines()[0]) == (
            warning["warning"],
            warning["response_id"],
        )
        assert warning["estimated_cost_usd"] > 0

    def test_billed_once_when_it_completes(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A background response bills once, when first seen terminal; repeats bill nothing."""
        queued = response_body(status="queued", usage=False, background=True)
        done = response_body(background=True)
        httpx2_mock.post("/responses").respond(json=queued)
        httpx2_mock.get("/responses/resp_abc123").mock(
            side_effect=[
                respx.MockResponse(200, json={**queued, "status": "in_progress"}),
                respx.MockResponse(200, json=done),
                respx.MockResponse(200, json=done),
            ]
        )
        httpx2_mock.post("/responses/resp_abc123/cancel").respond(json=done)

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input="hi", background=True)
            after_create = len(calls(logs))
            for _ in range(3):
                client.responses.retrieve("resp_abc123")
            client.responses.cancel("resp_abc123")

        assert 0 == after_create
        [event] = calls(logs)
        assert (True, "gpt-5-mini", 120) == (
            event["background"],
            event["model"],
            event["input_tokens"],
        )

    def test_replay_of_a_billed_stream_is_free(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A background stream replayed with starting_after is not billed again."""
        body = response_body(background=True, response_id="resp_bg2")
        stream = sse(response_events(body))
        httpx2_mock.post("/responses").respond(
            content=stream, headers={"content-type": "text/event-stream"}
        )
        httpx2_mock.get("/responses/resp_bg2").respond(
            content=stream, headers={"content-type": "text/event-stream"}
        )

        with capture_logs() as logs:
            for _ in client.responses.create(
                model="gpt-5-mini", input="hi", background=True, stream=True
            ):
                pass
            for _ in client.responses.retrieve("resp_bg2", stream=True, starting_after=2):
                pass

        assert 1 == len(calls(logs))


class TestTagsAndSecrets:
    def test_tags_nest(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """Tags from nested blocks merge into the event's tags."""
        httpx2_mock.post("/responses").respond(json=response_body())

        with capture_logs() as logs, costmeter.tags(user="u1", feature="search"):
            with costmeter.tags(feature="summary", eval_run=7):
                client.responses.create(model="gpt-5-mini", input="hi")

        assert {"user": "u1", "feature": "summary", "eval_run": "7"} == calls(logs)[0]["tags"]

    def test_no_prompt_output_or_key_in_events(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """Events never carry prompts, outputs, the API key or auth headers by default."""
        httpx2_mock.post("/responses").respond(json=response_body(text="SECRET-OUTPUT"))

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input="SECRET-PROMPT")

        dumped = json.dumps(logs, default=str)
        for secret in ("SECRET-PROMPT", "SECRET-OUTPUT", "sk-test-secret", "Bearer"):
            assert secret not in dumped

    @pytest.mark.parametrize("stream", [False, True])
    def test_content_only_when_asked(self, httpx2_mock: respx.Router, stream: bool) -> None:
        """log_content=True adds the request's input and the output text; nothing else changes."""
        body = response_body(text="the answer")
        if stream:
            httpx2_mock.post("/responses").respond(
                content=sse(response_events(body, ["the ", "answer"])),
                headers={"content-type": "text/event-stream"},
            )
        else:
            httpx2_mock.post("/responses").respond(json=body)
        client = costmeter.OpenAI(api_key="k", base_url=BASE_URL, log_content=True)

        with capture_logs() as logs:
            result = client.responses.create(
                model="gpt-5-mini", instructions="be brief", input="the question", stream=stream
            )
            for _ in result if stream else ():
                pass

        [event] = calls(logs)
        assert {"instructions": "be brief", "input": "the question"} == event["request_content"]
        assert "the answer" == event["output_text"]


class TestCountOnlyWhenItPays:
    """
    With no budget active nothing can be refused and the response reports the real usage: the
    input is not counted (events carry null estimates) unless the client asks for it, or the
    usage does not arrive.
    """

    LONG = " ".join(f"paragraph {i} of a long document about budgets." for i in range(400))

    def test_no_budget_no_count(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        httpx2_mock.post("/responses").respond(json=response_body())

        with capture_logs() as logs:
            result = client.responses.create(model="gpt-5-mini", input=self.LONG)

        assert "Hello!" == result.output_text
        [event] = calls(logs)
        assert (None, None, None) == (
            event["estimated_input_tokens"],
            event["estimated_cost_usd"],
            event["estimate_complete"],
        )
        assert "reported" == event["usage_source"]
        assert event["cost_usd"] > 0

    def test_always_estimate_counts_every_call(self, httpx2_mock: respx.Router) -> None:
        """always_estimate=True: every call is counted before sending, from many threads."""
        httpx2_mock.post("/responses").respond(json=response_body())
        client = costmeter.OpenAI(
            api_key="k", base_url=BASE_URL, max_retries=0, always_estimate=True
        )
        prompts = [f"{i} " * (i + 1) + self.LONG for i in range(16)]

        def ask(prompt: str) -> None:
            client.responses.create(model="gpt-5-mini", input=prompt)

        with capture_logs() as logs, ThreadPoolExecutor(8) as pool:
            list(pool.map(ask, prompts))

        expected = sorted(
            costmeter.estimate(model="gpt-5-mini", input=p).input_tokens for p in prompts
        )
        assert expected == sorted(e["estimated_input_tokens"] for e in calls(logs))

    def test_missing_usage_is_estimated_after_the_fact(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """No budget and no usage in the response: the input is counted then, not before."""
        httpx2_mock.post("/responses").respond(json=response_body(usage=False))

        with capture_logs() as logs:
            client.responses.create(model="gpt-5-mini", input=self.LONG)

        [event] = calls(logs)
        expected = costmeter.estimate(model="gpt-5-mini", input=self.LONG).input_tokens
        assert ("estimated", expected) == (event["usage_source"], event["input_tokens"])
        assert expected == event["estimated_input_tokens"]

    @pytest.mark.httpx2(base_url=BASE_URL, assert_all_called=False)
    def test_under_a_budget_it_is_counted_before_sending(
        self, client: costmeter.OpenAI, httpx2_mock: respx.Router
    ) -> None:
        """A budget needs the worst case before sending: the count is done before the request."""
        route = httpx2_mock.post("/responses").respond(json=response_body())
        body = {"model": "gpt-5-mini", "input": self.LONG, "max_output_tokens": 10}
        worst = costmeter.estimate(**body).cost_usd
        assert worst is not None

        with costmeter.budget(worst / 2), pytest.raises(costmeter.BudgetExceededError):
            client.responses.create(**body)

        assert not route.called


class TestExactInputTokens:
    def test_counts_with_the_free_endpoint_first(self, httpx2_mock: respx.Router) -> None:
        """exact_input_tokens=True asks input_tokens.count (same input, free) before the call."""
        count = httpx2_mock.post("/responses/input_tokens").respond(
            json={"object": "response.input_tokens", "input_tokens": 4321}
        )
        create = httpx2_mock.post("/responses").respond(json=response_body())
        client = costmeter.OpenAI(api_key="k", base_url=BASE_URL, exact_input_tokens=True)

        with capture_logs() as logs:
            client.responses.create(
                model="gpt-5-mini", input="hi", previous_response_id="resp_0", max_output_tokens=9
            )

        sent = json.loads(count.calls.last.request.content)
        assert {"model": "gpt-5-mini", "input": "hi", "previous_response_id": "resp_0"} == sent
        assert count.calls.last.request is not create.calls.last.request
        [event] = calls(logs)
        assert (4321, True) == (event["estimated_input_tokens"], event["estimate_complete"])

    async def test_a_failed_count_falls_back_to_the_estimate(
        self, httpx2_mock: respx.Router
    ) -> None:
        """When the count endpoint fails, a warning is logged and the call goes out regardless."""
        httpx2_mock.post("/responses/input_tokens").respond(status_code=500, json={"error": {}})
        httpx2_mock.post("/responses").respond(json=response_body())
        client = costmeter.AsyncOpenAI(
            api_key="k", base_url=BASE_URL, exact_input_tokens=True, max_retries=0
        )

        with capture_logs() as logs:
            result = await client.responses.create(model="gpt-5-mini", input="hi")

        assert "Hello!" == result.output_text
        [warning] = [e for e in logs if e["event"] == "costmeter.warning"]
        assert ("exact_input_tokens_failed", "InternalServerError") == (
            warning["warning"],
            warning["error_type"],
        )
        expected = costmeter.estimate(model="gpt-5-mini", input="hi").input_tokens
        assert expected == calls(logs)[0]["estimated_input_tokens"]

    def test_off_by_default(self, client: costmeter.OpenAI, httpx2_mock: respx.Router) -> None:
        """Without the option no count request is made."""
        httpx2_mock.post("/responses").respond(json=response_body())

        client.responses.create(model="gpt-5-mini", input="hi")

        assert ["/v1/responses"] == [c.request.url.path for c in httpx2_mock.calls]


class TestAsync:
    async def test_create(self, aclient: costmeter.AsyncOpenAI, httpx2_mock: respx.Router) -> None:
        """The async client meters a create like the sync one."""
        body = response_body()
        httpx2_mock.post("/responses").respond(json=body)

        with capture_logs() as logs:
            await aclient.responses.create(model="gpt-5-mini", input="hi")

        assert _expected_cost(body) == money(calls(logs)[0]["cost_usd"])

    async def test_stream(self, aclient: costmeter.AsyncOpenAI, httpx2_mock: respx.Router) -> None:
        """An async stream fully consumed is billed from its terminal event."""
        body = response_body()
        httpx2_mock.post("/responses").respond(
            content=sse(response_events(body)), headers={"content-type": "text/event-stream"}
        )

        with capture_logs() as logs:
            stream = await aclient.responses.create(model="gpt-5-mini", input="hi", stream=True)
            async for _ in stream:
                pass

        [event] = calls(logs)
        assert ("ok", "reported") == (event["outcome"], event["usage_source"])
