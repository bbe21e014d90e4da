"""
The usage the fake reports, and `_Plan`: one generated response before it is rendered.

Usage numbers are deterministic, not real tokenization (see :func:`fake_input_tokens`):

* ``input_tokens = len(canonical JSON of the prompt) // 4 + 8``; the prompt is
  ``[tools, instructions, input]`` (Responses) or ``[tools, messages]`` (Chat), compact JSON.
* cached tokens: when at least 1,024 leading tokens of the prompt (``chars // 4``) equal a prompt
  seen earlier for the same served model and the same ``prompt_cache_key`` (absent counts as one
  key), the common prefix is reported as cached, rounded down to a multiple of 128. A first call
  is never cached, just as with the real API.
* visible output tokens: ``x-fake-output-tokens`` request header, else ``output_tokens`` (20).
* reasoning tokens (o-series, gpt-5*, gpt-6* except ``*-chat*``): by effort, none 0, minimal 16,
  low 64, medium 192 (default), high 512, xhigh 1024; ``x-fake-reasoning-tokens`` overrides.
  They are part of ``output_tokens``.
* ``output_tokens`` never exceeds ``max_output_tokens`` (Chat: ``max_completion_tokens`` or
  ``max_tokens``); when the bound cuts the output the response is ``incomplete`` with reason
  ``max_output_tokens`` (Chat: ``finish_reason="length"``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from costmeter.testing._faults import OMIT, _Fault
from costmeter.testing._replies import json_reply, tool_call
from costmeter.testing._wire import JSONDict, _int_header

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI

__all__ = ["MODEL_SNAPSHOTS", "fake_input_tokens"]

#: Aliases the fake resolves to a dated snapshot in the response's ``model``, like the real API.
MODEL_SNAPSHOTS: Final[Mapping[str, str]] = {
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-5.1": "gpt-5.1-2025-11-13",
    "gpt-5.2": "gpt-5.2-2025-12-11",
    "gpt-5.4": "gpt-5.4-2026-03-05",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
}

_REASONING_BY_EFFORT: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 16,
    "low": 64,
    "medium": 192,
    "high": 512,
    "xhigh": 1024,
}
_CACHE_MIN_TOKENS: Final = 1024
_CACHE_INCREMENT: Final = 128
_CACHE_PROMPTS_KEPT: Final = 32
_WORDS: Final = ("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog")


def _prompt_text(body: Mapping[str, Any], endpoint: str) -> str:
    """The canonical prompt text: tools first, like the real cache prefix order."""
    if endpoint == "chat.completions":
        parts = [body.get("tools"), body.get("messages")]
    else:
        parts = [body.get("tools"), body.get("instructions"), body.get("input")]
    return json.dumps([p for p in parts if p is not None], separators=(",", ":"), default=str)


def fake_input_tokens(
    body: Mapping[str, Any],
    endpoint: Literal["responses", "chat.completions", "embeddings"] = "responses",
) -> int:
    """
    The input token count the fake server reports for a request *body*.

    A deterministic stand-in for tokenization, exported so tests can assert exact numbers:
    ``len(prompt JSON) // 4 + 8`` where the prompt is ``[tools, instructions, input]``
    (Responses) or ``[tools, messages]`` (Chat), ``None`` parts dropped, compact separators.
    Embeddings count each string input as ``len // 4 + 1`` and token arrays by length.
    """
    if endpoint == "embeddings":
        raw = body.get("input")
        items: list[Any] = raw if isinstance(raw, list) else [raw]
        if items and all(isinstance(x, int) for x in items):
            return len(items)
        total = 0
        for item in items:
            if isinstance(item, str):
                total += len(item) // 4 + 1
            elif isinstance(item, list):
                total += len(item)
        return total
    return len(_prompt_text(body, endpoint)) // 4 + 8


def _is_reasoning_model(model: str) -> bool:
    m = model.lower()
    if "-chat" in m:
        return False
    return (m[:1] == "o" and m[1:2].isdigit()) or m.startswith(("gpt-5", "gpt-6"))


def _reasoning_effort(endpoint: str, model: str, body: Mapping[str, Any]) -> str | None:
    """The effort a reasoning model works at (``medium`` unless asked); ``None`` otherwise."""
    if endpoint == "embeddings" or not _is_reasoning_model(model):
        return None
    if endpoint == "chat.completions":
        return str(body.get("reasoning_effort") or "medium")
    return str((body.get("reasoning") or {}).get("effort") or "medium")


def _output_limit(endpoint: str, body: Mapping[str, Any]) -> Any:
    if endpoint == "chat.completions":
        return body.get("max_completion_tokens") or body.get("max_tokens")
    return body.get("max_output_tokens")


def _common_prefix_len(a: str, b: str) -> int:
    """Length of the common prefix, by binary search over C-speed slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PromptCache:
    """Earlier prompts per (served model, ``prompt_cache_key``), for the cached-prefix rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str | None], list[str]] = {}

    def cached_tokens(self, model: str, key: Any, text: str) -> int:
        """Cached prefix vs. earlier prompts of the same model and cache key (module doc)."""
        if len(text) // 4 < _CACHE_MIN_TOKENS:
            return 0
        scope = (model, key if isinstance(key, str) else None)
        with self._lock:
            seen = self._seen.setdefault(scope, [])
            best = max((_common_prefix_len(text, old) for old in seen), default=0)
            seen.append(text)
            del seen[:-_CACHE_PROMPTS_KEPT]
        tokens = best // 4
        if tokens < _CACHE_MIN_TOKENS:
            return 0
        return (tokens // _CACHE_INCREMENT) * _CACHE_INCREMENT

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def _deltas(count: int) -> list[str]:
    return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(count)]


def _new_id(prefix: str, nbytes: int = 24) -> str:
    return prefix + secrets.token_hex(nbytes)


def _merge(base: Any, patch: Mapping[str, Any]) -> JSONDict:
    """Deep-merge *patch* into a copy of *base*; :data:`OMIT` values delete keys."""
    out: JSONDict = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is OMIT:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            out[key] = _merge(out.get(key), value)
        else:
            out[key] = value
    return out


def reported_usage(usage: Any, fault: _Fault | None) -> Any:
    """*usage* as reported once a ``usage_override_next`` *fault* (if any) tampered with it."""
    if fault is None:
        return usage
    replacement = fault.params["usage"]
    if fault.params["merge"] and isinstance(replacement, Mapping):
        return _merge(usage, replacement)
    return dict(replacement) if isinstance(replacement, Mapping) else replacement


def put_usage(target: JSONDict, usage: Any, fault: _Fault | None) -> None:
    """Set ``target["usage"]`` as reported (:data:`OMIT` removes the key)."""
    shown = reported_usage(usage, fault)
    if shown is OMIT:
        target.pop("usage", None)
    else:
        target["usage"] = shown


@dataclass
class _Plan:
    """Everything needed to render one generated response, in any of its lifecycle states."""

    rid: str
    endpoint: str
    created: int
    model: str
    request: JSONDict
    service_tier: str
    input_tokens: int
    cached: int
    reasoning: int
    visible: int
    deltas: list[str]
    status: str  # completed | incomplete | failed
    effort: str | None
    item_ids: tuple[str, str]
    background: bool = False
    state: str = "completed"
    polls: int = 0
    usage_fault: _Fault | None = None
    drop_model: bool = False
    tool: tuple[str, str] | None = None  # (name, arguments JSON): answer with this tool call

    @property
    def choices(self) -> int:
        """Chat's ``n``: each choice generates (and bills) its own output."""
        return max(1, int(self.request.get("n") or 1))

    def usage(self) -> JSONDict:
        if self.endpoint == "chat.completions":
            return self._chat_usage()
        out = self.reasoning + self.visible
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.input_tokens + out,
        }

    def _chat_usage(self) -> JSONDict:
        n = self.choices
        out = (self.reasoning + self.visible) * n
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": out,
            "total_tokens": self.input_tokens + out,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning * n,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def put_usage(self, target: JSONDict) -> None:
        """Set the usage this response reports on *target* (a body, event or chunk)."""
        put_usage(target, self.usage(), self.usage_fault)


