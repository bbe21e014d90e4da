"""
Replay every recorded real OpenAI interaction (tests/fixtures/traffic/) through the metered
clients, sync and async, over real loopback HTTP: JSON bodies as JSON, streams as real SSE.

For each recording the metered client must send the recorded request body unchanged, hand the
caller exactly what the bare ``openai`` client hands it for the same payload, and emit exactly one
``costmeter.call`` event whose token fields are copies of the recorded usage and whose cost is
`costmeter.cost_of` on that usage at the tier the response was served at, plus the web search
fees OpenAI bills per search call (hand-written rates below; the responses recorded before
2026 carry no ``tool_usage``, so each ``web_search_call`` item whose action is a search counts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

import costmeter
from costmeter import cost_of
from costmeter.testing import FakeOpenAI

from .conftest import load_traffic
from .helpers import calls, money

RECORDS = load_traffic()
_OUTCOME_OF_STATUS = {"completed": "ok", "incomplete": "incomplete", "failed": "failed"}


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    assert [] == server.errors
    assert 0 == server.pending_faults  # every queued replay was served


@pytest.fixture(scope="module")
def clients(server: FakeOpenAI) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    """(metered, bare) sync clients on the same server."""
    kwargs: dict[str, Any] = {"api_key": "sk-test", "base_url": server.base_url, "max_retries": 0}
    with costmeter.OpenAI(**kwargs) as metered, openai.OpenAI(**kwargs) as bare:
        yield metered, bare


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def aclients(
    server: FakeOpenAI,
) -> AsyncIterator[tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]]:
    """(metered, bare) async clients, on the module's event loop (building one costs ~70 ms)."""
    kwargs: dict[str, Any] = {"api_key": "sk-test", "base_url": server.base_url, "max_retries": 0}
    async with costmeter.AsyncOpenAI(**kwargs) as metered, openai.AsyncOpenAI(**kwargs) as bare:
        yield metered, bare


# -- what the recording says ---------------------------------------------------------------------


def _final(record: dict[str, Any]) -> dict[str, Any]:
    """The object carrying the served model/tier/status: body, terminal event, or last chunk."""
    response = record["response"]
    if not record["stream"]:
        return dict(response)
    if record["endpoint"] == "responses":
        [terminal] = [e for e in response if e.get("type") in _TERMINAL_EVENT_TYPES]
        return dict(terminal["response"])
    tiers = [c["service_tier"] for c in response if c.get("service_tier")]
    return {"id": response[0]["id"], "service_tier": tiers[-1] if tiers else None}


_TERMINAL_EVENT_TYPES = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.cancelled"}
)


# OpenAI's pricing page, "Built-in tools" (per call): web_search $10/1k on every model;
# web_search_preview $10/1k on reasoning models, $25/1k on non-reasoning ones.
_SEARCH_FEE = {"web_search": Decimal("0.01"), "web_search_preview": Decimal("0.01")}
_NON_REASONING_PREVIEW_FEE = Decimal("0.025")
_NON_REASONING = ("gpt-4o", "gpt-4.1")


def _search_fees(record: dict[str, Any]) -> Decimal:
    """The recording's web search fee: its searches times the rate of the tool it offered."""
    tools = [t.get("type") for t in record["request"].get("tools", [])]
    tool = next((t for t in tools if t in _SEARCH_FEE), None)
    if tool is None:
        return Decimal(0)
    searches = sum(
        1
        for item in _final(record).get("output") or []
        if item.get("type") == "web_search_call"
        and (item.get("action") or {}).get("type", "search") == "search"
    )
    fee = _SEARCH_FEE[tool]
    if tool == "web_search_preview" and record["model"].startswith(_NON_REASONING):
        fee = _NON_REASONING_PREVIEW_FEE
    return searches * fee


def _served_tier(record: dict[str, Any]) -> str | None:
    tier = _final(record).get("service_tier")
    return tier if tier is not None else record["request"].get("service_tier")


def _expected_tokens(record: dict[str, Any]) -> dict[str, int]:
    """The recorded usage under the event's names (Chat prompt/completion mapped)."""
    usage = record["usage"]
    if record["endpoint"] == "responses":
        details_in = usage.get("input_tokens_details") or {}
        details_out = usage.get("output_tokens_details") or {}
        input_tokens, output_tokens = usage["input_tokens"], usage["output_tokens"]
    else:
        details_in = usage.get("prompt_tokens_details") or {}
        details_out = usage.get("completion_tokens_details") or {}
        input_tokens, output_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    return {
        "input_tokens": input_tokens,
        "cached_input_tokens": details_in.get("cached_tokens") or 0,
        "cache_write_input_tokens": details_in.get("cache_write_tokens") or 0,
        "output_tokens": output_tokens,
        "reasoning_tokens": details_out.get("reasoning_tokens") or 0,
    }


def _expected_outcome(record: dict[str, Any]) -> str:
    if record["endpoint"] == "chat.completions":
        return "ok"
    return _OUTCOME_OF_STATUS[_final(record)["status"]]


# -- driving the clients -------------------------------------------------------------------------


def _resource(client: Any, record: dict[str, Any]) -> Any:
    return client.responses if record["endpoint"] == "responses" else client.chat.completions


def _run_sync(client: openai.OpenAI, record: dict[str, Any]) -> Any:
    """Send the recorded request; return what the caller got, as plain data."""
    result = _resource(client, record).create(**record["request"])
    if record["stream"]:
        return [event.model_dump(warnings=False) for event in result]
    return result.model_dump(warnings=False)


