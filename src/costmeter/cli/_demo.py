"""
``costmeter demo``: the whole product in one command, with no API key and no network.

It starts `costmeter.testing.FakeOpenAI` on loopback (real HTTP, real SSE, usage with cached and
reasoning tokens), runs a short scripted workload through the metered clients, writes the JSON
lines log, and prints the same report ``costmeter report`` prints for that log, then checks that
the report's total equals what the budget charged (both exact ``Decimal`` sums).

The offline workload: a first call with long instructions; the same instructions again (the
server reports the shared prefix as cached, billed at the cached rate); three concurrent async
calls; a streamed call; a Chat Completions call; and a call that a tight nested budget refuses
*before sending it* (the fake server never receives it). Every call is tagged ``demo`` and
``step``, so ``costmeter report LOG --by tag:step`` splits the cost by step.

The fake server counts tokens as ``characters / 4`` (see `costmeter.testing`), not with a real
tokenizer, so the estimate-error columns of the offline report measure the fake, not costmeter.

``--live`` runs a tiny real workload instead (``gpt-5-nano``, capped by a $0.01 budget), using
``OPENAI_API_KEY`` and the SDK's usual environment. It is kept apart from the offline path: the
offline demo passes ``api_key`` and ``base_url`` explicitly, never reads or changes the user's
environment variables, and keeps its fake calls out of a ``COSTMETER_LOG_FILE`` log.

This module is registered by ``costmeter.cli`` and imports only the standard library and
costmeter's CLI at module level; the clients and the fake server load when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from costmeter import _report
from costmeter.cli import _common as cli
from costmeter.cli._report import report_notes

if TYPE_CHECKING:
    import httpx2
    import openai

    from costmeter._budget import Budget
    from costmeter.testing import FakeOpenAI

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["DEFAULT_LOG", "LIVE_MODEL", "register"]

DEFAULT_LOG = "costmeter-demo.jsonl"
"""Where the log goes by default: the current directory, so ``costmeter report`` and ``jq`` can
read it afterwards. Overwritten on each run (only if it is an earlier demo log)."""

LIVE_MODEL = "gpt-5-nano"
"""The cheapest current OpenAI text model, used by ``--live``."""

LIVE_BUDGET_USD = "0.01"
EXIT_DEMO_FAILED = 1

# Long shared instructions: the fake server (like the API) reports a shared prompt prefix of at
# least 1,024 tokens as cached on the second call.
_HANDBOOK = "You are the support assistant of a small online bookshop. House rules:\n" + "\n".join(
    f"{n}. {rule}"
    for n, rule in enumerate(
        [
            "Answer in at most three sentences, in the customer's language.",
            "Quote order numbers exactly as the customer wrote them.",
            "Never promise a delivery date; give the usual range for the region instead.",
            "Offer a refund only for damaged or missing items, and say it takes 5 working days.",
            "Point customers to the returns page for anything else about returns.",
            "Do not discuss prices of other shops, and do not guess stock levels.",
            "If an order is more than 30 days late, escalate it to a human colleague.",
            "Be warm and brief; do not apologise more than once per answer.",
        ]
        * 12,
        start=1,
    )
)


def register(subparsers: Subparsers) -> None:
    """Add ``costmeter demo`` to the ``costmeter`` command (called by `costmeter.cli`)."""
    parser = cli.add_command(
        subparsers,
        "demo",
        "run a metered workload against a local fake OpenAI server (no key, no network)",
        "Start a fake OpenAI-compatible server on loopback (real HTTP and SSE, usage with "
        "cached and reasoning tokens), run a short workload through costmeter's clients "
        "(sync, cached prefix, async, streaming, Chat, and a call a budget refuses before "
        "sending), write the JSON-lines log and print its report. No API key, no network; "
        "your environment variables are neither read for the API nor changed.",
        "examples:\n"
        "  costmeter demo\n"
        "  costmeter demo --log /tmp/demo.jsonl\n"
        "  costmeter report costmeter-demo.jsonl --by tag:step\n"
        "  OPENAI_API_KEY=sk-... costmeter demo --live     real calls, capped at "
        f"${LIVE_BUDGET_USD}\n\n"
        f"The log (default ./{DEFAULT_LOG}) is replaced on each run; a file that is not an\n"
        "earlier demo log is never overwritten.\n"
        "exit codes: 0 ok, 1 the demo did not complete (an API error with --live, or the\n"
        "report disagreed with the budget), 2 usage error (e.g. --live without\n"
        "OPENAI_API_KEY, --log names a file that is not a demo log), 3 the log cannot be "
        "written.",
    )
    parser.add_argument(
        "--log",
        default=DEFAULT_LOG,
        metavar="PATH",
        help=f"where to write the JSON-lines log (default: ./{DEFAULT_LOG}, replaced each run)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help=f"real API calls with OPENAI_API_KEY ({LIVE_MODEL}, capped at ${LIVE_BUDGET_USD})",
    )
    parser.set_defaults(handler=_cmd_demo)


# -- the command ---------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.live and not os.environ.get("OPENAI_API_KEY", "").strip():
        cli.say(
            "error: --live needs OPENAI_API_KEY set (it makes real, billed calls); "
            "run `costmeter demo` without --live for the offline demo"
        )
        return cli.EXIT_USAGE
    path: str = args.log
    if not _start_log(path):
        return cli.EXIT_UNREADABLE

    import costmeter  # noqa: PLC0415 - the clients load only when the demo runs

    if not args.live:
        # Fake calls must not land in the user's real cost log.
        from costmeter._sinks import configure_from_env  # noqa: PLC0415

        env_sink = configure_from_env()
        if env_sink is not None:
            env_sink.close()
    try:
        sink = costmeter.log_to(path)
    except OSError as exc:
        cli.say(f"error: cannot write {path}: {exc.strerror or exc}")
        return cli.EXIT_UNREADABLE
    run = _Run()
    run.sink, run.log_path = sink, path
    try:
        with run.capturing():
            ok = _live(run) if args.live else _offline(run)
    finally:
        sink.close()
    if not ok:
        return EXIT_DEMO_FAILED
    return _finish(run, path)


def _start_log(path: str) -> bool:
    """
    Empty the log so the report shows this run only; never clobber a non-demo file.

    Returns ``False`` (after saying why) when the file cannot be written.
    """
    if os.path.isdir(path):
        raise _report.UsageError(f"--log {path} is a directory")
    if os.path.exists(path) and not _is_demo_log(path):
        raise _report.UsageError(
            f"{path} exists and is not a costmeter demo log; not overwriting it "
            "(remove it or choose another --log)"
        )
    try:
        with open(path, "w", encoding="utf-8"):
            pass
    except OSError as exc:
        cli.say(f"error: cannot write {path}: {exc.strerror or exc}")
        return False
    return True


def _is_demo_log(path: str) -> bool:
    """True for an empty file or one holding only costmeter events from earlier demo runs."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                event = json.loads(line)
                if not isinstance(event, dict):
                    return False
                name = event.get("event")
                if not isinstance(name, str) or not name.startswith("costmeter."):
                    return False
                tags = event.get("tags")
                if name == "costmeter.call" and not (isinstance(tags, dict) and "demo" in tags):
                    return False
    except (OSError, ValueError):
        return False
    return True


