"""
Quick start: the one-line drop-in, and what a call cost.

    python examples/quickstart.py

Without OPENAI_API_KEY this runs offline against a local fake OpenAI server
(costmeter.testing.FakeOpenAI: real HTTP on 127.0.0.1, no key, no network). With OPENAI_API_KEY
set it makes one real call to gpt-5-nano (a small fraction of a cent).
"""

import contextlib
import os

import costmeter  # was: import openai
from costmeter.testing import FakeOpenAI

with contextlib.ExitStack() as stack:
    if os.environ.get("OPENAI_API_KEY"):
        client = costmeter.OpenAI()  # was: openai.OpenAI() -- same arguments, same results
    else:  # offline: point the client at the fake server instead of api.openai.com
        server = stack.enter_context(FakeOpenAI())
        client = costmeter.OpenAI(base_url=server.base_url, api_key="offline-no-key-needed")

    # An ordinary SDK call. costmeter estimates it, sends it, reads the usage the API returns
    # and logs one `costmeter.call` event: to the stdlib logger "costmeter" (silent unless the
    # app configures logging), or your structlog setup; `costmeter.log_to(path)` writes JSON lines.
    response = client.responses.create(
        model="gpt-5-nano",
        input="In one sentence: why do budgets matter for LLM apps?",
        reasoning={"effort": "minimal"},
        max_output_tokens=200,
    )
    print("answer:", response.output_text)

    # The same exact pricing, on demand, for any usage object.
    cost = costmeter.cost_of(response.model, response.usage)
    print(f"tokens: {response.usage.input_tokens} in, {response.usage.output_tokens} out")
    print(f"cost: ${cost.total_usd} (prices: {cost.price_source})")

    # Before sending: what would a request cost at worst?
    worst = costmeter.estimate(model="gpt-5-nano", input="Summarise War and Peace.")
    print(
        f"estimate: {worst.input_tokens} input tokens, up to {worst.max_output_tokens} output "
        f"tokens, at most ${worst.cost_usd}"
    )
