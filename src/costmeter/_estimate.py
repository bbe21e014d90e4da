"""
Pre-flight estimate of a request's input tokens and worst-case cost, before it is sent.

A budget must refuse a call *before* it is billed, so the input is counted locally with the
model's own tokenizer under the rules OpenAI's servers apply (the cookbook formula, refined on
recorded real traffic), and the output is bounded by the request's own limit. Plain text is
exact; function tools are within a few tokens; and when the billed input will hold context the
request does not carry (server-side state, hosted-tool results, files, remote images, audio,
prompt templates) the estimate says so with ``complete=False`` and the reasons.

Counting rules, ``T(x)`` being the tokens of text ``x`` in the model's encoding:

* a message costs ``3 + T(role) + T(content)`` (+1 +``T(name)`` for a Chat ``name``); the reply
  is primed with 3 tokens on non-reasoning models (gpt-3.5, gpt-4, gpt-4o, gpt-4.1) and with 2
  on reasoning models (o-series, gpt-5*, gpt-6*), which also pay 2 per earlier assistant turn;
* Responses ``instructions`` are one more (developer) message; a string ``input`` is one user
  message; function calls and their outputs cost their name, text and a fitted constant;
* function tools cost their TypeScript rendering (``namespace functions { ... }``, the form the
  server shows the model; descriptions dedented) + 9, less 4 when a system/developer message
  absorbs them; a forced function ``tool_choice`` adds ``T("functions." + name)``; a schema
  whose ``$ref``s cycle is counted as its compact JSON (incomplete: ``recursive_schema``);
* embeddings and legacy completions bill their inputs' tokens exactly: no framing at all;
* a ``json_schema`` output format costs its name and compact JSON, less 4;
* images: OpenAI's 512-px tile or 32-px patch rules; only ``data:`` URLs can be measured.

The worst case (`reserve_usd`, what a budget reserves before sending): the count plus the
estimator's error margin (`input_margin`: 5 % + 64 tokens) at the dearest input rate (cache
writes, audio input), the output bound times every parameter that multiplies billed output
(Chat ``n``, legacy ``best_of``/prompt lists, predictions) at the dearest output rate (audio
when the request can answer in audio), at the dearest tier the request can be served at
(`served_tiers`: no ``service_tier`` or ``"auto"`` may be served at priority), and at the
long-context rates when the margin reaches a model's threshold.

Endpoints: `estimate` dispatches on ``api`` through a registry (`register_estimator`); the
token-billed endpoints here register `token_estimator`, and an endpoint module (images, audio)
registers its own ``estimator(body, model) -> Estimate`` without touching `estimate`.

Tokenizing is the only real cost: text → count is memoized in an LRU keyed on (encoding, text)
and bounded in entries and characters, so a conversation that resends its history only tokenizes
what is new and a long-running process does not grow.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard

from costmeter._errors import ConfigurationError, UnknownModelError
from costmeter._images import image_size, image_tokens
from costmeter._money import ZERO as _ZERO
from costmeter._money import money_math
from costmeter._pricing import ModelPrice, UnpricedTokensError, price_of
from costmeter._tokenizer import encoding_for

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "EndpointEstimator",
    "Estimate",
    "count_request_input",
    "estimate",
    "input_margin",
    "output_bound",
    "output_tokens_of",
    "register_estimator",
    "reserve_usd",
    "served_tiers",
    "token_estimator",
    "worst_case_usd",
]

DEFAULT_MAX_OUTPUT_TOKENS: int = 4096
"""The output bound when a request sets none. A budget must reserve *some* worst case; 4096
covers the great majority of replies without reserving a model's whole output window."""

_MILLION = Decimal(1_000_000)
_BOUND_KEYS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
_SERVER_CONTEXT = {"previous_response_id": "previous_response_id", "conversation": "conversation"}
_SERVER_CONTEXT |= {"prompt": "prompt_template"}  # stored prompt templates expand server-side
_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "summary_text"})
# Constants fitted on tests/fixtures/traffic (bench/estimate_accuracy.py prints the fit).
_TOOLS = 9  # around the rendered ``namespace functions``
_TOOLS_IN_SYSTEM = -4  # the definitions join an existing system/developer message
_CHAT_CALL = 3  # one assistant tool call, beyond its name and arguments
_CHAT_PARALLEL = 4  # several calls are wrapped in one ``multi_tool_use.parallel`` call ...
_CHAT_PARALLEL_CALL = 9  # ... at this much per call
_CHAT_TOOL_REPLY = 1  # a tool message also carries the name of the call it answers
_RESPONSES_CALL = 10  # a function_call item, beyond its name and arguments
_RESPONSES_OUTPUT = 10  # a function_call_output item, beyond its call's name and its output
_SCHEMA = -4  # a json_schema format, beyond its name and compact JSON
_MAX_SCHEMA_DEPTH = 16  # $ref hops (and object nestings) rendered before counting the JSON instead
_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}