# -- what the run saw ----------------------------------------------------------------------------


class _Run:
    """Collects costmeter's events (via structlog, for this process only) and prints them."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.budget: Budget | None = None
        self.sink: Any = None  # the demo's log sink (closed before reconciling)
        self.log_path = ""
        self.reconciled: tuple[str, bool] | None = (
            None  # the reconcile table, and whether it matched
        )
        self._printed = 0

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """
        Route structlog events into this run instead of the console, then restore structlog.

        The demo is an application of its own, so configuring structlog here is its call to
        make (the library itself never does).
        """
        import structlog  # noqa: PLC0415

        saved = structlog.get_config()

        def collect(logger: Any, method: str, event_dict: Any) -> Any:
            name = event_dict.get("event")
            if name == "costmeter.call":
                self.calls.append(dict(event_dict))
            elif name == "costmeter.budget.exceeded":
                self.refusals.append(dict(event_dict))
            elif name in ("costmeter.internal_error", "costmeter.warning"):
                self.problems.append(dict(event_dict))
            raise structlog.DropEvent

        structlog.configure(processors=[collect], cache_logger_on_first_use=False)
        try:
            yield
        finally:
            structlog.configure(**saved)

    def header(self) -> None:
        print(
            f"  {'step':<10} {'api':<17} {'model':<12} {'input':>6} {'cached':>6} "
            f"{'output':>6} {'reasoning':>9}  cost $"
        )

    def show_new_calls(self) -> None:
        """One line per call logged since the last time."""
        for event in self.calls[self._printed :]:
            tags = event.get("tags") or {}
            cost = event.get("cost_usd")
            cost_text = "unpriced" if cost is None else format(Decimal(repr(cost)), "f")
            print(
                f"  {tags.get('step', '?'):<10} {event.get('api')!s:<17} "
                f"{event.get('model')!s:<12} {event.get('input_tokens', 0):>6,} "
                f"{event.get('cached_input_tokens', 0):>6,} {event.get('output_tokens', 0):>6,} "
                f"{event.get('reasoning_tokens', 0):>9,}  {cost_text}"
            )
        self._printed = len(self.calls)


# -- offline workload ----------------------------------------------------------------------------


def _check_loopback(url: str) -> None:
    """
    Connect once to the fake server, so a machine without a working loopback interface (a
    sandbox, a network namespace whose ``lo`` is down) gets one clear line, not a traceback from
    the first call. Raises the `OSError` of the failed connection.
    """
    host, _, port = url.rpartition("//")[2].rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
        pass


def _offline(run: _Run) -> bool:
    import costmeter  # noqa: PLC0415
    from costmeter.testing import FakeOpenAI  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(FakeOpenAI())
            _check_loopback(server.url)
        except OSError as exc:
            cli.say(
                "error: the offline demo needs the loopback network (127.0.0.1) for its local "
                f"fake server, and it is not available here: {exc.strerror or exc}"
            )
            return False
        print(
            f"costmeter demo: a fake OpenAI server on {server.base_url} "
            "(loopback only; no API key, no network)\n"
        )
        client = costmeter.OpenAI(
            api_key="demo-not-a-real-key",
            base_url=server.base_url,
            max_retries=0,
            http_client=_http_client(),
        )
        with client, costmeter.tags(demo="offline"):
            run.budget = costmeter.budget("0.05", name="demo")
            with run.budget:
                run.header()
                _offline_steps(run, client, server)
        if run.sink is not None:  # the bill is the fake server's: reconcile while it still runs
            from costmeter._reconcile import reconcile_demo  # noqa: PLC0415

            run.sink.close()
            run.reconciled = reconcile_demo(server, run.log_path)
        leftover = server.errors
    if leftover:  # a bug in the fake; say so rather than print a misleading report
        cli.say(f"the fake server failed: {leftover[0]!r}")
        return False
    return True


def _http_client() -> httpx2.Client:
    import openai  # noqa: PLC0415

    # trust_env=False: an HTTP(S)_PROXY in the environment must not capture loopback traffic.
    return openai.DefaultHttpx2Client(trust_env=False)


def _offline_steps(run: _Run, client: openai.OpenAI, server: FakeOpenAI) -> None:
    import costmeter  # noqa: PLC0415

    question = "Where is my order #4411? It was due last Tuesday."
    with costmeter.tags(step="first"):
        client.responses.create(
            model="gpt-5-mini",
            instructions=_HANDBOOK,
            input=question,
            reasoning={"effort": "low"},
            max_output_tokens=512,
        )
    with costmeter.tags(step="cached"):  # same long instructions: the prefix is cached
        client.responses.create(
            model="gpt-5-mini",
            instructions=_HANDBOOK,
            input="Can I return a book I bought as a gift?",
            reasoning={"effort": "low"},
            max_output_tokens=512,
        )
    run.show_new_calls()

    with costmeter.tags(step="async"):
        import asyncio  # noqa: PLC0415 - only here: `costmeter report` starts ~20 ms sooner

        asyncio.run(_offline_async(server))
    run.show_new_calls()

    with costmeter.tags(step="stream"):
        stream = client.responses.create(
            model="gpt-5-nano",
            input="Write a one-line tagline for the shop.",
            reasoning={"effort": "minimal"},
            max_output_tokens=256,
            stream=True,
            extra_headers={"x-fake-output-tokens": "9"},  # a fake-server knob: 9 words
        )
        text = "".join(
            event.delta for event in stream if event.type == "response.output_text.delta"
        )
    run.show_new_calls()
    print(f"  {'':<10} streamed text: {text!r}")

    with costmeter.tags(step="chat"):
        client.chat.completions.create(
            model="gpt-4.1-nano",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name three classic novels."},
            ],
            max_completion_tokens=100,
        )
    run.show_new_calls()

    _refusal(client, "gpt-5", server)


async def _offline_async(server: FakeOpenAI) -> None:
    import openai  # noqa: PLC0415

    import costmeter  # noqa: PLC0415

    async with costmeter.AsyncOpenAI(
        api_key="demo-not-a-real-key",
        base_url=server.base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpx2Client(trust_env=False),
    ) as client:
        jobs: tuple[tuple[str, Literal["minimal", "low", "medium"]], ...] = (
            ("crime", "minimal"),
            ("poetry", "low"),
            ("sci-fi", "medium"),
        )
        import asyncio  # noqa: PLC0415

        await asyncio.gather(
            *(
                client.responses.create(
                    model="gpt-5-nano",
                    input=f"Suggest a title for a {genre} book club evening.",
                    reasoning={"effort": effort},
                    max_output_tokens=300,
                )
                for genre, effort in jobs
            )
        )


def _refusal(client: openai.OpenAI, model: str, server: FakeOpenAI | None = None) -> None:
    """A call a tight nested budget cannot cover: refused before it is sent."""
    import costmeter  # noqa: PLC0415

    sent_before = server.calls if server is not None else 0
    tight = costmeter.budget("0.001", name="tight")
    try:
        with tight, costmeter.tags(step="refused"):
            # No max_output_tokens: the worst case assumes DEFAULT_MAX_OUTPUT_TOKENS of output
            # (at standard rates: without service_tier it would be priced at priority's).
            client.responses.create(
                model=model,
                input="Write a long essay on the history of ink.",
                service_tier="default",
            )
    except costmeter.BudgetExceededError as exc:
        print(
            f"  {'refused':<10} budget {exc.budget_name!r} (limit ${exc.limit_usd}) refused a "
            f"{exc.model} call: worst case ${exc.estimated_cost_usd:.6f} "
            f"({costmeter.DEFAULT_MAX_OUTPUT_TOKENS:,} output tokens assumed)"
        )
        if server is not None:
            print(
                f"  {'':<10} requests the server received for it: {server.calls - sent_before} "
                "(the request was never sent)"
            )
    else:
        print(f"  {'refused':<10} unexpectedly not refused")


# -- live workload (real API, real money, capped) ------------------------------------------------


def _live(run: _Run) -> bool:
    """
    Real, billed calls: the client is configured from the environment like ``openai.OpenAI()``.

    (Tests run this path against `FakeOpenAI` by pointing ``OPENAI_BASE_URL`` at it.)
    """
    import openai  # noqa: PLC0415

    import costmeter  # noqa: PLC0415

    print(
        f"costmeter demo --live: real calls to the OpenAI API with {LIVE_MODEL}, "
        f"capped by a ${LIVE_BUDGET_USD} budget\n"
    )
    # Reads OPENAI_API_KEY (and OPENAI_BASE_URL etc.) from the environment, like openai.OpenAI.
    try:
        with (
            costmeter.OpenAI(max_retries=1, timeout=60) as client,
            costmeter.tags(demo="live"),
        ):
            run.budget = costmeter.budget(LIVE_BUDGET_USD, name="live-demo")
            with run.budget:
                run.header()
                with costmeter.tags(step="first"):
                    client.responses.create(
                        model=LIVE_MODEL,
                        input="Say hello in five words.",
                        reasoning={"effort": "minimal"},
                        max_output_tokens=64,
                    )
                with costmeter.tags(step="stream"):
                    stream = client.responses.create(
                        model=LIVE_MODEL,
                        input="Name one colour.",
                        reasoning={"effort": "minimal"},
                        max_output_tokens=64,
                        stream=True,
                    )
                    for _event in stream:
                        pass
                run.show_new_calls()
                _refusal(client, LIVE_MODEL)
    except openai.APIError as exc:
        cli.say(f"error: the API call failed: {exc}")
        run.show_new_calls()
        return False
    return True


# -- after the workload --------------------------------------------------------------------------


def _finish(run: _Run, path: str) -> int:
    """Print the report for the log, exactly as ``costmeter report`` would, and check it."""
    for problem in run.problems:
        cli.say(f"{problem.get('event')}: {_brief(problem)}")
    print(
        f"\nlog: {path} ({len(run.calls)} calls, "
        f"{sum(1 for r in run.refusals if r.get('refused'))} refused before sending)"
    )
    print(f"\n$ costmeter report {path}")
    report = _report.build_report([path], "model", None, None)
    _report.write_table(report, sys.stdout)
    sys.stdout.flush()
    report_notes(report)

    spent = run.budget.spent_usd if run.budget is not None else Decimal(0)
    logged = sum((Decimal(repr(e["cost_usd"])) for e in run.calls if e.get("cost_usd")), Decimal(0))
    total = report.total.cost_usd
    if not (total == spent == logged):
        cli.say(
            f"self-check failed: report total ${total}, budget charged ${spent}, "
            f"events sum ${logged}"
        )
        return EXIT_DEMO_FAILED
    print(
        f"\ncheck: the report's total ${format(total, 'f')} equals what the budget "
        f"{run.budget.name if run.budget else ''!r} charged (exact Decimal sums)."
    )
    if run.reconciled is not None:
        table, matched = run.reconciled
        print(f"\n$ costmeter reconcile {path} --since today (against the fake server's bill)")
        print(table, end="")
        if not matched:
            cli.say("self-check failed: the log does not reconcile with the fake server's bill")
            return EXIT_DEMO_FAILED
    if not any((e.get("tags") or {}).get("demo") == "live" for e in run.calls):
        print(
            "note: the fake server counts tokens as characters/4, so the est.err columns "
            "measure the fake, not costmeter (see the README for accuracy on real traffic)."
        )
    print(
        "next:\n"
        f"  costmeter report {path} --by tag:step\n"
        f'  jq -c \'select(.event=="costmeter.call") | '
        f"{{model, input_tokens, cached_input_tokens, cost_usd}}' {path}"
    )
    return cli.EXIT_OK


def _brief(event: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in event.items() if k != "event")
