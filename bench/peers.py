"""
costmeter next to its peers: langfuse's OpenAI drop-in and logfire's ``instrument_openai``.

Each variant lives in a worker process of its own (langfuse's drop-in patches the ``openai``
package process-wide, so a bare client beside it would be traced too): bare ``openai.OpenAI``,
``costmeter.OpenAI``, ``from langfuse.openai import OpenAI``, and ``openai.OpenAI`` passed to
``logfire.instrument_openai``. All talk to the same `costmeter.testing.FakeOpenAI` server, in a
process of its own. Rounds are interleaved: each round asks every worker (in rotating order) for
one call with fresh input, and each variant's figure is the median over rounds of its time / the
bare time of the same round.

Nothing leaves the machine: logfire runs with ``send_to_logfire=False`` (spans are still built
and processed); langfuse traces for real, exporting to a dummy collector on loopback that
accepts anything, so its export thread does its normal work. Every worker refuses and counts any
connection to a non-loopback address; the count is printed (it must be 0).

The peers are optional: ``.venv/bin/pip install -r bench/requirements-peers.txt``. A peer that is
not installed is skipped with a message.

    .venv/bin/python bench/peers.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import CHAT_MODEL, MODEL, Text, configure_logging, server_process

VARIANTS = {
    "bare": None,
    "costmeter": None,
    "langfuse": "langfuse",
    "logfire": "logfire",
}
WORKLOADS = ("responses ~2k tokens", "chat ~2k tokens", "stream 500 deltas")


class _Accept(BaseHTTPRequestHandler):
    """A collector that accepts anything (langfuse's OTLP export goes here)."""

    def _ok(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _ok

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_sink(conn: Any) -> None:
    """Child process: the accept-anything collector, until the parent closes the pipe."""
    with ThreadingHTTPServer(("127.0.0.1", 0), _Accept) as server:
        conn.send(f"http://127.0.0.1:{server.server_address[1]}")
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        with contextlib.suppress(EOFError):
            conn.recv()


# -- worker side ---------------------------------------------------------------------------------
_refused: list[str] = []


def _guard_network() -> None:
    """Refuse (and count) every connection to an address that is not loopback."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            _refused.append(host)
            raise ConnectionRefusedError(f"bench/peers.py: no outside network ({host})")
        return real(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


def _client(variant: str, base_url: str, sink_url: str) -> Any:
    kwargs: dict[str, Any] = {"base_url": base_url, "api_key": "sk-bench", "max_retries": 0}
    if variant == "bare":
        import openai

        return openai.OpenAI(**kwargs)
    if variant == "costmeter":
        import costmeter

        configure_logging("drop")
        costmeter.set_strict(False)
        return costmeter.OpenAI(**kwargs)
    if variant == "langfuse":
        os.environ.update(
            LANGFUSE_PUBLIC_KEY="pk-lf-bench",
            LANGFUSE_SECRET_KEY="sk-lf-bench",
            LANGFUSE_HOST=sink_url,
            LANGFUSE_BASE_URL=sink_url,
        )
        from langfuse.openai import OpenAI

        return OpenAI(**kwargs)
    import logfire
    import openai

    logfire.configure(send_to_logfire=False, console=False, inspect_arguments=False)
    client = openai.OpenAI(**kwargs)
    logfire.instrument_openai(client)
    return client


def _calls(client: Any, text: Text) -> dict[str, Callable[[], Callable[[], Any]]]:
    def responses() -> Callable[[], Any]:
        prompt = text(2000)
        return lambda: client.responses.create(model=MODEL, input=prompt)

    def chat() -> Callable[[], Any]:
        messages = [{"role": "user", "content": text(2000)}]
        return lambda: client.chat.completions.create(model=CHAT_MODEL, messages=messages)

    def stream() -> Callable[[], Any]:
        prompt = text(100)

        def call() -> None:
            events = client.responses.create(
                model=MODEL, input=prompt, stream=True, extra_headers={"x-fake-deltas": "500"}
            )
            for _ in events:
                pass

        return call

    return dict(zip(WORKLOADS, (responses, chat, stream), strict=True))


def worker(variant: str, base_url: str, sink_url: str) -> None:
    """Answer each workload name read from stdin with the seconds one fresh call took."""
    _guard_network()
    client = _client(variant, base_url, sink_url)
    calls = _calls(client, Text(sum(map(ord, variant))))
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        thunk = calls[name]()
        started = time.perf_counter()
        thunk()
        elapsed = time.perf_counter() - started
        print(json.dumps({"s": elapsed, "refused": len(_refused)}), flush=True)
    if variant == "langfuse":
        from langfuse import get_client

        get_client().flush()  # the export really ran (to the loopback collector)
    print(json.dumps({"refused": len(_refused), "hosts": sorted(set(_refused))}), flush=True)


# -- parent side ---------------------------------------------------------------------------------
class Worker:
    def __init__(self, variant: str, base_url: str, sink_url: str) -> None:
        self.variant = variant
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", variant, base_url, sink_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, workload: str) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(workload + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.variant} worker died")
        return float(json.loads(line)["s"])

    def close(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        last = self.process.stdout.read().strip().splitlines()
        self.process.wait(30)
        return dict(json.loads(last[-1])) if last else {"refused": "?"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="40 rounds per workload")
    parser.add_argument("--rounds", type=int, default=150, help="rounds per workload")
    parser.add_argument("--strict", action="store_true", help="accepted for run_all.py")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "BASE_URL", "SINK_URL"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    rounds = 40 if args.quick else args.rounds
    variants = []
    for variant, module in VARIANTS.items():
        if module is None or importlib.util.find_spec(module) is not None:
            variants.append(variant)
        else:
            print(
                f"skipped {variant}: not installed "
                "(.venv/bin/pip install -r bench/requirements-peers.txt)"
            )
    if len(variants) == 2:
        print("no peer installed: nothing to compare")
        return 0
    times: dict[tuple[str, str], list[float]] = {}
    with server_process() as base_url, server_process(_serve_sink) as sink_url:
        workers = [Worker(variant, base_url, sink_url) for variant in variants]
        try:
            for workload in WORKLOADS:
                for w in workers:  # warm-up: connections, lazy imports, vocabularies
                    for _ in range(3):
                        w.call(workload)
                for i in range(rounds):
                    shift = i % len(workers)
                    for w in workers[shift:] + workers[:shift]:
                        times.setdefault((workload, w.variant), []).append(w.call(workload))
        finally:
            closing = {w.variant: w.close() for w in workers}
    print(
        f"python {sys.version.split()[0]}; one worker process per variant, {rounds} interleaved "
        "rounds per workload, fresh input per call; figure: median over rounds of variant / bare"
    )
    header = f"  {'workload':<22}" + "".join(f"{v:>22}" for v in variants)
    print(header)
    for workload in WORKLOADS:
        bare = times[(workload, "bare")]
        cells = []
        for variant in variants:
            mine = times[(workload, variant)]
            ratio = statistics.median(m / b for m, b in zip(mine, bare, strict=True))
            cells.append(f"{statistics.median(mine) * 1000:8.2f} ms {ratio:6.3f}x")
        print(f"  {workload:<22}" + "".join(f"{cell:>22}" for cell in cells))
    refused = {v: c.get("refused") for v, c in closing.items()}
    outside = {v: c.get("hosts") for v, c in closing.items() if c.get("refused")}
    print(f"connections to non-loopback addresses refused: {refused} {outside or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
