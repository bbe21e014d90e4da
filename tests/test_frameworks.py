"""
Framework regression suite: openai-agents, pydantic-ai, langchain-openai and llm making real
calls against the loopback fake, metered in both ways a user can wire costmeter in:

* ``client``: a `costmeter.OpenAI` / `costmeter.AsyncOpenAI` handed to the framework through
  its own injection point (openai-agents' ``openai_client=``, pydantic-ai's
  ``OpenAIProvider(openai_client=...)``, langchain's ``client``/``root_client`` fields);
* ``instrument``: the framework keeps its own plain ``openai`` client and
  `costmeter.instrument()` meters it.

Each test runs the same workload twice: once on a bare ``openai`` client with costmeter not
involved at all, once metered. Metering must be invisible to the framework, so the two runs must
send the same request bodies and give the same framework result (output text, the usage the
framework reports). The metered run must log exactly one ``costmeter.call`` event per API call,
whose input tokens are what the fake bills for the recorded request (`fake_input_tokens`, the
fake's published rule) and whose token counts equal the usage the *framework itself* reports
(two independent readings of the same response).

Tool calls and structured output: `FakeOpenAI` answers in text only (no tool-call / JSON-schema
mode yet), so the reply that calls a tool is replayed (its usage written by hand, checked exactly)
for the openai-agents tool loop (the agent really runs the tool and the fake generates the
answer), langchain's ``bind_tools`` and pydantic-ai's output tool (structured output). Not covered
yet: ``response_format`` JSON-schema output, tool calls on the Responses API and in streams,
and llm's tools; those want that fake mode rather than more hand-written replies.

The frameworks are the optional ``frameworks`` extra (``pip install -e ".[test,frameworks]"``);
a test whose framework is not installed is skipped, saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
import costmeter._instrument
from costmeter.testing import FakeOpenAI, fake_input_tokens

from .helpers import calls

API_KEY = "sk-frameworks-suite"
PROMPT = "Name three prime numbers, briefly."
STYLES = ["client", "instrument"]

#: Usage of the replayed tool-call replies, written by hand: the fake does not generate them.
TOOL_CALL_USAGE = (61, 17)
ADD_ARGUMENTS = '{"a": 2, "b": 3}'
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}

Summary = dict[str, Any]


def _need(module: str) -> Any:
    return pytest.importorskip(
        module, reason=f'{module} is not installed (pip install -e ".[test,frameworks]")'
    )


@dataclass(frozen=True)
class Wiring:
    """How one run reaches the fake: ``bare`` (no costmeter), ``client`` or ``instrument``."""

    style: str
    base_url: str

    @property
    def injected(self) -> bool:
        """True when the framework is handed a costmeter client rather than building its own."""
        return self.style == "client"

    def sync_client(self) -> openai.OpenAI:
        cls = costmeter.OpenAI if self.injected else openai.OpenAI
        return cls(base_url=self.base_url, api_key=API_KEY, max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        cls = costmeter.AsyncOpenAI if self.injected else openai.AsyncOpenAI
        return cls(base_url=self.base_url, api_key=API_KEY, max_retries=0)


@dataclass
class Run:
    """The metered run: the framework's summary, the events it logged, the requests sent."""

    summary: Summary
    events: list[dict[str, Any]]
    bodies: list[dict[str, Any]]
    paths: list[str]


@pytest.fixture(autouse=True)
def _no_instrumentation_left() -> Iterator[None]:
    yield
    active = costmeter._instrument._active
    if active is not None:
        active.uninstrument()


def _bare_then_metered(
    server: FakeOpenAI, style: str, workload: Callable[[Wiring], Summary]
) -> Run:
    """
    Run *workload* on a bare openai client, then metered in *style*; both must behave the same.

    The bare run logs no event (costmeter is not involved); the metered one sends the very same
    request bodies and the framework returns the very same summary.
    """
    server.reset()
    with capture_logs() as bare_logs:
        bare = workload(Wiring("bare", server.base_url))
    assert [] == calls(bare_logs)
    bare_bodies = [r.json for r in server.requests]
    assert server.calls >= 1

    server.reset()
    scope: AbstractContextManager[Any] = (
        costmeter.instrument() if style == "instrument" else nullcontext()
    )
    with capture_logs() as logs, scope:
        metered = workload(Wiring(style, server.base_url))
    bodies = [r.json or {} for r in server.requests]

    assert bare_bodies == bodies, "costmeter changed what the framework sent"
    assert bare == metered, "costmeter changed what the framework returned"
    assert [] == server.errors
    assert 0 == server.pending_faults, "a queued replay was not used"
    events = calls(logs)
    assert len(events) == server.calls, "not one costmeter.call event per API call"
    return Run(metered, events, bodies, [r.path for r in server.requests])


