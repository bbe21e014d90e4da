"""
Estimator throughput: ``costmeter.estimate`` / ``count_request_input`` vs raw tiktoken.

The baseline is what counting cannot avoid: ``encoding.encode_ordinary`` of the very same text
(for a Chat request, of each message's content). The candidates are the pre-flight paths a
metered call takes: ``count_request_input`` (what ``Call.begin`` runs) and the public
``costmeter.estimate`` (which also prices the worst case). Each iteration uses fresh text, so the
memo never hits, and baseline and candidate run back to back in alternating order. The figure is
the median over pairs of candidate time / baseline time. A ratio near 1 means the text is
tokenized once and the framing around it is cheap; double tokenization would show as ~2x.

Target (issue #7): <= 1.2x. Requests of ~100 tokens are shown too, where costmeter's fixed
per-request work (pricing in Decimal, message framing) is a visible share of a 30-50 us encode;
the target applies to the 2k and 100k sizes, where tokenizing is the work.

    .venv/bin/python bench/estimator_throughput.py [--quick] [--strict]

Exit status is 0 even when a target is missed, unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import Text

import costmeter
from costmeter._input_count import count_request_input
from costmeter._tokenizer import encoding_for

MODEL = "gpt-5-mini"
TARGET = 1.2


def paired(
    pairs: int, base: Callable[[], Callable[[], Any]], cand: Callable[[], Callable[[], Any]]
) -> tuple[float, float, float]:
    """(median baseline s, median candidate s, median of per-pair ratios)."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(pairs):
        order = ((base, times[0]), (cand, times[1]))
        for prepare, sink in order if i % 2 == 0 else order[::-1]:
            thunk = prepare()
            started = time.perf_counter()
            thunk()
            sink.append(time.perf_counter() - started)
    ratio = statistics.median(c / b for b, c in zip(*times, strict=True))
    return statistics.median(times[0]), statistics.median(times[1]), ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    encoding = encoding_for(MODEL)
    encode = encoding.encode_ordinary
    text_a, text_b = Text(11), Text(22)
    costmeter.estimate(model=MODEL, input=text_a(50))  # load vocabulary and price tables

    def raw_text(tokens: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            text = text_a(tokens)
            return lambda: encode(text)

        return prepare

    def counted(tokens: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            body = {"model": MODEL, "input": text_b(tokens)}
            return lambda: count_request_input("responses", body, MODEL)

        return prepare

    def estimated(tokens: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            text = text_b(tokens)
            return lambda: costmeter.estimate(model=MODEL, input=text, max_output_tokens=1000)

        return prepare

    def raw_chat(tokens: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            texts = [text_a(tokens // 10) for _ in range(10)]
            return lambda: [encode(t) for t in texts]

        return prepare

    def chat(tokens: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            roles = ("user", "assistant")
            messages = [{"role": roles[i % 2], "content": text_b(tokens // 10)} for i in range(10)]
            return lambda: costmeter.estimate(model=MODEL, messages=messages)

        return prepare

    cases: list[tuple[str, int, bool, Callable[..., Any], Callable[..., Any]]] = []
    for tokens in (100, 2000, 100_000):
        targeted = tokens >= 2000
        cases.append(("count_request_input", tokens, targeted, raw_text, counted))
        cases.append(("estimate(input=...)", tokens, targeted, raw_text, estimated))
        cases.append(("estimate(messages=10)", tokens, targeted, raw_chat, chat))
    counts = {100: 3000, 2000: 1000, 100_000: 30}

    print(
        f"{MODEL} ({encoding.name}); fresh text per iteration; "
        "figure: median over back-to-back pairs of costmeter / raw encode_ordinary"
    )
    missed = []
    for name, tokens, targeted, base, cand in cases:
        gc.collect()
        pairs = max(6, int(counts[tokens] * scale))
        base_s, cand_s, ratio = paired(pairs, base(tokens), cand(tokens))
        if targeted:
            ok = ratio <= TARGET
            verdict = f"target <= {TARGET}x  {'PASS' if ok else 'FAIL'}"
            if not ok:
                missed.append(f"{name} @ {tokens}")
        else:
            verdict = "(fixed cost shown; no target)"
        print(
            f"  {name:<22} {tokens:>7,} tokens  {pairs:5d} pairs  "
            f"encode {base_s * 1e6:9.1f} us  costmeter {cand_s * 1e6:9.1f} us  "
            f"({tokens / cand_s / 1e6:5.2f} M tok/s)  ratio {ratio:5.2f}x  {verdict}"
        )
    print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