@dataclass(frozen=True, slots=True)
class Estimate:
    """
    A request's input tokens and worst-case cost, known before the request is sent.

    ``max_output_tokens`` is the most output the request can be billed for (its per-choice
    limit times ``n``/``best_of``/prompts). ``cost_usd`` is what a budget reserves for it
    (`reserve_usd`, USD), or ``None`` when no price source knows the model (or audio is asked
    of a model with no audio rate: reason ``audio_unpriced``). ``complete`` is ``False`` when
    the billed input will include context the request does not carry, or the count fell back
    to an over-count; ``reasons`` names each kind. ``api`` is the endpoint estimated.
    """

    model: str
    input_tokens: int
    max_output_tokens: int
    output_bound_from_request: bool
    cost_usd: Decimal | None
    complete: bool
    reasons: tuple[str, ...]
    price_source: str | None
    api: str = "responses"


# -- counting ------------------------------------------------------------------------------------

_ENCODINGS: dict[str, Any] = {}


class _MemoInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int
    chars: int


class _Memo:
    """
    Tokens of *text* in *encoding*, memoized because every turn of a conversation resends its
    history; an LRU bounded in entries *and* in characters held.

    An entry bound alone does not bound memory: 8,192 fresh 2k-token prompts would keep ~64 MB
    of text alive in a long-running service. Texts longer than half the character budget are
    counted but not kept (one would evict everything else).
    """

    def __init__(self, maxsize: int, max_chars: int) -> None:
        self.maxsize = maxsize
        self.max_chars = max_chars
        self._entries: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._chars = self._hits = self._misses = 0
        self._lock = threading.Lock()

    def __call__(self, encoding: str, text: str) -> int:
        key = (encoding, text)
        entries = self._entries
        tokens = entries.get(key)  # hits take no lock: each OrderedDict call is atomic
        if tokens is not None:
            with contextlib.suppress(KeyError):  # evicted by another thread meanwhile
                entries.move_to_end(key)
            self._hits += 1  # statistics only: approximate under threads
            return tokens
        self._misses += 1
        tokens = len(_ENCODINGS[encoding].encode_ordinary(text))
        if len(text) <= self.max_chars // 2:
            with self._lock:  # insert and evict together, so the character total stays exact
                if key not in entries:
                    entries[key] = tokens
                    self._chars += len(text)
                    while len(entries) > self.maxsize or self._chars > self.max_chars:
                        (_, old), _tokens = entries.popitem(last=False)
                        self._chars -= len(old)
        return tokens

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = self._hits = self._misses = 0

    def cache_info(self) -> _MemoInfo:
        return _MemoInfo(self._hits, self._misses, self.maxsize, len(self._entries), self._chars)


_count = _Memo(maxsize=8192, max_chars=2_000_000)


def output_tokens_of(texts: Iterable[str], model: str) -> int:
    """
    Tokens of the output deltas a stream delivered, for one abandoned before its usage event.

    The deltas are joined first (a token can straddle two deltas) and not memoized: output text
    is seen once, and caching it would only evict the history the cache is for.
    """
    text = "".join(texts)
    return len(encoding_for(model).encode_ordinary(text)) if text else 0


def _short_name(model: str) -> str:
    return model.lower().rsplit("/", 1)[-1].removeprefix("ft:")


def _is_reasoning(model: str) -> bool:
    name = _short_name(model)
    return name[:2] in ("o1", "o3", "o4") or name.startswith(("gpt-5", "gpt-6", "computer-use"))


