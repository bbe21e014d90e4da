"""
`costmeter.instrument()`: metering plain ``openai.OpenAI``/``AsyncOpenAI`` clients that code we
do not control creates, over real loopback HTTP; idempotent, fully undone by ``uninstrument()``,
and never double-metering costmeter's own clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient
from structlog.testing import capture_logs

import costmeter
import costmeter._instrument
from costmeter.testing import FakeOpenAI

from .helpers import calls

MESSAGES = [{"role": "user", "content": "Name three prime numbers."}]
_ORIGINAL = {
    cls: (cls.__dict__.get("request"), cls.request) for cls in (openai.OpenAI, openai.AsyncOpenAI)
}
_HOOKS = [
    (cls, name, cls.__dict__.get(name))
    for cls in (openai.OpenAI, openai.AsyncOpenAI)
    for name in ("_send_request", "_process_response")
]


@pytest.fixture(autouse=True)
def _always_uninstrumented(server: FakeOpenAI) -> Iterator[None]:
    """Every test starts and ends with the SDK exactly as shipped."""
    server.reset()
    yield
    active = costmeter._instrument._active
    if active is not None:
        active.uninstrument()
    for cls, (own, resolved) in _ORIGINAL.items():
        assert own is cls.__dict__.get("request")
        assert resolved is cls.request
    for cls, name, own in _HOOKS:
        assert own is cls.__dict__.get(name)


def _kwargs(server: FakeOpenAI) -> dict[str, Any]:
    return {"api_key": "sk-test-instrument", "base_url": server.base_url, "max_retries": 0}


def _azure(server: FakeOpenAI) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key="azure-test-key", api_version="2024-10-21", azure_endpoint=server.url, max_retries=0
    )


def _chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


class TestSync:
    def test_meters_clients_created_before_and_after(self, server: FakeOpenAI) -> None:
        """A plain openai.OpenAI made before instrument() and one made after are both metered."""
        before = openai.OpenAI(**_kwargs(server))

        with capture_logs() as logs:
            with costmeter.instrument():
                after = openai.OpenAI(**_kwargs(server))
                _chat(before)
                after.responses.create(model="gpt-5-mini", input="hi")

        assert [("chat.completions", "gpt-4o-mini"), ("responses", "gpt-5-mini")] == [
            (e["api"], e["model"]) for e in calls(logs)
        ]

    def test_with_options_copies_stay_metered(self, server: FakeOpenAI) -> None:
        """The patch is on the class, so with_options()/copy() clients are metered too."""
        client = openai.OpenAI(**_kwargs(server))

        with capture_logs() as logs, costmeter.instrument():
            _chat(client.with_options(timeout=5))

        assert 1 == len(calls(logs))

    def test_idempotent(self, server: FakeOpenAI) -> None:
        """A second instrument() returns the same handle and does not meter twice."""
        client = openai.OpenAI(**_kwargs(server))

        first = costmeter.instrument()
        second = costmeter.instrument()
        with capture_logs() as logs:
            _chat(client)

        assert first is second
        assert 1 == len(calls(logs))

    def test_uninstrument_restores_the_exact_method(self, server: FakeOpenAI) -> None:
        """After uninstrument() the SDK's own request() is back and nothing is metered."""
        handle = costmeter.instrument()
        assert openai.OpenAI.request is not _ORIGINAL[openai.OpenAI][1]

        handle.uninstrument()
        client = openai.OpenAI(**_kwargs(server))
        with capture_logs() as logs:
            _chat(client)

        assert SyncAPIClient.request is openai.OpenAI.request
        assert [] == calls(logs)
        assert costmeter.instrument() is not handle  # a fresh handle can instrument again

    def test_failed_and_lost_attempts_are_recorded(self, server: FakeOpenAI) -> None:
        """Instrumented clients see each attempt too: a 500 is an error event with no cost; a
        request whose response was lost is charged its reserved worst case."""
        client = openai.OpenAI(**_kwargs(server))
        with capture_logs() as logs, costmeter.instrument():
            server.fail_next(500)
            with pytest.raises(openai.InternalServerError):
                _chat(client)
            server.reset_next(before_headers=True)
            with pytest.raises(openai.APIConnectionError):
                _chat(client)

        failed, lost = calls(logs)
        assert ("error", "reported", 0) == (
            failed["outcome"],
            failed["usage_source"],
            failed["cost_usd"],
        )
        assert ("error", "reserved") == (lost["outcome"], lost["usage_source"])
        assert lost["cost_usd"] == lost["estimated_cost_usd"] > 0

    def test_costmeter_clients_are_not_metered_twice(self, server: FakeOpenAI) -> None:
        """costmeter.OpenAI meters itself; instrumentation passes its calls straight through."""
        client = costmeter.OpenAI(**_kwargs(server))

        with capture_logs() as logs, costmeter.instrument():
            _chat(client)
            server.reset_next(before_headers=True)  # one attempt, not two, for the lost one
            with pytest.raises(openai.APIConnectionError):
                _chat(client)
            for _ in client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            ):
                pass

        assert ["ok", "error", "ok"] == [e["outcome"] for e in calls(logs)]
        assert calls(logs)[1]["cost_usd"] == calls(logs)[1]["estimated_cost_usd"]

    def test_result_and_body_unchanged(self, server: FakeOpenAI) -> None:
        """An instrumented client returns the SDK's objects and sends the same body."""
        client = openai.OpenAI(**_kwargs(server))
        _chat(client)
        bare_body = server.last_request.json if server.last_request else None

        with costmeter.instrument():
            result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

        assert isinstance(result, openai.types.chat.ChatCompletion)
        assert server.last_request is not None
        assert bare_body == server.last_request.json

    def test_azure_subclass_is_metered(self, server: FakeOpenAI) -> None:
        """openai.AzureOpenAI inherits the patched request() and is metered."""
        client = _azure(server)

        with capture_logs() as logs, costmeter.instrument():
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

        assert ["chat.completions"] == [e["api"] for e in calls(logs)]

    def test_budget_applies_to_instrumented_clients(self, server: FakeOpenAI) -> None:
        """instrument(budget=...) caps every instrumented client: refused before sending."""
        client = openai.OpenAI(**_kwargs(server))

        with costmeter.instrument(budget="0.0001"), pytest.raises(costmeter.BudgetExceededError):
            client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=2000,
            )

        assert 0 == server.calls


