"""
Per-user budgets with alerts: every user gets their own daily cap, and you hear about it.

    python examples/budget_alerts.py

Offline against a local fake server unless OPENAI_API_KEY is set (then a few real gpt-5-nano
calls, well under $0.01 in total). The ledger is a SQLite file in a temporary directory,
removed at the end; the "alert channel" is a local function (post it to Slack, a pager, a
queue... in your code).
"""

import contextlib
import os
import tempfile
import threading
from pathlib import Path

import costmeter
from costmeter.testing import FakeOpenAI

MODEL = "gpt-5-nano"
received: list[costmeter.BudgetAlert] = []
all_in = threading.Event()


def post_alert(alert: costmeter.BudgetAlert) -> None:
    """Runs on costmeter's alert thread, never on the request's path."""
    received.append(alert)
    if len(received) == 3:
        all_in.set()


with contextlib.ExitStack() as stack:
    if os.environ.get("OPENAI_API_KEY"):
        client = costmeter.OpenAI()
    else:  # offline: a local fake OpenAI server, no key, no network
        server = stack.enter_context(FakeOpenAI())
        client = costmeter.OpenAI(base_url=server.base_url, api_key="offline-no-key-needed")
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))

    # One cap per value of the `user` tag, per day, shared by every process on this host.
    per_user = costmeter.budget(
        "0.0003",
        name="per-user",
        per="tag:user",
        window="day",
        ledger=f"sqlite:///{workdir / 'budgets.db'}",
        warn_at=0.5,
        on_threshold=post_alert,
        on_exceeded=post_alert,
    )
    with per_user:
        for user in ("alice", "alice", "bob"):
            with costmeter.tags(user=user):
                client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=200)
        with costmeter.tags(user="alice"):
            try:  # alice's worst case no longer fits in what is left of her cap
                client.responses.create(model=MODEL, input="Write a poem.", max_output_tokens=4000)
            except costmeter.BudgetExceededError as exc:
                print(f"refused for {exc.budget_key}: worst case ${exc.estimated_cost_usd}")
        try:  # no user tag: refused too, so no caller escapes the per-user caps
            client.responses.create(model=MODEL, input="Hi.", max_output_tokens=50)
        except costmeter.BudgetKeyMissingError as exc:
            print(f"refused: {exc}")

    all_in.wait(10)
    for alert in received:
        who = f"{alert.budget} [{alert.budget_key or 'untagged call'}]"
        if alert.kind == "threshold":
            print(f"alert: {who} crossed {alert.fraction:.0%} (spent ${alert.spent_usd})")
        else:
            print(f"alert: {who} refused a ${alert.estimated_cost_usd} call")
    print(
        f"alice spent ${per_user.for_key('alice').spent_usd}, "
        f"bob ${per_user.for_key('bob').spent_usd}; {len(received)} alerts"
    )