class _Counter:
    """One request's running count, and the reasons it cannot be complete."""

    __slots__ = ("assistants", "calls", "enc", "model", "reasons", "system", "tokens", "tools")

    def __init__(self, model: str) -> None:
        encoding = encoding_for(model)
        _ENCODINGS.setdefault(encoding.name, encoding)
        self.model, self.enc = model, str(encoding.name)
        self.tokens = self.assistants = 0
        self.system = self.tools = False
        self.calls: dict[object, object] = {}  # call id -> function name
        self.reasons: list[str] = []

    def text(self, text: object) -> int:
        return _count(self.enc, text) if isinstance(text, str) and text else 0

    def miss(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def message(self, role: object, content: object, name: object = None) -> None:
        self.tokens += 3 + self.text(role) + self.content(content)
        if isinstance(name, str):
            self.tokens += 1 + self.text(name)
        self.assistants += role == "assistant"
        self.system |= role in ("system", "developer")

    def content(self, content: object) -> int:
        if not isinstance(content, list):
            return self.text(content)
        return sum(
            self.part(part) if isinstance(part, Mapping) else self.text(part) for part in content
        )

    def part(self, part: Mapping[str, Any]) -> int:
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            return self.text(part.get("text"))
        if kind == "refusal":
            return self.text(part.get("refusal"))
        if kind in ("image_url", "input_image"):
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = (image if isinstance(image, Mapping) else part).get("detail") or "auto"
            size = image_size(url) if isinstance(url, str) else None
            if size is not None:
                return image_tokens(_short_name(self.model), *size, detail=str(detail))
            self.miss("unmeasured_image")  # http(s) URL or file id: the server fetches it
        elif kind in ("input_audio", "audio"):
            self.miss("audio")
        elif kind in ("file", "input_file"):
            self.miss("input_file")
        else:
            self.miss(f"unknown_part:{kind}")
        return 0

    def function_tools(self, tools: object) -> None:
        """
        Client-side tools as the model sees them; hosted tools inject results we never see.

        A schema whose ``$ref``s form a cycle (a tree node holding its children: valid JSON
        Schema, and what ``openai.pydantic_function_tool`` makes of a recursive model) or that
        nests deeper than `_MAX_SCHEMA_DEPTH` has no finite rendering we know the server's form
        of; that tool is counted as its compact JSON instead (longer than the TypeScript form,
        which drops quotes, keys and titles), and the estimate is marked incomplete.
        """
        lines = ["namespace functions {", ""]
        fallback = 0
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, Mapping):
                continue
            if tool.get("type", "function") not in ("function", "custom"):
                self.miss("hosted_tools")
                continue
            fn = tool.get("function", tool)
            fmt = fn.get("format")
            if isinstance(fmt, Mapping) and fmt.get("type") == "grammar":
                # A custom tool's grammar is shown to the model (billed 159 where the rendering
                # alone gave 46); its exact form is unknown: count the definition, say so.
                self.miss("custom_tool_grammar")
                fallback += self.text(fmt.get("definition")) + self.text(fmt.get("syntax"))
            try:
                rendered = _ts_function(fn)
            except _SchemaTooDeep:
                self.miss("recursive_schema")
                fallback += self.text(json.dumps(fn, separators=(",", ":"), default=str))
                continue
            lines.extend(rendered)
        if len(lines) > 2:
            lines.append("} // namespace functions")
            self.tokens += self.text("\n".join(lines))
        if len(lines) > 2 or fallback:
            self.tokens += _TOOLS + fallback
            self.tools = True

    def tool_choice(self, choice: object, *, chat: bool) -> None:
        """
        A forced function (``{"type": "function", "name": ...}``) is named to the model: the
        recorded forced call (otel-contrib-2) billed exactly ``T("functions." + name)`` more
        than the tools alone. Chat reasoning models with a forced choice (or ``"required"``)
        are billed a hidden instruction no recording shows (179 billed vs 94 counted), so
        that estimate is marked incomplete rather than guessed.
        """
        forced = isinstance(choice, Mapping) and choice.get("type") in ("function", "custom")
        if forced and isinstance(choice, Mapping):
            fn = choice.get("function", choice)
            name = fn.get("name") if isinstance(fn, Mapping) else None
            if isinstance(name, str) and name:
                self.tokens += self.text(f"functions.{name}")
        if chat and self.tools and _is_reasoning(self.model) and (forced or choice == "required"):
            self.miss("forced_tool_choice")

    def output_format(self, spec: object) -> None:
        """A json_schema output format: the server adds its name and schema to the prompt."""
        if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
            schema = json.dumps(spec["schema"], separators=(",", ":"))
            self.tokens += _SCHEMA + self.text(spec.get("name")) + self.text(schema)

    def total(self) -> int:
        tokens = self.tokens + (_TOOLS_IN_SYSTEM if self.tools and self.system else 0)
        if _is_reasoning(self.model):
            return tokens + 2 + 2 * self.assistants
        return tokens + 3


class _SchemaTooDeep(Exception):
    """A tool schema refers to itself, or nests beyond `_MAX_SCHEMA_DEPTH`."""