def _check_events(
    run: Run, api: str, model: str, usages: list[tuple[int, int]], *, replayed: int = 0
) -> None:
    """
    Each event: ok, reported usage, the framework's own usage, and the input the fake bills
    for the request it received (except the first *replayed* calls, answered by a replay).
    """
    assert len(usages) == len(run.events)
    for i, (event, body, (framework_in, framework_out)) in enumerate(
        zip(run.events, run.bodies, usages, strict=True)
    ):
        assert (api, model, "ok", "reported") == (
            event["api"],
            event["model"],
            event["outcome"],
            event["usage_source"],
        )
        if i >= replayed:
            assert fake_input_tokens(body, api) == event["input_tokens"]
        assert (framework_in, framework_out) == (event["input_tokens"], event["output_tokens"])
        assert event["cost_usd"] > 0


# ------------------------------------------------------------------------------ openai-agents


def _agents_workload(model_class: str, model: str, *, run_async: bool) -> Any:
    agents = _need("agents")
    agents.set_tracing_disabled(True)  # tracing would export to the network

    def workload(wiring: Wiring) -> Summary:
        agent = agents.Agent(
            name="primes",
            instructions="Answer briefly.",
            model=getattr(agents, model_class)(model=model, openai_client=wiring.async_client()),
        )
        if run_async:
            result = asyncio.run(agents.Runner.run(agent, PROMPT))
        else:
            result = agents.Runner.run_sync(agent, PROMPT)
        usage = result.context_wrapper.usage
        return {
            "output": result.final_output,
            "usage": (usage.requests, usage.input_tokens, usage.output_tokens),
            "per_call": [
                (r.usage.input_tokens, r.usage.output_tokens) for r in result.raw_responses
            ],
        }

    return workload


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("model_class", "model", "run_async", "api"),
    [
        ("OpenAIResponsesModel", "gpt-5-mini", False, "responses"),
        ("OpenAIChatCompletionsModel", "gpt-4o-mini", True, "chat.completions"),
    ],
    ids=["responses-run_sync", "chat-awaited"],
)
def test_openai_agents(
    server: FakeOpenAI, style: str, model_class: str, model: str, run_async: bool, api: str
) -> None:
    """
    An Agents SDK run, over the Responses API with run_sync and over Chat Completions awaited
    in a running loop (the async client path): one event, the run's own usage.
    """
    workload = _agents_workload(model_class, model, run_async=run_async)

    run = _bare_then_metered(server, style, workload)

    assert run.summary["output"]
    assert ["/v1/" + api.replace(".", "/")] == run.paths
    _check_events(run, api, model, run.summary["per_call"])


# -------------------------------------------------------------------------------- pydantic-ai


def _pydantic_provider(wiring: Wiring) -> Any:
    """Given a costmeter client under ``client``; else built from ``base_url``, the usual way."""
    from pydantic_ai.providers.openai import OpenAIProvider

    if wiring.injected:
        return OpenAIProvider(openai_client=wiring.async_client())
    return OpenAIProvider(base_url=wiring.base_url, api_key=API_KEY)


def _pydantic_usage(result: Any) -> Any:
    usage = result.usage  # a property in current pydantic-ai, a method before
    return usage if hasattr(usage, "input_tokens") else usage()


