"""
Legacy Completions (``POST /completions``, ``client.completions.create``): text in, text out.

Billing rules (OpenAI API reference, ``completions.create``):

* Input: every prompt is billed. ``prompt`` is a string, a list of strings, a token list or a
  list of token lists; each prompt in a list is a *separate* completion, so all of them count,
  and a ``suffix`` is sent (and billed) with each one. An absent prompt is ``<|endoftext|>``.
* Output: ``max_tokens`` (16 when absent: the API's default) per generated candidate. The server
  generates ``best_of`` candidates per prompt and returns the best ``n`` of them (``best_of`` must
  be >= ``n``); every candidate is billed, returned or not. So the bound is ``max_tokens x
  max(n, best_of) x prompts``.
* ``echo`` returns the prompt in front of each choice's text; the echoed prompt is not generated
  output (the usage's ``completion_tokens`` do not count it), so it adds nothing to the bound,
  and the fallback count strips it from the text received.

Usage comes back in the Chat shape (``prompt_tokens``/``completion_tokens``); a stream reports it
only in its last chunk when the request set ``stream_options.include_usage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._endpoints._text import requested_price
from costmeter._money import money_math
from costmeter._observe import Observation, field_of
from costmeter._usage import Usage

__all__ = ["ENDPOINTS", "CompletionsEndpoint", "output_bound", "prompts_of"]

#: The API's default ``max_tokens`` for legacy completions.
DEFAULT_MAX_TOKENS = 16
_END_OF_TEXT = "<|endoftext|>"  # the prompt the API uses when none is given


def prompts_of(body: Mapping[str, Any]) -> list[str | list[int]]:
    """
    The request's prompts, one per completion: a string, a list of strings, a token list (one
    prompt) or a list of token lists. Other values count as one unreadable prompt (``[]``).
    """
    prompt = body.get("prompt", _END_OF_TEXT)
    if prompt is None:
        return [_END_OF_TEXT]
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        if not prompt:
            return [_END_OF_TEXT]
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        return [p if isinstance(p, (str, list)) else [] for p in prompt]
    return [[]]


def _positive(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return default


def output_bound(body: Mapping[str, Any]) -> int:
    """
    The most output tokens the request can be billed for: ``max_tokens`` (default 16) for each
    of ``max(n, best_of)`` candidates of each prompt.
    """
    max_tokens = body.get("max_tokens")
    if not (isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0):
        max_tokens = DEFAULT_MAX_TOKENS
    candidates = max(_positive(body.get("n"), 1), _positive(body.get("best_of"), 1))
    return max_tokens * candidates * len(prompts_of(body))


def _prompt_tokens(body: Mapping[str, Any], model: str) -> int:
    """Input tokens: every prompt, each with the suffix."""
    from costmeter._tokenizer import count_tokens  # noqa: PLC0415  (tiktoken: lazy)

    suffix = body.get("suffix")
    per_suffix = count_tokens(suffix, model=model) if isinstance(suffix, str) and suffix else 0
    total = 0
    for prompt in prompts_of(body):
        total += len(prompt) if isinstance(prompt, list) else count_tokens(prompt, model=model)
        total += per_suffix
    return total


class CompletionsEndpoint(Endpoint):
    """``POST /completions``: priced per token like Chat, with its own prompt and bound rules."""

    api = "completions"
    paths = (("post", r"/completions"),)

    def estimate(self, request: Request) -> Reserve:
        from costmeter._worst_case import worst_case_usd  # noqa: PLC0415  (tokenizer: lazy)

        model = request.model or ""
        reasons = () if request.model else ("no_model",)
        input_tokens = request.exact_input_tokens
        if input_tokens is None:
            input_tokens = _prompt_tokens(request.body, model)
        unreadable = any(p == [] for p in prompts_of(request.body))
        if unreadable:
            reasons = (*reasons, "prompt_not_text_or_tokens")
        # at the requested tier (a batch line's is "batch"), else at the dearer standard rates
        tier = request.body.get("service_tier")
        price = requested_price(request, tier if isinstance(tier, str) else None)
        if price is None:
            return Reserve(None, input_tokens, complete=not reasons, reasons=reasons)
        with money_math():
            cost = worst_case_usd(price, input_tokens, output_bound(request.body))
        return Reserve(cost, input_tokens, complete=not reasons, reasons=reasons)

    def observe(self, seen: Observation, obj: Any) -> None:
        seen.take(obj)
        # A streamed completion's chunks are ``text_completion`` objects too (same shape as the
        # whole response), so the shared `take` keeps only the last as the final response: keep
        # each chunk's text for the fallback count.
        if field_of(obj, "object") == "text_completion":
            for choice in field_of(obj, "choices") or ():
                text = field_of(choice, "text")
                if isinstance(text, str) and text:
                    seen.deltas.append(text)

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """
        Output counted from the text received (the streamed chunks, else the final response),
        less the echoed prompt in front of each returned choice when ``echo`` was set.
        """
        from costmeter._input_count import output_tokens_of  # noqa: PLC0415  (tokenizer: lazy)

        model = seen.response_model or request.model or ""
        texts = seen.deltas if request.stream else [seen.final_text() or ""]
        output = output_tokens_of(texts, model) if any(texts) else 0
        if output and request.body.get("echo") is True:
            choices = _positive(request.body.get("n"), 1)
            echoed = sum(
                output_tokens_of([p], model) if isinstance(p, str) else len(p)
                for p in prompts_of(request.body)
            )
            output = max(0, output - echoed * choices)
        return Usage(input_tokens=estimated_input, output_tokens=output)


ENDPOINTS = (CompletionsEndpoint(),)