def new_plan(
    fake: FakeAPI, endpoint: str, body: JSONDict, headers: Mapping[str, str], prefix: str
) -> _Plan:
    """Decide the response *fake* generates for *body*: its usage, text, tool call and status."""
    requested = str(body.get("model") or "")
    model = fake.snapshots.get(requested, requested)
    if endpoint == "embeddings":
        input_tokens = fake_input_tokens(body, "embeddings")
        cached = 0
    else:
        text = _prompt_text(body, endpoint)
        input_tokens = len(text) // 4 + 8
        cached = fake._prompt_cache.cached_tokens(model, body.get("prompt_cache_key"), text)
    forced_input = _int_header(headers, "x-fake-input-tokens")
    if forced_input is not None:
        input_tokens, cached = forced_input, min(cached, forced_input)
    forced_cache = _int_header(headers, "x-fake-cached-tokens")
    if forced_cache is not None:
        cached = min(forced_cache, input_tokens)

    effort = _reasoning_effort(endpoint, model, body)
    reasoning = 0
    if effort is not None:
        reasoning = _REASONING_BY_EFFORT.get(effort, _REASONING_BY_EFFORT["medium"])
    forced_reasoning = _int_header(headers, "x-fake-reasoning-tokens")
    if forced_reasoning is not None:
        reasoning = forced_reasoning
    visible = _int_header(headers, "x-fake-output-tokens")
    if visible is None:
        visible = fake.output_tokens
    if endpoint == "embeddings":
        reasoning = visible = 0

    limit = _output_limit(endpoint, body)
    status = "completed"
    if isinstance(limit, int) and reasoning + visible > limit:
        status = "incomplete"
        reasoning = min(reasoning, limit)
        visible = limit - reasoning

    n_deltas = _int_header(headers, "x-fake-deltas")
    if n_deltas is None:
        n_deltas = fake.stream_events if fake.stream_events is not None else visible
    if status == "incomplete":
        n_deltas = min(n_deltas, visible)

    tier = body.get("service_tier")
    rid = _new_id(prefix)
    answers = endpoint in ("responses", "chat.completions")
    tool = tool_call(body) if answers else None
    structured = json_reply(body) if answers else None
    deltas = _deltas(n_deltas) if structured is None else [structured]
    return _Plan(
        rid=rid,
        endpoint=endpoint,
        created=int(time.time()),
        model=model,
        request=body,
        service_tier=tier if tier in ("flex", "priority") else "default",
        input_tokens=input_tokens,
        cached=cached,
        reasoning=reasoning,
        visible=visible,
        deltas=[] if tool is not None else deltas,
        status=status,
        effort=effort,
        item_ids=("rs_" + rid[len(prefix) :], "msg_" + rid[len(prefix) :]),
        background=bool(body.get("background")),
        tool=tool,
    )
