"""
Per-call overhead of ``costmeter.OpenAI`` vs the bare ``openai.OpenAI`` client.

Both clients talk real HTTP to the same `costmeter.testing.FakeOpenAI` loopback server, run in a
process of its own (as a real server is: in-process, its threads would compete with the client
for the GIL and inflate whatever the client does after a response arrives). Calls are
interleaved in pairs (bare, metered / metered, bare, alternating which goes first) and every call
sends fresh text, so costmeter's token-count memo never hits across calls. The figure for each
workload is the median over pairs of (metered time / bare time) for two calls made back to back.

Workloads and targets (issue #16):

* ``responses.create`` with ~100, ~2k and ~100k input tokens (target: <= 1.10x at 2k);
* the ~2k and ~100k calls inside a ``costmeter.budget(...)`` entered per call (reserve before
  sending, settle after; a budget with room to spare admits on the input's UTF-8 bound and
  tokenizes nothing): <= 1.20x at 2k, <= 1.6x at 100k;
* a ``responses.create(stream=True)`` stream of 500 text deltas, read to the end (<= 1.02x);
* a 20-turn Chat conversation, each turn resending the whole history (<= 1.05x per turn).

The ~2k row is repeated once more with the server holding each response 5 ms, closer to a real
network round trip (for information).

costmeter's events go to structlog configured to drop them cheaply (a filtering bound logger
above CRITICAL, cached on first use), so this measures metering, not printing; ``--log json``
renders every event as JSON into ``/dev/null`` instead. The worst workload (highest ratio) is
then profiled with cProfile over metered calls only: top-15 functions by own time, and the own
time grouped by package.

    .venv/bin/python bench/overhead.py [--quick] [--strict] [--log drop|json]

Exit status is 0 even when a target is missed, unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import logging
import multiprocessing
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import structlog

import costmeter
from costmeter.testing import FakeOpenAI

MODEL = "gpt-5-mini"
CHAT_MODEL = "gpt-4.1-mini"
# Common words that are one o200k token each with their leading space: n words ~ n tokens.
_WORDS = (  # noqa: SIM905  (readable as prose)
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death "
    "experience effect use class control care field development role effort rate heart drug "
    "show leader light voice wife police mind price report decision son view relationship "
    "town road arm difference value building action model season society tax director "
    "position player record paper space ground form event official matter center couple site "
    "project activity star table need court oil situation cost industry figure street image "
    "phone data"
).split()


class Text:
    """Fresh pseudo-English text of about *n* tokens per call (a counter makes every one unique)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def __call__(self, tokens: int) -> str:
        self.serial += 1
        words = self.rng.choices(_WORDS, k=max(1, tokens - 4))
        return f"Request {self.serial}: " + " ".join(words) + "."


@dataclass
class Result:
    """Paired timings of one workload."""

    name: str
    target: float | None
    base: list[float] = field(default_factory=list)
    cand: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(c / b for b, c in zip(self.base, self.cand, strict=True))

    def line(self) -> str:
        base_ms = statistics.median(self.base) * 1000
        cand_ms = statistics.median(self.cand) * 1000
        if self.target is None:
            verdict = "(no target)"
        else:
            ok = self.ratio <= self.target
            verdict = f"target <= {self.target:.2f}x  {'PASS' if ok else 'FAIL'}"
        return (
            f"  {self.name:<30} {len(self.base):4d} pairs  bare {base_ms:8.2f} ms  "
            f"metered {cand_ms:8.2f} ms  (+{cand_ms - base_ms:7.2f} ms)  "
            f"ratio {self.ratio:6.3f}x  {verdict}"
        )


def configure_logging(mode: str) -> str:
    """Point structlog somewhere cheap; return a description for the output."""
    if mode == "drop":
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
            cache_logger_on_first_use=True,
        )
        return "structlog filtering bound logger at CRITICAL (events built, info/warning dropped)"
    sink = open("/dev/null", "w")  # noqa: SIM115  (lives as long as the process)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=True,
    )
    return "structlog JSONRenderer into /dev/null (every event rendered)"


