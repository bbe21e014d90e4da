"""
Legacy completions on the fake server: ``POST /v1/completions`` (plain and ``stream``).

Deterministic usage (the ``CompletionUsage`` shape of ``openai/types/completion_usage.py``):

* ``prompt_tokens``: each prompt (a string, a list of strings, a token list or a list of token
  lists) counts ``len(text) // 4 + 1`` (token lists: their length), plus ``len(suffix) // 4 + 1``
  per prompt when a ``suffix`` is sent.
* per generated candidate: ``x-fake-output-tokens`` request header, else the server's
  ``output_tokens`` (20), cut at ``max_tokens`` (16 when absent, the API's default; the choice's
  ``finish_reason`` is then ``length``).
* ``completion_tokens`` = per candidate x ``max(n, best_of)`` x prompts: every candidate is
  billed, only ``n`` per prompt are returned. An ``echo``-ed prompt leads each choice's text but
  is not counted as output.
* A stream sends one chunk per word of each choice, then a chunk with its ``finish_reason``; the
  usage arrives in a last chunk with no choices when ``stream_options.include_usage`` is set.

``usage_override_next(..., path="/v1/completions")`` tampers with the usage as for the other
endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from costmeter.testing._api import FakeAPI
from costmeter.testing._reply import Reply
from costmeter.testing._routing import _Call, add_route
from costmeter.testing._usage import _deltas, _new_id, put_usage
from costmeter.testing._wire import _error_body, _int_header, sse

__all__ = ["completion_prompt_tokens", "completion_usage"]

_DEFAULT_MAX_TOKENS = 16


def _prompts(body: Mapping[str, Any]) -> list[Any]:
    prompt = body.get("prompt", "<|endoftext|>")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list):
        return prompt or ["<|endoftext|>"]
    return [prompt]


def completion_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The ``prompt_tokens`` the fake reports for a completions request *body*."""
    suffix = body.get("suffix")
    per_suffix = len(suffix) // 4 + 1 if isinstance(suffix, str) and suffix else 0
    total = 0
    for prompt in _prompts(body):
        total += len(prompt) if isinstance(prompt, list) else len(str(prompt)) // 4 + 1
        total += per_suffix
    return total


def _count(value: object, default: int) -> int:
    return value if isinstance(value, int) and value >= 1 else default


def _per_candidate(fake: FakeAPI, body: Mapping[str, Any], headers: Mapping[str, str]) -> int:
    wanted = _int_header(headers, "x-fake-output-tokens")
    wanted = fake.output_tokens if wanted is None else wanted
    bound = body.get("max_tokens")
    bound = _DEFAULT_MAX_TOKENS if not isinstance(bound, int) else bound
    return min(wanted, bound)


def completion_usage(
    fake: FakeAPI, body: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """The usage the fake reports for a completions request (see the module docstring)."""
    prompt_tokens = completion_prompt_tokens(body)
    candidates = max(_count(body.get("n"), 1), _count(body.get("best_of"), 1))
    output = _per_candidate(fake, body, headers) * candidates * len(_prompts(body))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output,
        "total_tokens": prompt_tokens + output,
    }


def _completions(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    body = call.body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        reply.send_json(400, _error_body(400, "Missing required parameter: 'model'."))
        return
    per_candidate = _per_candidate(fake, body, call.headers)
    wanted = _int_header(call.headers, "x-fake-output-tokens")
    cut = per_candidate < (fake.output_tokens if wanted is None else wanted)
    reason = "length" if cut else "stop"
    n = _count(body.get("n"), 1)
    words = _deltas(per_candidate)
    head: dict[str, Any] = {
        "id": _new_id("cmpl-", 12),
        "object": "text_completion",
        "created": int(time.time()),
        "model": fake.snapshots.get(model, model),
    }
    echoed = [p if isinstance(p, str) else "" for p in _prompts(body)]
    if body.get("echo") is not True:
        echoed = [""] * len(echoed)
    usage = completion_usage(fake, body, call.headers)
    if not body.get("stream"):
        choices = [
            {
                "index": i * n + j,
                "text": prefix + "".join(words),
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, prefix in enumerate(echoed)
            for j in range(n)
        ]
        out = {**head, "choices": choices}
        put_usage(out, usage, call.faults.usage)
        reply.send_json(200, out)
        return
    chunks: list[dict[str, Any]] = []
    for i, prefix in enumerate(echoed):
        for j in range(n):
            texts = ([prefix] if prefix else []) + words
            for text in texts:
                choice = {"index": i * n + j, "text": text, "logprobs": None, "finish_reason": None}
                chunks.append({**head, "choices": [choice]})
            end = {"index": i * n + j, "text": "", "logprobs": None, "finish_reason": reason}
            chunks.append({**head, "choices": [end]})
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        last: dict[str, Any] = {**head, "choices": []}
        put_usage(last, usage, call.faults.usage)
        chunks.append(last)
    reply.send_stream([sse(chunks, done=True)])


add_route("POST", r"/v1/completions", _completions)