@pytest.mark.parametrize("style", STYLES)
def test_pydantic_ai(server: FakeOpenAI, style: str) -> None:
    """
    A pydantic-ai agent on Chat Completions: one event, the run's own usage.

    Under ``instrument`` the provider builds its own client from ``base_url`` (the usual setup);
    under ``client`` it is given a `costmeter.AsyncOpenAI`.
    """
    pydantic_ai = _need("pydantic_ai")
    from pydantic_ai.messages import ModelResponse
    from pydantic_ai.models.openai import OpenAIChatModel

    def workload(wiring: Wiring) -> Summary:
        chat_model = OpenAIChatModel("gpt-4o-mini", provider=_pydantic_provider(wiring))
        result = pydantic_ai.Agent(chat_model).run_sync(PROMPT)
        usage = _pydantic_usage(result)
        responses = [m for m in result.all_messages() if isinstance(m, ModelResponse)]
        return {
            "output": result.output,
            "usage": (usage.requests, usage.input_tokens, usage.output_tokens),
            "per_call": [(r.usage.input_tokens, r.usage.output_tokens) for r in responses],
        }

    run = _bare_then_metered(server, style, workload)

    assert run.summary["output"]
    _check_events(run, "chat.completions", "gpt-4o-mini", run.summary["per_call"])


# --------------------------------------------------------------------------- langchain-openai


@pytest.mark.parametrize("style", STYLES)
def test_langchain_openai(server: FakeOpenAI, style: str) -> None:
    """
    ChatOpenAI: a bound tool's call (replayed reply), invoke, a streamed call and an async
    invoke: one event each, LangChain's own usage, the same parsed tool call either way.

    Under ``client`` ChatOpenAI is given costmeter clients through its ``client``/``root_client``
    and ``async_client``/``root_async_client`` fields (it calls both levels); under
    ``instrument`` it builds its own openai clients from ``base_url``.
    """
    langchain_openai = _need("langchain_openai")

    def workload(wiring: Wiring) -> Summary:
        # A fresh async transport per run: langchain's default one is cached per process and
        # would carry connections from the bare run's (closed) event loop into the metered run.
        clients: dict[str, Any] = {"http_async_client": openai.DefaultAsyncHttpxClient()}
        if wiring.injected:
            root, aroot = wiring.sync_client(), wiring.async_client()
            clients = {
                "root_client": root,
                "client": root.chat.completions,
                "root_async_client": aroot,
                "async_client": aroot.chat.completions,
            }
        chat = langchain_openai.ChatOpenAI(
            model="gpt-4o-mini", base_url=wiring.base_url, api_key=API_KEY, max_retries=0, **clients
        )
        server.replay_next(_tool_call_reply("gpt-4o-mini", "add", ADD_ARGUMENTS), stream=False)
        tool_message = chat.bind_tools([ADD_TOOL]).invoke("What is 2 + 3?")
        message = chat.invoke(PROMPT)
        chunks = list(chat.stream(PROMPT, stream_usage=True))
        amessage = asyncio.run(chat.ainvoke(PROMPT))
        [streamed] = [c.usage_metadata for c in chunks if c.usage_metadata]
        replies = (tool_message.usage_metadata, message.usage_metadata, streamed)
        per_call = [
            (u["input_tokens"], u["output_tokens"])
            for u in (*replies, amessage.usage_metadata)
            if u is not None
        ]
        return {
            "tool_calls": tool_message.tool_calls,
            "output": (message.content, "".join(str(c.content) for c in chunks), amessage.content),
            "per_call": per_call,
        }

    run = _bare_then_metered(server, style, workload)

    assert all(run.summary["output"])
    [tool_call] = run.summary["tool_calls"]
    assert ("add", {"a": 2, "b": 3}) == (tool_call["name"], tool_call["args"])
    _check_events(run, "chat.completions", "gpt-4o-mini", run.summary["per_call"], replayed=1)
    assert [False, False, True, False] == [e["stream"] for e in run.events]


# ------------------------------------------------------------------------------------------ llm


def test_llm(server: FakeOpenAI, tmp_path: Path, monkeypatch: Any) -> None:
    """
    Simon Willison's llm, its OpenAI chat model, under instrument() only.

    llm builds its openai client inside each prompt call and offers no way to hand it one, so a
    costmeter client cannot be injected: `costmeter.instrument()` is the only integration.
    """
    _need("llm")
    from llm.default_plugins.openai_models import Chat

    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))  # llm keeps nothing outside the test

    def workload(wiring: Wiring) -> Summary:
        response = Chat("gpt-4o-mini", api_base=wiring.base_url).prompt(
            PROMPT, key=API_KEY, stream=False
        )
        text = response.text()
        usage = response.usage()
        return {"output": text, "per_call": [(usage.input, usage.output)]}

    run = _bare_then_metered(server, "instrument", workload)

    assert run.summary["output"]
    _check_events(run, "chat.completions", "gpt-4o-mini", run.summary["per_call"])


