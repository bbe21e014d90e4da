"""
The in-process transport (`FakeOpenAI.transport()`) against the loopback server: the same
scenarios through both carriers must give the same results, the same errors and the same
`costmeter.call` events (ids, request ids and durations aside, which differ on every call).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import OMIT, FakeOpenAI

Scenario = Callable[[Any, FakeOpenAI], Any]
_BIG = "lorem ipsum dolor sit amet " * 300  # > 1,024 fake tokens: a second call hits the cache


def _usage(obj: Any) -> Any:
    usage = getattr(obj, "usage", None)
    return usage.model_dump() if usage is not None else None


def _failure(exc: BaseException) -> dict[str, Any]:
    cause = exc.__cause__ or exc.__context__
    return {
        "error": type(exc).__name__,
        "status": getattr(exc, "status_code", None),
        "cause": type(cause).__name__ if cause is not None else None,
        "cause_message": str(cause) if isinstance(cause, httpx2.TransportError) else None,
    }


def responses_create(client: Any, fake: FakeOpenAI) -> Any:
    r = client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=300)
    return [r.status, r.model, r.output_text, _usage(r)]


def responses_incomplete(client: Any, fake: FakeOpenAI) -> Any:
    r = client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=100)
    return [r.status, r.incomplete_details and r.incomplete_details.reason, _usage(r)]


def responses_stream(client: Any, fake: FakeOpenAI) -> Any:
    events = list(client.responses.create(model="gpt-4.1-mini", input="hi", stream=True))
    return [[e.type for e in events], _usage(events[-1].response)]


def responses_cached(client: Any, fake: FakeOpenAI) -> Any:
    first = client.responses.create(model="gpt-4.1-mini", input=_BIG)
    second = client.responses.create(model="gpt-4.1-mini", input=_BIG + " more")
    return [_usage(first), _usage(second)]


def chat_create(client: Any, fake: FakeOpenAI) -> Any:
    c = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], n=2
    )
    return [[(x.message.content, x.finish_reason) for x in c.choices], _usage(c)]


def chat_stream(client: Any, fake: FakeOpenAI) -> Any:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return [len(chunks), text, _usage(chunks[-1])]


def chat_tool_call(client: Any, fake: FakeOpenAI) -> Any:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    c = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=[tool]
    )
    call = c.choices[0].message.tool_calls[0]
    return [call.function.name, call.function.arguments, _usage(c)]


def embeddings(client: Any, fake: FakeOpenAI) -> Any:
    e = client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    return [len(e.data), len(e.data[0].embedding), e.data[0].embedding[:3], _usage(e)]


def rate_limited(client: Any, fake: FakeOpenAI) -> Any:
    fake.fail_next(429)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="gpt-5-mini", input="hi")
    return _failure(caught.value)


def retried(client: Any, fake: FakeOpenAI) -> Any:
    fake.fail_next(500, headers={"retry-after-ms": "1"})
    r = client.with_options(max_retries=1).responses.create(model="gpt-5-mini", input="hi")
    return [r.status, _usage(r), fake.calls]


def reset(client: Any, fake: FakeOpenAI) -> Any:
    fake.reset_next()
    with pytest.raises(openai.APIConnectionError) as caught:
        client.responses.create(model="gpt-5-mini", input="hi")
    return _failure(caught.value)


def half_body(client: Any, fake: FakeOpenAI) -> Any:
    fake.reset_next(before_headers=False)
    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    return _failure(caught.value)


def cut_stream(client: Any, fake: FakeOpenAI) -> Any:
    fake.cut_stream_next(after_events=4)
    seen: list[str] = []

    def read() -> None:
        for event in client.responses.create(model="gpt-5-mini", input="hi", stream=True):
            seen.append(event.type)

    with pytest.raises(openai.APIConnectionError) as caught:
        read()
    return [seen, _failure(caught.value)]


def malformed_then_usage_omitted(client: Any, fake: FakeOpenAI) -> Any:
    fake.usage_override_next(OMIT)
    r = client.responses.create(model="gpt-5-mini", input="hi")
    fake.truncated_json_next()
    with pytest.raises(json.JSONDecodeError):
        client.responses.create(model="gpt-5-mini", input="hi")
    return [r.usage, r.status]


def timeout(client: Any, fake: FakeOpenAI) -> Any:
    fake.delay_next(5)
    with pytest.raises(openai.APITimeoutError) as caught:
        client.with_options(timeout=0.2).responses.create(model="gpt-5-mini", input="hi")
    return _failure(caught.value)


def budget_refusal(client: Any, fake: FakeOpenAI) -> Any:
    with (
        costmeter.budget("0.0001") as cap,
        pytest.raises(costmeter.BudgetExceededError) as caught,
    ):
        client.responses.create(model="gpt-5", input="hi", max_output_tokens=100_000)
    return [type(caught.value).__name__, str(cap.spent_usd), fake.calls]


def background(client: Any, fake: FakeOpenAI) -> Any:
    started = client.responses.create(model="gpt-5-mini", input="hi", background=True)
    states = [started.status]
    while states[-1] in ("queued", "in_progress"):
        states.append(client.responses.retrieve(started.id).status)
    return states


SCENARIOS: list[Scenario] = [
    responses_create,
    responses_incomplete,
    responses_stream,
    responses_cached,
    chat_create,
    chat_stream,
    chat_tool_call,
    embeddings,
    rate_limited,
    retried,
    reset,
    half_body,
    cut_stream,
    malformed_then_usage_omitted,
    timeout,
    budget_refusal,
    background,
]


def _events(logs: list[Any]) -> list[dict[str, Any]]:
    """costmeter's events without what differs on every call (ids, request ids, durations)."""
    return [
        {k: v for k, v in e.items() if not k.endswith(("_id", "_ms"))}
        for e in logs
        if str(e.get("event")).startswith("costmeter.")
    ]