class TestAsync:
    async def test_meters_async_clients(self, server: FakeOpenAI) -> None:
        """Plain openai.AsyncOpenAI clients are metered, streams included."""
        client = openai.AsyncOpenAI(**_kwargs(server))

        with capture_logs() as logs, costmeter.instrument():
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            stream = await client.responses.create(model="gpt-5-mini", input="hi", stream=True)
            async for _ in stream:
                pass

        assert [("chat.completions", False), ("responses", True)] == [
            (e["api"], e["stream"]) for e in calls(logs)
        ]
        await client.close()

    async def test_uninstrument_restores_async(self, server: FakeOpenAI) -> None:
        """uninstrument() restores AsyncOpenAI.request too; costmeter clients stay single."""
        metered = costmeter.AsyncOpenAI(**_kwargs(server))
        handle = costmeter.instrument()
        with capture_logs() as logs:
            await metered.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        handle.uninstrument()

        assert AsyncAPIClient.request is openai.AsyncOpenAI.request
        assert 1 == len(calls(logs))
        await metered.close()


def test_a_different_budget_is_not_silently_ignored() -> None:
    """instrument(budget=...) while already instrumented with another cap raises."""
    cap = costmeter.Budget("1", name="framework")
    handle = costmeter.instrument(budget=cap)

    with pytest.raises(costmeter.ConfigurationError):
        costmeter.instrument(budget="2")

    assert handle is costmeter.instrument(budget=cap)
    assert handle is costmeter.instrument()


class TestOptions:
    """instrument() takes every metering option costmeter's own clients take."""

    def test_include_stream_usage(self, server: FakeOpenAI) -> None:
        """Chat streams ask for usage, hide the usage-only chunk, and are reported, not estimated."""
        client = openai.OpenAI(**_kwargs(server))

        with capture_logs() as logs, costmeter.instrument(include_stream_usage=True):
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            parts = [chunk.choices[0].delta.content for chunk in stream]  # no IndexError

        assert server.last_request is not None
        assert {"include_usage": True} == server.last_request.json["stream_options"]  # type: ignore[index]
        assert parts
        [event] = calls(logs)
        assert ("ok", "reported") == (event["outcome"], event["usage_source"])

    def test_exact_input_tokens(self, server: FakeOpenAI) -> None:
        """Responses calls ask the free input-token count endpoint first."""
        client = openai.OpenAI(**_kwargs(server))

        with capture_logs() as logs, costmeter.instrument(exact_input_tokens=True):
            client.responses.create(model="gpt-5-mini", input="Count me exactly, please.")

        assert ["/v1/responses/input_tokens", "/v1/responses"] == [r.path for r in server.requests]
        [event] = calls(logs)
        assert event["estimate_complete"] is True
        assert event["estimated_input_tokens"] == event["input_tokens"]

    def test_log_content(self, server: FakeOpenAI) -> None:
        """log_content=True puts the request's content in the event (off otherwise)."""
        client = openai.OpenAI(**_kwargs(server))

        with capture_logs() as logs:
            with costmeter.instrument(log_content=True):
                _chat(client)
            with costmeter.instrument():
                _chat(client)

        with_content, without = calls(logs)
        assert "Name three prime numbers." in str(with_content["request_content"])
        assert "request_content" not in without

    def test_deployments_price_azure_clients(self, server: FakeOpenAI) -> None:
        """An instrumented openai.AzureOpenAI is priced through the deployments mapping."""
        client = _azure(server)
        server.replay_next(
            {
                "id": "chatcmpl-azure",
                "object": "chat.completion",
                "created": 1_760_000_000,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "2, 3, 5"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
            },
            stream=False,
        )

        with capture_logs() as logs:
            with costmeter.instrument(deployments={"team-chat": "gpt-4o-2024-08-06"}):
                client.chat.completions.create(model="team-chat", messages=MESSAGES)  # type: ignore[arg-type]

        [event] = calls(logs)
        # Priced as gpt-4o-2024-08-06 (not the gpt-4o-mini the response names): $2.50 per 1M
        # input, $10.00 per 1M output tokens.
        # 1000 x 2.50 / 1e6 + 200 x 10.00 / 1e6 = 0.0025 + 0.002 = 0.0045
        assert ("team-chat", "gpt-4o", 0.0045) == (
            event["model"],
            event["priced_as"],
            event["cost_usd"],
        )

    def test_other_options_while_active_raise(self) -> None:
        """Different options while instrumented raise; the same or none return the handle."""
        handle = costmeter.instrument(include_stream_usage=True)

        with pytest.raises(costmeter.ConfigurationError, match="include_stream_usage=True"):
            costmeter.instrument(log_content=True)

        assert handle is costmeter.instrument(include_stream_usage=True)
        assert handle is costmeter.instrument()
