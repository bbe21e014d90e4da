"""
Budgets: reserve the worst case before sending, refuse what a budget cannot cover.

    python examples/budget.py

Offline against a local fake server unless OPENAI_API_KEY is set (then a few real gpt-5-nano
calls, well under $0.01 in total).
"""

import contextlib
import logging
import os

import costmeter
from costmeter.testing import FakeOpenAI

MODEL = "gpt-5-nano"

# costmeter logs to the standard-library logger "costmeter", silent until the application
# configures logging. Show warnings (budget events) on stderr, each as one JSON object.
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")

with contextlib.ExitStack() as stack:
    if os.environ.get("OPENAI_API_KEY"):
        client = costmeter.OpenAI()
    else:  # offline: a local fake OpenAI server, no key, no network
        server = stack.enter_context(FakeOpenAI())
        client = costmeter.OpenAI(base_url=server.base_url, api_key="offline-no-key-needed")

    with costmeter.budget("0.01", name="eval") as eval_budget:
        for topic in ("tea", "coffee", "cocoa"):
            client.responses.create(
                model=MODEL, input=f"One fact about {topic}.", max_output_tokens=300
            )
        print(
            f"spent ${eval_budget.spent_usd} of ${eval_budget.limit_usd} in {eval_budget.calls} calls"
        )

        # A nested, tighter budget: a call must fit in *every* active budget. Without
        # max_output_tokens the worst case assumes DEFAULT_MAX_OUTPUT_TOKENS (4096) of output.
        try:
            with costmeter.budget("0.001", name="per-request"):
                client.responses.create(model=MODEL, input="Write a very long story.")
        except costmeter.BudgetExceededError as exc:
            print(
                f"refused before sending: worst case ${exc.estimated_cost_usd} > ${exc.limit_usd}"
            )

        # Setting max_output_tokens shrinks the worst case, so the same call fits.
        with costmeter.budget("0.001", name="per-request"):
            client.responses.create(
                model=MODEL, input="Write a very long story.", max_output_tokens=500
            )
        print(
            f"with max_output_tokens=500 it fits; eval budget has ${eval_budget.remaining_usd} left"
        )

    # on_exceed="warn" logs costmeter.budget.exceeded and lets the call through instead.
    with costmeter.budget("0", name="observe-only", on_exceed="warn") as observe:
        client.responses.create(model=MODEL, input="Hi!", max_output_tokens=50)
    print(f"warn-only budget let it through: spent ${observe.spent_usd} over a $0 limit")
