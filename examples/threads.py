"""
Threads: budgets and tags in a thread pool, and one Budget shared by many threads.

    python examples/threads.py

Offline against a local fake server unless OPENAI_API_KEY is set (then eight short real
gpt-5-nano calls). Budgets and tags live in contextvars: asyncio tasks inherit them, but a
thread pool's worker threads do not, so pass the context along (or enter a shared Budget).
"""

import contextlib
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

import costmeter
from costmeter.testing import FakeOpenAI

with contextlib.ExitStack() as stack:
    if os.environ.get("OPENAI_API_KEY"):
        client = costmeter.OpenAI()
    else:  # offline: a local fake OpenAI server, no key, no network
        server = stack.enter_context(FakeOpenAI())
        client = costmeter.OpenAI(base_url=server.base_url, api_key="offline-no-key-needed")

    def ask(question: str) -> str:
        response = client.responses.create(
            model="gpt-5-nano", input=question, max_output_tokens=200
        )
        return response.id

    questions = [f"Give me a word that rhymes with {w}." for w in ("cat", "tree", "moon", "star")]

    # 1. Run each task in a copy of the caller's context: the active budget and tags go along.
    with costmeter.budget("0.01", name="pool") as pool_budget, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(contextvars.copy_context().run, ask, q) for q in questions]
        ids = [f.result() for f in futures]
    print(f"copy_context: {len(ids)} calls, ${pool_budget.spent_usd} charged to 'pool'")

    # 2. Or share one Budget object: each thread enters it; reservations are atomic across threads.
    shared = costmeter.Budget("0.01", name="shared")

    def ask_within_shared(question: str) -> str:
        with shared:
            return ask(question)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ask_within_shared, questions))
    print(f"shared Budget: {shared.calls} calls, ${shared.spent_usd} of ${shared.limit_usd}")