def paired(
    result: Result,
    pairs: int,
    bare: Callable[[], Callable[[], Any]],
    metered: Callable[[], Callable[[], Any]],
) -> Result:
    """
    Run *pairs* back-to-back pairs; ``bare()``/``metered()`` prepare one call (fresh input,
    untimed) and return the thunk that makes it (timed).
    """
    for i in range(pairs):
        order = ((bare, result.base), (metered, result.cand))
        for prepare, sink in order if i % 2 == 0 else order[::-1]:
            thunk = prepare()
            started = time.perf_counter()
            thunk()
            sink.append(time.perf_counter() - started)
    return result


def _serve(conn: Any) -> None:
    """Child process: run FakeOpenAI until the parent closes the pipe."""
    with FakeOpenAI() as server:
        conn.send(server.base_url)
        with contextlib.suppress(EOFError):
            conn.recv()


@contextlib.contextmanager
def server_process(serve: Callable[[Any], None] = _serve) -> Iterator[str]:
    """
    A server in a process of its own (`FakeOpenAI` unless *serve* says otherwise); yields its
    base URL. *serve* gets a pipe end: it sends its URL, then serves until the pipe closes.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=serve, args=(child,), daemon=True)
    process.start()
    try:
        yield parent.recv()
    finally:
        parent.close()
        process.join(5)
        if process.is_alive():
            process.kill()


def single(
    client: openai.OpenAI, text: Text, tokens: int, *, budget: bool = False, delay_ms: int = 0
) -> Callable[[], Callable[[], Any]]:
    headers = {"x-fake-delay-ms": str(delay_ms)} if delay_ms else None

    def prepare() -> Callable[[], Any]:
        prompt = text(tokens)
        if not budget:
            return lambda: client.responses.create(model=MODEL, input=prompt, extra_headers=headers)

        def call() -> None:
            with costmeter.budget(10**6, name="bench"):
                client.responses.create(model=MODEL, input=prompt, extra_headers=headers)

        return call

    return prepare


def streamed(client: openai.OpenAI, text: Text, events: int) -> Callable[[], Callable[[], Any]]:
    headers = {"x-fake-deltas": str(events)}

    def prepare() -> Callable[[], Any]:
        prompt = text(100)

        def call() -> None:
            stream = client.responses.create(
                model=MODEL, input=prompt, stream=True, extra_headers=headers
            )
            seen = sum(1 for _ in stream)
            assert seen >= events, seen

        return call

    return prepare


class Conversation:
    """One Chat conversation; each `turn()` adds a fresh user message and resends everything."""

    def __init__(self, client: openai.OpenAI, text: Text) -> None:
        self.client = client
        self.text = text
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a terse assistant. " + text(150)}
        ]

    def prepare(self) -> Callable[[], Any]:
        self.messages.append({"role": "user", "content": self.text(200)})

        def call() -> None:
            reply = self.client.chat.completions.create(model=CHAT_MODEL, messages=self.messages)
            self.messages.append({"role": "assistant", "content": reply.choices[0].message.content})

        return call


def conversation(
    result: Result, conversations: int, turns: int, base: openai.OpenAI, cand: openai.OpenAI
) -> Result:
    text_a, text_b = Text(101), Text(202)
    for _ in range(conversations):
        a, b = Conversation(base, text_a), Conversation(cand, text_b)
        paired(result, turns, a.prepare, b.prepare)
    return result


def profile(name: str, run: Callable[[], None]) -> None:
    """cProfile *run* (metered calls only): top-15 by own time, then own time by package."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    print(f"\ncProfile of the worst case ({name}), metered calls only, top 15 by own time:")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    for line in lines[start:]:
        if line.strip():
            print("  " + line.replace("/work/main/", "").replace(sys.prefix + "/", "")[:150])
    by_package: dict[str, float] = {}
    total = 0.0
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        by_package[_package(filename, func)] = by_package.get(_package(filename, func), 0) + tottime
    print("  own time by package:")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:10]:
        print(f"    {package:<24} {seconds * 1000:9.1f} ms  {seconds / total:6.1%}")


def _package(filename: str, func: str) -> str:
    if "costmeter" in filename:
        return "costmeter"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename == "~":  # built-in functions and C methods
        if "tiktoken" in func or "encode_ordinary" in func:
            return "tiktoken (Rust)"
        if "socket" in func or "recv" in func or "sendall" in func or "poll" in func:
            return "socket I/O (C)"
        return "builtins (C)"
    return "stdlib"