def _ts_function(fn: Mapping[str, Any]) -> list[str]:
    """
    One function's lines in the server's ``namespace functions`` rendering.

    A description is rendered dedented and stripped (``inspect.cleandoc``): frameworks pass
    Python docstrings verbatim, and the recorded multi-line docstring descriptions
    (pydantic-ai-41/-42) were over-counted by 12-13 tokens with their indentation, by 2-3
    without it; one-line descriptions are unchanged.
    """
    description = fn.get("description")
    cleaned = inspect.cleandoc(description) if isinstance(description, str) else ""
    lines = [f"// {cleaned}"] if cleaned else []
    params = fn.get("parameters")
    if isinstance(params, Mapping) and params.get("properties"):
        lines.append(f"type {fn.get('name')} = (_: {{")
        _ts_props(params, 0, lines, _Schema(params))
        lines.append("}) => any;")
    else:
        lines.append(f"type {fn.get('name')} = () => any;")
    lines.append("")
    return lines


class _Schema:
    """Where ``$ref``s resolve (the root schema and its ``$defs``), and the chain being rendered."""

    __slots__ = ("defs", "root", "stack")

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        defs = root.get("$defs") or root.get("definitions") or {}
        self.defs = defs if isinstance(defs, Mapping) else {}
        self.stack: list[str] = []

    def resolve(self, ref: str) -> Mapping[str, Any] | None:
        if ref == "#":
            return self.root
        target = self.defs.get(ref.rsplit("/", 1)[-1])
        return target if isinstance(target, Mapping) else None


def _ts_props(schema: Mapping[str, Any], indent: int, lines: list[str], ctx: _Schema) -> None:
    if indent > 2 * _MAX_SCHEMA_DEPTH:
        raise _SchemaTooDeep
    required = schema.get("required") or ()
    properties = schema.get("properties") or {}
    for name, prop in properties.items() if isinstance(properties, Mapping) else ():
        if isinstance(prop, Mapping):
            if prop.get("description") and indent < 2:
                lines.append(f"{' ' * indent}// {prop['description']}")
            optional = "" if name in required else "?"
            lines.append(f"{' ' * indent}{name}{optional}: {_ts_type(prop, indent, ctx)},")


def _ts_type(prop: Mapping[str, Any], indent: int, ctx: _Schema) -> str:
    ref = prop.get("$ref")
    if isinstance(ref, str):
        target = ctx.resolve(ref)
        if target is not None:
            if ref in ctx.stack or len(ctx.stack) >= _MAX_SCHEMA_DEPTH:
                raise _SchemaTooDeep
            ctx.stack.append(ref)
            try:
                return _ts_type(target, indent, ctx)
            finally:
                ctx.stack.pop()
    if isinstance(prop.get("enum"), list):
        return " | ".join(json.dumps(value, default=str) for value in prop["enum"])
    if isinstance(prop.get("anyOf"), list):
        return " | ".join(_ts_type(p, indent, ctx) for p in prop["anyOf"] if isinstance(p, Mapping))
    kind = prop.get("type")
    if kind == "object":
        lines = ["{"]
        _ts_props(prop, indent + 2, lines, ctx)
        return "\n".join([*lines, " " * indent + "}"])
    if kind == "array":
        items = prop.get("items")
        return (_ts_type(items, indent, ctx) if isinstance(items, Mapping) else "any") + "[]"
    return _TS_TYPES.get(kind, "any") if isinstance(kind, str) else "any"


def _responses(counter: _Counter, body: Mapping[str, Any]) -> None:
    for key, reason in _SERVER_CONTEXT.items():
        if body.get(key):
            counter.miss(reason)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("mode") == "pro":
        counter.miss("reasoning_mode_pro")  # pro mode adds a hidden prompt (~1.5k tokens)
    for key, role in (("instructions", "developer"), ("input", "user")):
        value = body.get(key)
        if isinstance(value, str) and value:  # empty instructions send no message at all
            counter.message(role, value)
        elif isinstance(value, list):
            _items(counter, value)
    counter.function_tools(body.get("tools"))
    counter.tool_choice(body.get("tool_choice"), chat=False)
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        counter.output_format(fmt)


def _items(counter: _Counter, items: list[Any]) -> None:
    for item in items:
        if not isinstance(item, Mapping):
            counter.message("user", item)
            continue
        kind = item.get("type", "message")
        if kind == "message":
            counter.message(item.get("role"), item.get("content"))
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input"))
            counter.tokens += _RESPONSES_CALL + counter.text(item.get("name")) + counter.text(args)
            counter.calls[item.get("call_id")] = item.get("name")
            counter.assistants += 1
        elif kind in ("function_call_output", "custom_tool_call_output"):
            name = counter.text(counter.calls.get(item.get("call_id")))
            counter.tokens += _RESPONSES_OUTPUT + name + counter.content(item.get("output"))
        elif kind == "reasoning":  # its content lives server-side (encrypted, or stored by id)
            counter.miss("reasoning_items")
        elif kind == "item_reference":
            counter.miss("item_reference")
        elif item.get("encrypted_content"):  # e.g. a compaction item
            counter.miss("encrypted_content")
        elif str(kind).endswith(("_call", "_output")) or str(kind).startswith("mcp_"):
            counter.miss("hosted_tools")  # a hosted tool's call or result, rendered server-side
        else:
            counter.miss(f"unknown_item:{kind}")