def _run(scenario: Scenario, client: Any, fake: FakeOpenAI) -> tuple[Any, list[dict[str, Any]]]:
    fake.reset()
    with capture_logs() as logs:
        result = scenario(client, fake)
    assert [] == fake.errors
    assert 0 == fake.pending_faults
    return result, _events(logs)


@pytest.fixture(scope="module")
def carriers() -> Iterator[tuple[FakeOpenAI, Any, FakeOpenAI, Any]]:
    """A loopback server with its client; an unstarted fake with an in-process client."""
    with FakeOpenAI() as server:
        over_socket = costmeter.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        in_process = FakeOpenAI()
        http_client = httpx2.Client(transport=in_process.transport())
        direct = costmeter.OpenAI(
            base_url="http://fake.test/v1", api_key="test", max_retries=0, http_client=http_client
        )
        yield server, over_socket, in_process, direct
        http_client.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_transport_answers_as_the_server(
    scenario: Scenario, carriers: tuple[FakeOpenAI, Any, FakeOpenAI, Any]
) -> None:
    server, over_socket, in_process, direct = carriers
    expected = _run(scenario, over_socket, server)
    got = _run(scenario, direct, in_process)
    assert expected == got
    assert expected[1]  # metered both ways: the comparison is not vacuous


def test_the_transport_opens_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the in-process transport opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    fake = FakeOpenAI()
    with httpx2.Client(transport=fake.transport()) as http_client:
        client = openai.OpenAI(base_url="http://x/v1", api_key="test", http_client=http_client)
        client.responses.create(model="gpt-5-mini", input="hi")
    assert 1 == fake.calls
    assert "/v1/responses" == fake.requests[0].path


async def _async_stream(client: Any) -> Any:
    stream = await client.responses.create(model="gpt-5-mini", input="hi", stream=True)
    types = [event.type async for event in stream]
    chat = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    return [types, _usage(chat)]


async def test_async_transport_answers_as_the_server() -> None:
    fake = FakeOpenAI(event_delay=0.001)
    with FakeOpenAI(event_delay=0.001) as server:
        over_socket = costmeter.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        async with httpx2.AsyncClient(transport=fake.transport()) as http_client:
            direct = costmeter.AsyncOpenAI(
                base_url="http://fake.test/v1", api_key="t", max_retries=0, http_client=http_client
            )
            with capture_logs() as socket_logs:
                expected = await _async_stream(over_socket)
            with capture_logs() as direct_logs:
                got = await _async_stream(direct)
        await over_socket.close()
    assert expected == got
    assert _events(socket_logs) == _events(direct_logs)
    assert 2 == len(_events(direct_logs))
