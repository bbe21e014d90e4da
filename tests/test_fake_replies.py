"""FakeOpenAI's tool-call and structured-output replies, through the unmodified SDK."""

from __future__ import annotations

import json

import openai
import pydantic

from costmeter.testing import FakeOpenAI

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}


class City(pydantic.BaseModel):
    name: str
    population: int
    coastal: bool


def _client(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key="sk-replies", max_retries=0)


def test_responses_tool_loop(fake: FakeOpenAI) -> None:
    """A function tool offered: the fake calls it with schema-valid arguments; given the
    result, it answers in text."""
    client = _client(fake)
    first = client.responses.create(model="gpt-4.1-mini", input="Weather in Oslo?", tools=[WEATHER])
    [call] = [item for item in first.output if item.type == "function_call"]

    assert ("get_weather", {"city": "fake", "unit": "c"}) == (call.name, json.loads(call.arguments))
    second = client.responses.create(
        model="gpt-4.1-mini",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "12 C"},
        ],
    )  # fmt: skip
    assert second.output_text


def test_chat_tool_call_and_stream(fake: FakeOpenAI) -> None:
    chat_tool = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    client = _client(fake)
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    done = client.chat.completions.create(
        model="gpt-4.1-mini", messages=messages, tools=[chat_tool]
    )
    [call] = done.choices[0].message.tool_calls or []

    assert ("tool_calls", "get_weather") == (done.choices[0].finish_reason, call.function.name)
    with client.chat.completions.stream(
        model="gpt-4.1-mini", messages=messages, tools=[chat_tool]
    ) as stream:
        final = stream.get_final_completion()
    [streamed] = final.choices[0].message.tool_calls or []
    assert {"city": "fake", "unit": "c"} == json.loads(streamed.function.arguments)


def test_structured_output_parses(fake: FakeOpenAI) -> None:
    """parse() with a pydantic model: the fake answers a valid instance of its schema."""
    client = _client(fake)
    chat = client.chat.completions.parse(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "A city"}], response_format=City
    )
    responses = client.responses.parse(model="gpt-4.1-mini", input="A city", text_format=City)

    assert City(name="fake", population=1, coastal=True) == chat.choices[0].message.parsed
    assert City(name="fake", population=1, coastal=True) == responses.output_parsed