def _chat(counter: _Counter, body: Mapping[str, Any]) -> None:
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        counter.message(message.get("role"), message.get("content"), message.get("name"))
        if message.get("role") == "tool":
            name = counter.text(counter.calls.get(message.get("tool_call_id")))
            counter.tokens += _CHAT_TOOL_REPLY + name if name else 0
        calls = [c for c in message.get("tool_calls") or () if isinstance(c, Mapping)]
        parallel = len(calls) > 1
        counter.tokens += _CHAT_PARALLEL if parallel else 0
        for call in calls:
            fn = call.get("function")
            if isinstance(fn, Mapping):
                counter.calls[call.get("id")] = fn.get("name")
                counter.tokens += _CHAT_PARALLEL_CALL if parallel else _CHAT_CALL
                counter.tokens += counter.text(fn.get("name")) + counter.text(fn.get("arguments"))
        if message.get("audio"):
            counter.miss("audio")
    counter.function_tools(body.get("tools"))
    counter.tool_choice(body.get("tool_choice"), chat=True)
    if body.get("web_search_options") is not None:
        counter.miss("hosted_tools")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        counter.output_format(fmt.get("json_schema"))


def _embeddings(counter: _Counter, body: Mapping[str, Any]) -> None:
    """Embeddings bill exactly their inputs' tokens: no message framing, no reply priming."""
    for item in _inputs(body.get("input")):
        counter.tokens += len(item) if _is_token_list(item) else counter.text(item)


def _completions(counter: _Counter, body: Mapping[str, Any]) -> None:
    """
    Legacy completions bill the prompt's tokens as given (no framing) and a ``suffix``'s. No
    prompt at all is the one ``<|endoftext|>`` document separator the model then starts from.
    """
    prompt = body.get("prompt")
    if prompt is None:
        counter.tokens += 1
    for item in _inputs(prompt):
        counter.tokens += len(item) if _is_token_list(item) else counter.text(item)
    counter.tokens += counter.text(body.get("suffix"))


def _inputs(data: object) -> list[Any]:
    """One input (a str or a token list) or a list of them, as a list."""
    if isinstance(data, str) or _is_token_list(data):
        return [data]
    return list(data) if isinstance(data, list) else []


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], int)


# Each api's body walk; ``True`` when the reply priming (and tool adjustments) apply.
_COUNTERS: dict[str, tuple[Callable[[_Counter, Mapping[str, Any]], None], bool]] = {
    "responses": (_responses, True),
    "responses.compact": (_responses, True),
    "chat.completions": (_chat, True),
    "embeddings": (_embeddings, False),
    "completions": (_completions, False),
}


def count_request_input(
    api: str, body: Mapping[str, Any], model: str
) -> tuple[int, bool, tuple[str, ...]]:
    """
    The input tokens of a request body, and whether they are all the request will be billed for.

    *api* is ``"responses"``, ``"chat.completions"``, ``"embeddings"``, ``"completions"``
    (legacy) or ``"responses.compact"`` (whose compaction pass adds a hidden prompt, so it is
    never complete). Returns ``(input_tokens, complete, reasons)``. Pure: no I/O.

    A body shape the walk does not expect never raises: the count falls back to the tokens of
    the whole body's JSON (an over-count: keys and punctuation are counted too), marked
    incomplete with ``estimator_error:<ExceptionType>``, so a budget reserves too much rather
    than nothing, and the failure never reads as an unknown model.

    Raises:
        ConfigurationError: *api* is not one of those.
    """
    walk = _COUNTERS.get(api)
    if walk is None:
        raise ConfigurationError(
            f"count_request_input() does not know the api {api!r} (known: {sorted(_COUNTERS)})"
        )
    counter = _Counter(model)
    try:
        walk[0](counter, body)
    except Exception as exc:  # any estimator bug must degrade to an over-count, never raise
        try:
            text = json.dumps(body, separators=(",", ":"), default=str)
        except ValueError:  # a circular structure
            text = repr(body)
        reason = f"estimator_error:{type(exc).__name__}"
        return _count(counter.enc, text), False, (reason,)
    if api == "responses.compact":
        counter.miss("compaction_prompt")
    tokens = counter.total() if walk[1] else counter.tokens
    return tokens, not counter.reasons, tuple(counter.reasons)


