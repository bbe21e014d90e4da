"""
Counting a request's input tokens locally, under the rules OpenAI's servers apply.

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

Tokenizing is the only real cost: text → count is memoized in an LRU keyed on (encoding, text)
and bounded in entries and characters, so a conversation that resends its history only tokenizes
what is new and a long-running process does not grow.

A *bound* walk (``count_request_input(..., bound=True)``) replaces ``T(x)`` by the UTF-8 length of
``x``, a sound upper bound (every token of a byte-level BPE encodes at least one byte; tiktoken
turns a lone surrogate into U+FFFD, three bytes, as ``surrogatepass`` counts it) that needs no
vocabulary: every other term is the same, so the bound is never below the count.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from costmeter._errors import ConfigurationError
from costmeter._images import image_size, image_tokens
from costmeter._tokenizer import encoding_for

__all__ = [
    "content_tokens",
    "count_request_input",
    "inputs_of",
    "is_reasoning",
    "output_tokens_of",
    "short_name",
    "utf8_length",
]

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


_ENCODINGS: dict[str, Any] = {}
# One token each in every encoding costmeter ships (o200k_base, cl100k_base): counted without
# a memo lookup, as every message names one.
ONE_TOKEN_ROLES = frozenset({"user", "assistant", "system", "developer", "tool", "function"})


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
        self._keep_chars = max_chars // 2
        self._entries: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._chars = self._hits = self._misses = 0
        self._lock = threading.Lock()

    def __call__(self, encoding: str, text: str) -> int:
        key = (encoding, text)
        entries = self._entries
        tokens = entries.get(key)  # hits take no lock: each OrderedDict call is atomic
        if tokens is not None:
            try:  # noqa: SIM105  (contextlib.suppress costs ~0.5 µs per hit)
                entries.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile
                pass
            self._hits += 1  # statistics only: approximate under threads
            return tokens
        self._misses += 1
        tokens = len(_ENCODINGS[encoding].encode_ordinary(text))
        size = len(text)
        if size <= self._keep_chars:
            with self._lock:  # insert and evict together, so the character total stays exact
                if key not in entries:
                    entries[key] = tokens
                    chars, limit, maxsize = self._chars + size, self.max_chars, self.maxsize
                    while chars > limit or len(entries) > maxsize:
                        (_, old), _tokens = entries.popitem(last=False)
                        chars -= len(old)
                    self._chars = chars
        return tokens

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = self._hits = self._misses = 0

    def cache_info(self) -> _MemoInfo:
        return _MemoInfo(self._hits, self._misses, self.maxsize, len(self._entries), self._chars)


_count = _Memo(maxsize=8192, max_chars=2_000_000)


def utf8_length(text: str) -> int:
    """The UTF-8 length of *text*: at least its tokens in any byte-level BPE encoding."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def output_tokens_of(texts: Iterable[str], model: str) -> int:
    """
    Tokens of the output deltas a stream delivered, for one abandoned before its usage event.

    The deltas are joined first (a token can straddle two deltas) and not memoized: output text
    is seen once, and caching it would only evict the history the cache is for.
    """
    text = "".join(texts)
    return len(encoding_for(model).encode_ordinary(text)) if text else 0


def short_name(model: str) -> str:
    return model.lower().rsplit("/", 1)[-1].removeprefix("ft:")


def is_reasoning(model: str) -> bool:
    name = short_name(model)
    return name[:2] in ("o1", "o3", "o4") or name.startswith(("gpt-5", "gpt-6", "computer-use"))


