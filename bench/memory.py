"""
Memory: resident set size after 100k metered calls vs after 1k (target: growth <= 5 MB).

A cost meter sits in long-running services; nothing may be kept per call unless the user asked
for it (content logging, a budget's running total is O(1)). This drives the real
``costmeter.OpenAI`` client — the same ``request()`` override, stream subclass and byte tap a
network call goes through — but over an in-process ``httpx2.MockTransport`` that answers with
responses recorded from `costmeter.testing.FakeOpenAI` (a JSON Responses reply, a JSON Chat reply
and a 10-delta Responses SSE stream), because 100k calls over loopback HTTP would take too long
for CI. Every call sends fresh text (so the token-count memo keeps filling) and runs under an
active `costmeter.budget` (so reservations are taken and settled). The mix per 20 calls: 16
``responses.create``, 2 ``chat.completions.create``, 2 streams read to the end.

RSS is the current resident size (``/proc/self/statm``) after ``gc.collect()``, measured after a
warm-up, after 1k calls, and at checkpoints up to the total. costmeter's own bounded structures
(token memo, background registry) are printed at the end. ``--bare`` runs the same loop with the
bare ``openai.OpenAI`` client in a child process first, to show what the SDK itself grows by.

    .venv/bin/python bench/memory.py [--calls 100000] [--quick] [--bare] [--strict]

Exit status is 0 even when the target is missed, unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import Text

import costmeter
from costmeter import _input_count, _meter
from costmeter.testing import FakeOpenAI

TARGET_MB = 5.0
MODEL = "gpt-5-mini"
CHAT_MODEL = "gpt-4.1-mini"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size in MB (after a full collection)."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / 1e6


def record() -> dict[str, tuple[bytes, str]]:
    """Real replies from FakeOpenAI: path kind -> (body, content type)."""
    with FakeOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        plain = client.responses.with_raw_response.create(model=MODEL, input="hi")
        chat = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        with client.responses.with_streaming_response.create(
            model=MODEL, input="hi", stream=True, extra_headers={"x-fake-deltas": "10"}
        ) as streamed:
            stream_body = streamed.http_response.read()
    return {
        "responses": (plain.http_response.content, "application/json"),
        "chat": (chat.http_response.content, "application/json"),
        "stream": (stream_body, "text/event-stream"),
    }


def make_client(cls: type[openai.OpenAI], replies: dict[str, tuple[bytes, str]]) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/chat/completions"):
            body, kind = replies["chat"]
        elif b'"stream":true' in request.content:
            body, kind = replies["stream"]
        else:
            body, kind = replies["responses"]
        headers = {"content-type": kind, "x-request-id": "req_bench"}
        return httpx2.Response(200, content=body, headers=headers)

    transport = httpx2.MockTransport(handler)
    return cls(
        base_url="http://bench.invalid/v1",
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def run(client: Any, calls: int, text: Text, tokens: int) -> None:
    """*calls* calls of the mix (16 responses, 2 chat, 2 streams per 20)."""
    for i in range(calls):
        slot = i % 20
        if slot in {7, 17}:
            messages = [{"role": "user", "content": text(tokens)}]
            client.chat.completions.create(model=CHAT_MODEL, messages=messages)
        elif slot in {3, 13}:
            for _event in client.responses.create(model=MODEL, input=text(tokens), stream=True):
                pass
        else:
            client.responses.create(model=MODEL, input=text(tokens))


def measure(
    cls: type[openai.OpenAI], calls: int, first: int, tokens: int
) -> list[tuple[int, float]]:
    """RSS checkpoints [(calls done, MB)] for *calls* calls, the first after *first*."""
    client = make_client(cls, record())
    text = Text(7)
    run(client, 200, text, tokens)  # warm-up: vocabulary, price tables, pydantic, pools
    done, points = 0, []
    checkpoints = sorted({first, *(calls * k // 4 for k in (1, 2, 3, 4))} - {0})
    with costmeter.budget(10**9, name="bench"):
        for checkpoint in checkpoints:
            run(client, checkpoint - done, text, tokens)
            done = checkpoint
            points.append((done, rss_mb()))
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--first", type=int, default=1000, help="the reference point (1k)")
    parser.add_argument("--tokens", type=int, default=200, help="input tokens per call")
    parser.add_argument("--quick", action="store_true", help="20k calls instead of 100k")
    parser.add_argument("--bare", action="store_true", help="also run the bare SDK (child)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--child-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    calls = 20_000 if args.quick else args.calls
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )
    costmeter.set_strict(False)

    if args.child_bare:
        print(json.dumps(measure(openai.OpenAI, calls, args.first, args.tokens)))
        return 0

    print(
        f"{calls:,} calls ({args.tokens} fresh input tokens each; 80% responses, 10% chat, "
        "10% streams of 10 deltas) through costmeter.OpenAI over httpx2.MockTransport "
        "replaying FakeOpenAI replies; one active budget; events dropped by structlog"
    )
    if args.bare:
        started = time.perf_counter()
        command = [sys.executable, __file__, "--child-bare", "--calls", str(calls)]
        command += ["--first", str(args.first), "--tokens", str(args.tokens)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        bare = json.loads(out.splitlines()[-1])
        growth = bare[-1][1] - bare[0][1]
        print(
            f"  bare openai.OpenAI (child process): RSS {bare[0][1]:.1f} MB after {bare[0][0]:,}, "
            f"{bare[-1][1]:.1f} MB after {bare[-1][0]:,}: growth {growth:+.2f} MB "
            f"({time.perf_counter() - started:.0f} s)"
        )
    started = time.perf_counter()
    points = measure(costmeter.OpenAI, calls, args.first, args.tokens)
    elapsed = time.perf_counter() - started
    for done, mb in points:
        print(f"  after {done:>7,} metered calls: RSS {mb:7.1f} MB")
    growth = points[-1][1] - points[0][1]
    ok = growth <= TARGET_MB
    print(
        f"  growth {points[0][0]:,} -> {points[-1][0]:,} calls: {growth:+.2f} MB   "
        f"target <= {TARGET_MB:.0f} MB   {'PASS' if ok else 'FAIL'}   "
        f"({elapsed:.0f} s, {elapsed / (points[-1][0] + 200) * 1e3:.2f} ms/call)"
    )
    memo = _input_count._count.cache_info()
    registry = _meter.registry
    print(
        f"  bounded state: token memo {memo.currsize:,}/{memo.maxsize:,} entries, "
        f"{getattr(memo, 'chars', 0):,} chars; "
        f"background registry {len(registry._pending)} pending, {len(registry._billed)} billed ids"
    )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