# -- the worst case ------------------------------------------------------------------------------


def input_margin(input_tokens: int) -> int:
    """
    The estimator's error margin on a locally counted input: 5 % + 64 tokens.

    Plain text is counted exactly; function tools and schemas land within a few percent (worst
    recorded: -10 % on a nested ``$ref`` schema, -32 tokens). The margin is reserved on top of
    the count, and a long-context price cliff within it is reserved at the dearer rates: an
    input estimated 8 tokens under gpt-5.4's 272k threshold and billed over it costs ~2x.
    """
    return -(-input_tokens * 5 // 100) + 64


def output_bound(api: str, body: Mapping[str, Any], model: str = "") -> tuple[int, bool]:
    """
    The most output tokens the request can be billed for, and whether the request said so.

    Per choice: the request's own limit (``max_output_tokens``/``max_completion_tokens``/
    ``max_tokens``, which include reasoning and audio tokens, so it is a true worst case), else
    `DEFAULT_MAX_OUTPUT_TOKENS` (legacy completions: the API's own default of 16). Times every
    parameter that multiplies billed output: Chat ``n`` choices; legacy completions bill
    ``best_of`` candidates (at least ``n``) for each prompt of a list. Plus a Chat
    ``prediction``'s tokens (Predicted Outputs bill rejected prediction tokens as output; the
    API does not say the limit caps them). Embeddings have no output.
    """
    if api == "embeddings":
        return 0, True
    per_choice, from_request = (
        (16, False) if api == "completions" else (DEFAULT_MAX_OUTPUT_TOKENS, False)
    )
    for key in _BOUND_KEYS:
        value = body.get(key)
        if _is_count(value, 0):
            per_choice, from_request = value, True
            break
    choices = _count_param(body, "n")
    if api == "completions":
        choices = max(choices, _count_param(body, "best_of")) * max(
            1, len(_inputs(body.get("prompt")))
        )
    extra = 0
    prediction = body.get("prediction")
    if api == "chat.completions" and isinstance(prediction, Mapping):
        counter = _Counter(model)
        extra = counter.content(prediction.get("content"))
    return per_choice * choices + extra * choices, from_request


def _is_count(value: object, minimum: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _count_param(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    return value if _is_count(value, 1) else 1


def worst_case_usd(price: ModelPrice, input_tokens: int, max_output_tokens: int) -> Decimal:
    """
    The most a text request can cost at one price: every input token at the dearest input rate
    (no cache hit is assumed, and a cache write can cost more than plain input, e.g. gpt-5.6),
    plus the whole output bound, at the long-context rates when the input crosses their
    threshold. `reserve_usd` adds the tiers, audio, output multipliers and the error margin.
    """
    with money_math():
        rates = price.for_input(input_tokens)
        input_rate = max(rates.input_per_mtok, rates.cache_write_per_mtok)
        return (input_tokens * input_rate + max_output_tokens * rates.output_per_mtok) / _MILLION


_STANDARD_REQUEST_TIERS = frozenset({"default", "standard"})
_AUTO_TIERS = (None, "priority")


def served_tiers(service_tier: object) -> tuple[str | None, ...]:
    """
    The tiers a request can be served (and billed) at, for its ``service_tier``.

    Absent or ``"auto"``: the project's default tier, which a project can set to ``priority``
    (billed ~2x standard), so both standard and priority are possible and the worst case is
    the dearer; a response served at ``priority`` that nobody asked for must not pass a cap.
    An explicit ``"default"`` is served at standard rates; an explicit ``"flex"``,
    ``"priority"`` or other tier at that tier (a priority request may be downgraded to
    standard, which is cheaper). Send ``service_tier="default"`` to reserve at standard rates.
    """
    if service_tier is None:
        return _AUTO_TIERS
    tier = str(service_tier).strip().lower()
    if tier in ("", "auto"):
        return _AUTO_TIERS
    if tier in _STANDARD_REQUEST_TIERS:
        return (None,)
    return (tier,)


def _audio_model(model: str) -> bool:
    """Audio-native models (gpt-audio, gpt-4o-audio-preview, gpt-realtime) can answer in audio."""
    parts = _short_name(model).split("-")
    return "audio" in parts or "realtime" in parts


def _audio_output_requested(body: Mapping[str, Any]) -> bool:
    modalities = body.get("modalities")
    return bool(body.get("audio")) or (isinstance(modalities, list) and "audio" in modalities)


def _audio_input(body: Mapping[str, Any]) -> bool:
    """Audio content parts (or a Chat assistant turn's audio) anywhere in the input."""
    turns = body.get("messages") or body.get("input") or ()
    for turn in turns if isinstance(turns, list) else ():
        if not isinstance(turn, dict) and not isinstance(turn, Mapping):
            continue
        content = turn.get("content", turn.get("output"))
        if type(content) is str and not turn.get("audio"):  # the common case, kept cheap
            continue
        if turn.get("audio") or any(
            isinstance(part, Mapping) and part.get("type") in ("input_audio", "audio")
            for part in (content if isinstance(content, list) else ())
        ):
            return True
    return False


def reserve_usd(
    api: str,
    body: Mapping[str, Any],
    model: str,
    input_tokens: int,
    price_for: Callable[[str | None], ModelPrice | None],
    *,
    exact_input: bool = False,
) -> Decimal | None:
    """
    The dearest cost a request can be billed at: what a budget reserves before sending it.

    The maximum over every tier the request can be served at (`served_tiers`; *price_for*
    gives the model's price at a tier, ``None`` for standard, and returns ``None`` where it has
    none) of:

    * input: *input_tokens* plus `input_margin` (none when *exact_input*, i.e. the server
      counted them), every token at the dearest input rate: plain, cache write (dearer on
      gpt-5.6), and audio when the input carries audio; at the long-context rates when the
      margin reaches the model's threshold (the cliff reprices the whole request);
    * output: `output_bound` (per-choice limit x ``n``/``best_of``/prompts, plus predictions)
      at the output rate, or the audio output rate when the request can answer in audio
      (``modalities`` with ``"audio"``, an ``audio`` parameter, or an audio-native model).

    An explicit tier no price source knows reserves as an absent one (standard or priority).
    Returns ``None`` when no tier of the model is priced at all.

    Raises:
        UnpricedTokensError: the request asks for audio (audio parts, ``modalities``, ``audio``)
            and the price source has no audio rate for the model: its bill cannot be bounded.
    """
    tiers = served_tiers(body.get("service_tier"))
    prices = [price for price in map(price_for, tiers) if price is not None]
    if not prices and tiers != _AUTO_TIERS:
        prices = [price for price in map(price_for, _AUTO_TIERS) if price is not None]
    if not prices:
        return None
    padded = input_tokens + (0 if exact_input else input_margin(input_tokens))
    output, _ = output_bound(api, body, model)
    audio_in = _audio_input(body)
    audio_out_asked = _audio_output_requested(body)
    audio_out = audio_out_asked or _audio_model(model)
    worst = _ZERO
    with money_math():
        for price in prices:
            long = price.for_input(padded)
            for rates in (price,) if long is price else (price, long):
                in_rate = max(rates.input_per_mtok, rates.cache_write_per_mtok)
                out_rate = rates.output_per_mtok
                if audio_in:
                    if rates.audio_input_per_mtok is None:
                        raise UnpricedTokensError("audio", price.priced_as, price.source)
                    in_rate = max(in_rate, rates.audio_input_per_mtok)
                if audio_out:
                    if rates.audio_output_per_mtok is not None:
                        out_rate = max(out_rate, rates.audio_output_per_mtok)
                    elif audio_out_asked:
                        raise UnpricedTokensError("audio", price.priced_as, price.source)
                worst = max(worst, (padded * in_rate + output * out_rate) / _MILLION)
    return worst


# -- the public estimate -------------------------------------------------------------------------

EndpointEstimator = Callable[[dict[str, Any], str], Estimate]
"""``estimator(body, model) -> Estimate`` for one api; *body* holds the request's keywords."""

_ESTIMATORS: dict[str, EndpointEstimator] = {}


def register_estimator(api: str, estimator: EndpointEstimator) -> None:
    """
    Plug an endpoint's estimator into `estimate` (``estimate(api=api, ...)``).

    An endpoint module (images, audio, ...) registers its own function at import time; nothing
    in `estimate` changes. Registering an api again replaces its estimator.

    Raises:
        ConfigurationError: *api* is not a non-empty str or *estimator* is not callable.
    """
    if not isinstance(api, str) or not api:
        raise ConfigurationError(f"register_estimator() needs api as a non-empty str, got {api!r}")
    if not callable(estimator):
        raise ConfigurationError(f"register_estimator() needs a callable, got {estimator!r}")
    _ESTIMATORS[api] = estimator


def _infer_api(model: str, body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return "chat.completions"
    if "embedding" in _short_name(model):
        return "embeddings"
    if isinstance(body.get("prompt"), (str, list)) and "input" not in body:
        return "completions"  # Responses' ``prompt`` is a template reference (a mapping)
    return "responses"


def estimate(*, model: str, api: str | None = None, **request_kwargs: Any) -> Estimate:
    """
    Estimate a request's input tokens and worst-case cost without sending it.

    Takes the keyword arguments of the endpoint's ``create`` call. *api* names the endpoint:
    ``"responses"``, ``"chat.completions"``, ``"embeddings"``, ``"completions"`` (legacy), or
    any an endpoint module registered (`register_estimator`); by default it is inferred:
    ``messages`` means Chat, an embedding model means embeddings, a str/list ``prompt`` without
    ``input`` means legacy completions, anything else Responses.

    ``cost_usd`` is what a budget reserves (`reserve_usd`): the input plus the estimator's error
    margin at the dearest input rate, the whole output bound (x ``n``/``best_of``) at the
    dearest output rate (audio when the request can answer in audio), at the dearest tier the
    request can be served at (no ``service_tier`` or ``"auto"``: standard or priority). An
    unpriced model gives ``cost_usd=None`` rather than an error: estimating must never break
    the caller's request.

    Raises:
        ConfigurationError: *model* is not a non-empty str; *api* is unknown; the output bound
            is not an int >= 0; ``n``/``best_of`` not an int >= 1; *input* is not a str or
            list, or *messages*/*tools* not a list; the price file is missing or malformed
            (`costmeter.PricesFileError`, naming the file).
        UnpricedTokensError: the request asks for audio and its model has no audio rate.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"estimate() needs model as a non-empty str, got {model!r}")
    body: dict[str, Any] = dict(request_kwargs)
    if body.get("messages") is None:
        body.pop("messages", None)
    api = api if api is not None else _infer_api(model, body)
    estimator = _ESTIMATORS.get(api) if isinstance(api, str) else None
    if estimator is None and isinstance(api, str):
        from costmeter._endpoints import register_estimators  # noqa: PLC0415  (images, audio...)

        register_estimators()
        estimator = _ESTIMATORS.get(api)
    if estimator is None:
        raise ConfigurationError(
            f"estimate() does not know the api {api!r} (known: {sorted(_ESTIMATORS)})"
        )
    return estimator(body, model)


def _validate(api: str, body: Mapping[str, Any]) -> None:
    for key, types in (
        ("messages", (list,)),
        ("input", (str, list)),
        ("prompt", (str, list) if api == "completions" else (Mapping,)),
        ("tools", (list,)),
    ):
        value = body.get(key)
        if value is not None and not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigurationError(
                f"estimate() needs {key} as a {expected}, got {type(value).__name__}"
            )
    bound_key = next((key for key in _BOUND_KEYS if body.get(key) is not None), None)
    if bound_key and not _is_count(body[bound_key], 0):
        raise ConfigurationError(
            f"estimate() needs {bound_key} as an int >= 0, got {body[bound_key]!r}"
        )
    for key in ("n", "best_of"):
        if body.get(key) is not None and not _is_count(body[key], 1):
            raise ConfigurationError(f"estimate() needs {key} as an int >= 1, got {body[key]!r}")


def _price_for(model: str) -> Callable[[str | None], ModelPrice | None]:
    """`price_of` per tier for one estimate, ``None`` where unpriced, each tier looked up once."""
    found: dict[str | None, ModelPrice | None] = {}

    def price_for(tier: str | None) -> ModelPrice | None:
        if tier not in found:
            try:
                found[tier] = price_of(model, service_tier=tier)
            except UnknownModelError:
                found[tier] = None
        return found[tier]

    return price_for


def token_estimator(api: str) -> EndpointEstimator:
    """The estimator of a token-billed endpoint: `count_request_input` + `reserve_usd`."""

    def estimator(body: dict[str, Any], model: str) -> Estimate:
        _validate(api, body)
        input_tokens, complete, reasons = count_request_input(api, body, model)
        max_output, from_request = output_bound(api, body, model)
        price_for = _price_for(model)
        try:
            cost = reserve_usd(api, body, model, input_tokens, price_for)
        except UnpricedTokensError:  # audio asked for, no audio rate: the bill has no bound
            cost, reasons = None, (*reasons, "audio_unpriced")
        standard = price_for(None)
        return Estimate(
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output,
            output_bound_from_request=from_request,
            cost_usd=cost,
            complete=complete,
            reasons=reasons,
            price_source=standard.source if standard is not None and cost is not None else None,
            api=api,
        )

    return estimator


for _api in ("responses", "chat.completions", "embeddings", "completions", "responses.compact"):
    register_estimator(_api, token_estimator(_api))