async def _run_async(client: openai.AsyncOpenAI, record: dict[str, Any]) -> Any:
    result = await _resource(client, record).create(**record["request"])
    if record["stream"]:
        return [event.model_dump(warnings=False) async for event in result]
    return result.model_dump(warnings=False)


def _serve(server: FakeOpenAI, record: dict[str, Any], response: Any = None) -> None:
    """Queue the recorded payload for the next two requests (bare, then metered)."""
    body = record["response"] if response is None else response
    server.replay_next(body, stream=record["stream"], times=2)


def _check(
    record: dict[str, Any],
    server: FakeOpenAI,
    logs: list[dict[str, Any]],
    bare: Any,
    metered: Any,
) -> None:
    """Everything one replay must satisfy (see the module docstring)."""
    bare_request, metered_request = server.requests
    assert record["request"] == metered_request.json == bare_request.json
    assert bare == metered

    [event] = calls(logs)
    expected = _expected_tokens(record)
    assert expected == {key: event[key] for key in expected}
    assert (
        "reported",
        _expected_outcome(record),
        record["request"]["model"],
        record["model"],
        _final(record)["id"],
        bool(record["stream"]),
    ) == (
        event["usage_source"],
        event["outcome"],
        event["model"],
        event["response_model"],
        event["response_id"],
        event["stream"],
    )
    cost = cost_of(record["model"], record["usage"], service_tier=_served_tier(record))
    assert cost.total_usd + _search_fees(record) == money(event["cost_usd"])
    assert (cost.price_source, "ok") == (event["price_source"], event["price_status"])


@pytest.mark.parametrize(("name", "record"), RECORDS, ids=[name for name, _ in RECORDS])
def test_replay_sync(
    name: str,
    record: dict[str, Any],
    server: FakeOpenAI,
    clients: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    """A recording through costmeter.OpenAI: same result as openai.OpenAI, exact usage and cost."""
    metered_client, bare_client = clients
    _serve(server, record)

    bare = _run_sync(bare_client, record)
    with capture_logs() as logs:
        metered = _run_sync(metered_client, record)

    _check(record, server, logs, bare, metered)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "record"), RECORDS, ids=[name for name, _ in RECORDS])
async def test_replay_async(
    name: str,
    record: dict[str, Any],
    server: FakeOpenAI,
    aclients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
) -> None:
    """The same replay through costmeter.AsyncOpenAI."""
    metered_client, bare_client = aclients
    _serve(server, record)

    bare = await _run_async(bare_client, record)
    with capture_logs() as logs:
        metered = await _run_async(metered_client, record)

    _check(record, server, logs, bare, metered)


def test_every_recording_is_replayed() -> None:
    """The fixture set is complete (70 real interactions, both APIs, both transports)."""
    kinds = {(r["endpoint"], r["stream"]) for _, r in RECORDS}
    assert 70 == len(RECORDS)
    assert {
        ("responses", False),
        ("responses", True),
        ("chat.completions", False),
        ("chat.completions", True),
    } == kinds


# -- Chat streams without include_usage ----------------------------------------------------------

CHAT_STREAMS = [(n, r) for n, r in RECORDS if r["endpoint"] == "chat.completions" and r["stream"]]


def _without_usage(record: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same chat stream as it would be without ``stream_options.include_usage``."""
    request = {k: v for k, v in record["request"].items() if k != "stream_options"}
    chunks = [
        {k: v for k, v in chunk.items() if k != "usage"}
        for chunk in record["response"]
        if chunk.get("choices") or not chunk.get("usage")
    ]
    return request, chunks


def _delta_text(chunks: list[dict[str, Any]]) -> str:
    """Everything the chunks delivered as output: content, refusals, tool-call arguments."""
    parts: list[str] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            parts.extend(t for t in (delta.get("content"), delta.get("refusal")) if t)
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if arguments:
                    parts.append(arguments)
    return "".join(parts)


@pytest.mark.parametrize(("name", "record"), CHAT_STREAMS, ids=[n for n, _ in CHAT_STREAMS])
def test_chat_stream_without_include_usage_is_estimated(
    name: str,
    record: dict[str, Any],
    server: FakeOpenAI,
    clients: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    """
    A Chat stream sent without include_usage never reports usage: the event is billed at the
    estimate (input: pre-flight estimate; output: tokens of the received deltas), flagged
    ``usage_source="estimated"``, priced above $0, and the caller's chunks are untouched.
    """
    metered_client, bare_client = clients
    request, chunks = _without_usage(record)
    server.replay_next(chunks, stream=True, times=2)

    bare = [c.model_dump(warnings=False) for c in bare_client.chat.completions.create(**request)]
    with capture_logs() as logs:
        metered = [
            c.model_dump(warnings=False) for c in metered_client.chat.completions.create(**request)
        ]

    assert bare == metered
    assert "stream_options" not in server.requests[-1].json  # type: ignore[operator]
    [event] = calls(logs)
    output = costmeter.count_tokens(_delta_text(chunks), model=record["model"])
    assert ("estimated", "ok", event["estimated_input_tokens"], output) == (
        event["usage_source"],
        event["outcome"],
        event["input_tokens"],
        event["output_tokens"],
    )
    usage = costmeter.Usage(input_tokens=event["input_tokens"], output_tokens=output)
    expected = cost_of(record["model"], usage, service_tier=_served_tier(record)).total_usd
    assert expected == money(event["cost_usd"])
    assert Decimal(0) < expected