# ------------------------------------------------------------------------------- a tool loop


def _tool_call_reply(model: str, name: str, arguments: str) -> dict[str, Any]:
    """A Chat Completions reply calling one function tool, shaped like the API's."""
    return {
        "id": "chatcmpl-toolcall",
        "object": "chat.completion",
        "created": 1764763200,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": f"call_{name}_1",
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": TOOL_CALL_USAGE[0],
            "completion_tokens": TOOL_CALL_USAGE[1],
            "total_tokens": sum(TOOL_CALL_USAGE),
        },
    }


@pytest.mark.parametrize("style", STYLES)
def test_openai_agents_tool_loop(server: FakeOpenAI, style: str) -> None:
    """
    An agent whose model calls a function tool, then answers: two API calls, two events.

    The first reply (the tool call) is replayed, since the fake answers in text only; the
    agent really executes the tool and sends its result back, and the second reply is the
    fake's own. Both runs must call the tool with the same arguments and send the same bodies.
    """
    agents = _need("agents")
    agents.set_tracing_disabled(True)
    model = "gpt-4o-mini"

    def workload(wiring: Wiring) -> Summary:
        seen: list[tuple[int, int]] = []

        @agents.function_tool
        def add(a: int, b: int) -> int:
            """Add two integers."""
            seen.append((a, b))
            return a + b

        agent = agents.Agent(
            name="adder",
            instructions="Use the tool.",
            tools=[add],
            model=agents.OpenAIChatCompletionsModel(
                model=model, openai_client=wiring.async_client()
            ),
        )
        server.replay_next(_tool_call_reply(model, "add", ADD_ARGUMENTS), stream=False)
        result = agents.Runner.run_sync(agent, "What is 2 + 3?")
        usage = result.context_wrapper.usage
        return {
            "output": result.final_output,
            "tool_calls": seen,
            "usage": (usage.requests, usage.input_tokens, usage.output_tokens),
            "per_call": [
                (r.usage.input_tokens, r.usage.output_tokens) for r in result.raw_responses
            ],
        }

    run = _bare_then_metered(server, style, workload)

    assert [(2, 3)] == run.summary["tool_calls"]
    assert run.summary["output"]
    tool_result = {"role": "tool", "tool_call_id": "call_add_1", "content": "5"}
    assert tool_result in run.bodies[1]["messages"]
    assert TOOL_CALL_USAGE == run.summary["per_call"][0]
    _check_events(run, "chat.completions", model, run.summary["per_call"], replayed=1)


@pytest.mark.parametrize("style", STYLES)
def test_pydantic_ai_structured_output(server: FakeOpenAI, style: str) -> None:
    """
    pydantic-ai structured output through its output tool: the validated object is the same
    with and without costmeter, and the one call is metered at the reply's usage.

    The reply calling pydantic-ai's ``final_result`` tool is replayed (the fake answers in
    text only); pydantic-ai parses and validates it into the output type.
    """
    pydantic_ai = _need("pydantic_ai")
    from pydantic import BaseModel
    from pydantic_ai.models.openai import OpenAIChatModel

    class Primes(BaseModel):
        primes: list[int]

    model = "gpt-4o-mini"

    def workload(wiring: Wiring) -> Summary:
        chat_model = OpenAIChatModel(model, provider=_pydantic_provider(wiring))
        agent = pydantic_ai.Agent(chat_model, output_type=Primes)
        server.replay_next(
            _tool_call_reply(model, "final_result", '{"primes": [2, 3, 5]}'), stream=False
        )
        result = agent.run_sync(PROMPT)
        usage = _pydantic_usage(result)
        return {"output": result.output, "per_call": [(usage.input_tokens, usage.output_tokens)]}

    run = _bare_then_metered(server, style, workload)

    assert Primes(primes=[2, 3, 5]) == run.summary["output"]
    assert [TOOL_CALL_USAGE] == run.summary["per_call"]
    assert "final_result" in str(run.bodies[0]["tools"])
    _check_events(run, "chat.completions", model, run.summary["per_call"], replayed=1)