def _profiled_run(result: Result, cand: openai.OpenAI) -> Callable[[], None]:
    """Metered calls of *result*'s workload (fresh input), ready to run under the profiler."""
    if result.name.startswith("chat"):

        def conversation_run() -> None:
            conv = Conversation(cand, Text(303))
            for _ in range(20):
                conv.prepare()()

        return conversation_run
    prepare = {
        "responses, ~100 input tokens": single(cand, Text(3), 100),
        "responses, ~2k input tokens": single(cand, Text(3), 2000),
        "  same, under a budget": single(cand, Text(3), 2000, budget=True),
        "responses, ~100k input tokens": single(cand, Text(3), 100_000),
        "  same (100k), under a budget": single(cand, Text(3), 100_000, budget=True),
        "stream, 500 deltas": streamed(cand, Text(3), 500),
    }.get(result.name) or single(cand, Text(3), 2000)
    thunks = [prepare() for _ in range(max(3, min(40, len(result.cand))))]

    def run() -> None:
        for thunk in thunks:
            thunk()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer pairs (CI smoke run)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--log", choices=("drop", "json"), default="drop")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0

    def n(count: int) -> int:
        return max(4, int(count * scale))

    logging_note = configure_logging(args.log)
    costmeter.set_strict(False)
    with server_process() as base_url:
        kwargs: dict[str, Any] = {
            "base_url": base_url,
            "api_key": "sk-bench",
            "max_retries": 0,
        }
        base = openai.OpenAI(**kwargs)
        cand = costmeter.OpenAI(**kwargs)
        text_a, text_b = Text(1), Text(2)
        # warm up: connections, pydantic validators, the tokenizer's vocabulary, price tables
        paired(Result("warm-up", None), 6, single(base, text_a, 500), single(cand, text_b, 500))
        paired(Result("warm-up", None), 2, streamed(base, text_a, 50), streamed(cand, text_b, 50))
        tokens_100k = costmeter.count_tokens(text_a(100_000), model=MODEL)
        gc.collect()

        results = [
            paired(
                Result("responses, ~100 input tokens", None),
                n(300),
                single(base, text_a, 100),
                single(cand, text_b, 100),
            ),
            paired(
                Result("responses, ~2k input tokens", 1.10),
                n(300),
                single(base, text_a, 2000),
                single(cand, text_b, 2000),
            ),
            paired(
                Result("  same, under a budget", 1.20),
                n(150),
                single(base, text_a, 2000),
                single(cand, text_b, 2000, budget=True),
            ),
            paired(
                Result("  same, server takes 5 ms", None),
                n(100),
                single(base, text_a, 2000, delay_ms=5),
                single(cand, text_b, 2000, delay_ms=5),
            ),
            paired(
                Result("responses, ~100k input tokens", None),
                n(24),
                single(base, text_a, 100_000),
                single(cand, text_b, 100_000),
            ),
            paired(
                Result("  same (100k), under a budget", 1.6),
                n(24),
                single(base, text_a, 100_000),
                single(cand, text_b, 100_000, budget=True),
            ),
            paired(
                Result("stream, 500 deltas", 1.02),
                n(60),
                streamed(base, text_a, 500),
                streamed(cand, text_b, 500),
            ),
            conversation(Result("chat, 20-turn conversation", 1.05), n(8), 20, base, cand),
        ]
        print(
            f"costmeter {costmeter.__version__}, openai {openai.__version__}, python "
            f"{sys.version.split()[0]}; FakeOpenAI in its own process, loopback HTTP; fresh input per call"
        )
        print(f"events: {logging_note}")
        print(
            f"figure: median over back-to-back pairs of metered/bare (100k text = {tokens_100k:,} tokens)"
        )
        for result in results:
            print(result.line())

        # the worst ratio overall, and the worst target miss if that is another workload
        worst = max(results, key=lambda r: r.ratio)
        misses = [r for r in results if r.target is not None and r.ratio > r.target]
        worst_miss = max(misses, key=lambda r: r.ratio / (r.target or 1), default=worst)
        for chosen in [worst] if worst_miss is worst else [worst, worst_miss]:
            profile(chosen.name, _profiled_run(chosen, cand))

    missed = [r.name for r in results if r.target is not None and r.ratio > r.target]
    print(f"\ntargets missed: {', '.join(missed) if missed else 'none'}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
