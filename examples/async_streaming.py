"""
Async and streaming: concurrent streamed calls sharing one budget.

    python examples/async_streaming.py

Offline against a local fake server unless OPENAI_API_KEY is set (then three short real
gpt-5-nano streams). A stream is metered from its final event; budgets and tags follow asyncio
tasks because they live in contextvars.
"""

import asyncio
import contextlib
import os

import costmeter
from costmeter.testing import FakeOpenAI


async def ask(client: costmeter.AsyncOpenAI, question: str) -> str:
    stream = await client.responses.create(
        model="gpt-5-nano",
        input=question,
        reasoning={"effort": "minimal"},
        max_output_tokens=200,
        stream=True,
    )
    parts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
    return "".join(parts)


async def main() -> None:
    with contextlib.ExitStack() as stack:
        if os.environ.get("OPENAI_API_KEY"):
            client = costmeter.AsyncOpenAI()
        else:  # offline: a local fake OpenAI server, no key, no network
            server = stack.enter_context(FakeOpenAI())
            client = costmeter.AsyncOpenAI(
                base_url=server.base_url, api_key="offline-no-key-needed"
            )
        async with client, costmeter.budget("0.01", name="batch") as batch:
            questions = ["Name a river.", "Name a mountain.", "Name a desert."]
            answers = await asyncio.gather(*(ask(client, q) for q in questions))
        for question, answer in zip(questions, answers, strict=True):
            print(f"{question} -> {answer[:40]!r}")
        print(f"3 streams cost ${batch.spent_usd} in total ({batch.calls} calls metered)")


asyncio.run(main())