class _Counter:
    """One request's running count, and the reasons it cannot be complete."""

    __slots__ = (
        "assistants",
        "bound",
        "calls",
        "enc",
        "model",
        "reasons",
        "system",
        "tokens",
        "tools",
    )

    def __init__(self, model: str, *, bound: bool = False) -> None:
        self.model, self.bound = model, bound
        if bound:  # no vocabulary needed
            self.enc = ""
        else:
            encoding = encoding_for(model)
            _ENCODINGS.setdefault(encoding.name, encoding)
            self.enc = str(encoding.name)
        self.tokens = self.assistants = 0
        self.system = self.tools = False
        self.calls: dict[object, object] = {}  # call id -> function name
        self.reasons: list[str] = []

    def text(self, text: object) -> int:
        if not isinstance(text, str) or not text:
            return 0
        return utf8_length(text) if self.bound else _count(self.enc, text)

    def miss(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def message(self, role: object, content: object, name: object = None) -> None:
        role_tokens = 1 if type(role) is str and role in ONE_TOKEN_ROLES else self.text(role)
        content_tokens = self.text(content) if type(content) is str else self.content(content)
        self.tokens += 3 + role_tokens + content_tokens
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
                return image_tokens(short_name(self.model), *size, detail=str(detail))
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
        if chat and self.tools and is_reasoning(self.model) and (forced or choice == "required"):
            self.miss("forced_tool_choice")

    def output_format(self, spec: object) -> None:
        """A json_schema output format: the server adds its name and schema to the prompt."""
        if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
            schema = json.dumps(spec["schema"], separators=(",", ":"))
            self.tokens += _SCHEMA + self.text(spec.get("name")) + self.text(schema)

    def total(self) -> int:
        tokens = self.tokens + (_TOOLS_IN_SYSTEM if self.tools and self.system else 0)
        if is_reasoning(self.model):
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
        if type(message) is not dict and not isinstance(message, Mapping):  # dict: no ABC check
            continue
        role = message.get("role")
        counter.message(role, message.get("content"), message.get("name"))
        if role == "tool":
            name = counter.text(counter.calls.get(message.get("tool_call_id")))
            counter.tokens += _CHAT_TOOL_REPLY + name if name else 0
        if message.get("audio"):
            counter.miss("audio")
        tool_calls = message.get("tool_calls")
        if not tool_calls:
            continue
        calls = [c for c in tool_calls if isinstance(c, Mapping)]
        parallel = len(calls) > 1
        counter.tokens += _CHAT_PARALLEL if parallel else 0
        for call in calls:
            fn = call.get("function")
            if isinstance(fn, Mapping):
                counter.calls[call.get("id")] = fn.get("name")
                counter.tokens += _CHAT_PARALLEL_CALL if parallel else _CHAT_CALL
                counter.tokens += counter.text(fn.get("name")) + counter.text(fn.get("arguments"))
    counter.function_tools(body.get("tools"))
    counter.tool_choice(body.get("tool_choice"), chat=True)
    if body.get("web_search_options") is not None:
        counter.miss("hosted_tools")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        counter.output_format(fmt.get("json_schema"))


def _embeddings(counter: _Counter, body: Mapping[str, Any]) -> None:
    """Embeddings bill exactly their inputs' tokens: no message framing, no reply priming."""
    for item in inputs_of(body.get("input")):
        counter.tokens += len(item) if _is_token_list(item) else counter.text(item)


def _completions(counter: _Counter, body: Mapping[str, Any]) -> None:
    """
    Legacy completions bill the prompt's tokens as given (no framing) and a ``suffix``'s. No
    prompt at all is the one ``<|endoftext|>`` document separator the model then starts from.
    """
    prompt = body.get("prompt")
    if prompt is None:
        counter.tokens += 1
    for item in inputs_of(prompt):
        counter.tokens += len(item) if _is_token_list(item) else counter.text(item)
    counter.tokens += counter.text(body.get("suffix"))


def inputs_of(data: object) -> list[Any]:
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
    api: str, body: Mapping[str, Any], model: str, *, bound: bool = False
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

    *bound*: count each text by its UTF-8 length instead of tokenizing it (see the module
    docstring): never below the count, and much cheaper.

    Raises:
        ConfigurationError: *api* is not one of those.
    """
    walk = _COUNTERS.get(api)
    if walk is None:
        raise ConfigurationError(
            f"count_request_input() does not know the api {api!r} (known: {sorted(_COUNTERS)})"
        )
    counter = _Counter(model, bound=bound)
    try:
        walk[0](counter, body)
    except Exception as exc:  # any estimator bug must degrade to an over-count, never raise
        try:
            text = json.dumps(body, separators=(",", ":"), default=str)
        except ValueError:  # a circular structure
            text = repr(body)
        reason = f"estimator_error:{type(exc).__name__}"
        return counter.text(text), False, (reason,)
    if api == "responses.compact":
        counter.miss("compaction_prompt")
    tokens = counter.total() if walk[1] else counter.tokens
    return tokens, not counter.reasons, tuple(counter.reasons)


def content_tokens(model: str, content: object) -> int:
    """The tokens of one message's content (text or parts) in *model*'s encoding."""
    return _Counter(model).content(content)
