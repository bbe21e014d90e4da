"""
Framework regression suite: openai-agents, pydantic-ai, langchain-openai and llm, each making
real calls through its own ``openai`` client against the loopback fake, metered by
`costmeter.instrument()`. Each test checks that exactly one ``costmeter.call`` event per API
call is logged, and that its token counts are the usage the *framework itself* reports (two
independent readings of the same response).

The frameworks are the optional ``frameworks`` extra (``pip install -e ".[test,frameworks]"``);
a test whose framework is not installed is skipped, saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
import costmeter._instrument
from costmeter.testing import FakeOpenAI

from .helpers import calls

API_KEY = "sk-frameworks-suite"
PROMPT = "Name three prime numbers, briefly."


def _need(module: str) -> Any:
    return pytest.importorskip(
        module, reason=f'{module} is not installed (pip install -e ".[test,frameworks]")'
    )


@pytest.fixture
def metered(server: FakeOpenAI) -> Iterator[list[dict[str, Any]]]:
    """instrument() active and events captured for the test; undone afterwards."""
    server.reset()
    with capture_logs() as logs, costmeter.instrument():
        yield logs
    active = costmeter._instrument._active
    if active is not None:
        active.uninstrument()


def _one_call(logs: list[dict[str, Any]], api: str, model: str) -> dict[str, Any]:
    [event] = calls(logs)
    assert (api, model, "ok", "reported") == (
        event["api"],
        event["model"],
        event["outcome"],
        event["usage_source"],
    )
    assert event["cost_usd"] > 0
    return event


def _agent(server: FakeOpenAI, model_class: str, model: str) -> tuple[Any, Any]:
    """The agents module and an Agent on a plain openai.AsyncOpenAI (tracing off: no network)."""
    agents = _need("agents")
    import openai

    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    agent = agents.Agent(
        name="primes",
        instructions="Answer briefly.",
        model=getattr(agents, model_class)(model=model, openai_client=client),
    )
    return agents, agent


def test_openai_agents(server: FakeOpenAI, metered: list[dict[str, Any]]) -> None:
    """An Agents SDK run over the Responses API: one event, the run's own usage."""
    agents, agent = _agent(server, "OpenAIResponsesModel", "gpt-5-mini")

    result = agents.Runner.run_sync(agent, PROMPT)

    usage = result.context_wrapper.usage
    event = _one_call(metered, "responses", "gpt-5-mini")
    assert (usage.input_tokens, usage.output_tokens) == (
        event["input_tokens"],
        event["output_tokens"],
    )
    assert 1 == server.calls


def test_pydantic_ai(server: FakeOpenAI, metered: list[dict[str, Any]]) -> None:
    """A pydantic-ai agent on Chat Completions: one event, the run's own usage."""
    pydantic_ai = _need("pydantic_ai")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(
        "gpt-4o-mini", provider=OpenAIProvider(base_url=server.base_url, api_key=API_KEY)
    )

    result = pydantic_ai.Agent(model).run_sync(PROMPT)

    usage = result.usage  # a property in current pydantic-ai, a method before
    if not hasattr(usage, "input_tokens"):
        usage = usage()
    event = _one_call(metered, "chat.completions", "gpt-4o-mini")
    assert (usage.input_tokens, usage.output_tokens) == (
        event["input_tokens"],
        event["output_tokens"],
    )


def test_langchain_openai(server: FakeOpenAI, metered: list[dict[str, Any]]) -> None:
    """ChatOpenAI.invoke and a streamed call: one event each, LangChain's own usage."""
    langchain_openai = _need("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="gpt-4o-mini", base_url=server.base_url, api_key=API_KEY, max_retries=0
    )

    message = chat.invoke(PROMPT)
    chunks = list(chat.stream(PROMPT, stream_usage=True))

    invoked, streamed = calls(metered)
    assert message.usage_metadata is not None
    assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (
        invoked["input_tokens"],
        invoked["output_tokens"],
    )
    [usage] = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert (usage["input_tokens"], usage["output_tokens"], True, "reported") == (
        streamed["input_tokens"],
        streamed["output_tokens"],
        streamed["stream"],
        streamed["usage_source"],
    )


def test_llm(
    server: FakeOpenAI, metered: list[dict[str, Any]], tmp_path: Path, monkeypatch: Any
) -> None:
    """Simon Willison's llm, its OpenAI chat model: one event, llm's own usage."""
    _need("llm")
    from llm.default_plugins.openai_models import Chat

    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))  # llm keeps nothing outside the test
    model = Chat("gpt-4o-mini", api_base=server.base_url)

    response = model.prompt(PROMPT, key=API_KEY, stream=False)
    assert response.text()

    usage = response.usage()
    event = _one_call(metered, "chat.completions", "gpt-4o-mini")
    assert (usage.input, usage.output) == (event["input_tokens"], event["output_tokens"])


def test_openai_agents_async_run(server: FakeOpenAI, metered: list[dict[str, Any]]) -> None:
    """The same agent awaited in a running loop (the async client path)."""
    agents, agent = _agent(server, "OpenAIChatCompletionsModel", "gpt-4o-mini")

    result = asyncio.run(agents.Runner.run(agent, PROMPT))

    assert result.final_output
    _one_call(metered, "chat.completions", "gpt-4o-mini")
