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
  server shows the model) + 9, less 4 when a system/developer message absorbs them;
* a ``json_schema`` output format costs its name and compact JSON, less 4;
* images: OpenAI's 512-px tile or 32-px patch rules; only ``data:`` URLs can be measured.

Tokenizing is the only real cost: text → count is memoized in an LRU keyed on (encoding, text)
and bounded in entries and characters, so a conversation that resends its history only tokenizes
what is new and a long-running process does not grow.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from costmeter._errors import ConfigurationError, UnknownModelError
from costmeter._money import money_math
from costmeter._pricing import ModelPrice, price_of
from costmeter._tokenizer import encoding_for

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "Estimate",
    "count_request_input",
    "estimate",
    "output_bound",
    "output_tokens_of",
    "worst_case_usd",
]

DEFAULT_MAX_OUTPUT_TOKENS: int = 4096
"""The output bound when a request sets none. A budget must reserve *some* worst case; 4096
covers the great majority of replies without reserving a model's whole output window."""

_MILLION = Decimal(1_000_000)
_APIS = frozenset({"responses", "chat.completions", "embeddings", "responses.compact"})
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
_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}


@dataclass(frozen=True, slots=True)
class Estimate:
    """
    A request's input tokens and worst-case cost, known before the request is sent.

    ``cost_usd`` is ``input_tokens`` at the input price plus ``max_output_tokens`` at the output
    price (USD per 1M tokens; long-context rates when the input crosses their threshold), or
    ``None`` when no price source knows the model. ``complete`` is ``False`` when the billed
    input will include context the request does not carry; ``reasons`` names each kind.
    """

    model: str
    input_tokens: int
    max_output_tokens: int
    output_bound_from_request: bool
    cost_usd: Decimal | None
    complete: bool
    reasons: tuple[str, ...]
    price_source: str | None


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
            size = _image_size(url) if isinstance(url, str) else None
            if size is not None:
                return _image_tokens(self.model, *size, detail=str(detail))
            self.miss("unmeasured_image")  # http(s) URL or file id: the server fetches it
        elif kind in ("input_audio", "audio"):
            self.miss("audio")
        elif kind in ("file", "input_file"):
            self.miss("input_file")
        else:
            self.miss(f"unknown_part:{kind}")
        return 0

    def function_tools(self, tools: object) -> None:
        """Client-side tools as the model sees them; hosted tools inject results we never see."""
        lines = ["namespace functions {", ""]
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, Mapping):
                continue
            if tool.get("type", "function") not in ("function", "custom"):
                self.miss("hosted_tools")
                continue
            fn = tool.get("function", tool)
            if fn.get("description"):
                lines.append(f"// {fn['description']}")
            params = fn.get("parameters")
            if isinstance(params, Mapping) and params.get("properties"):
                lines.append(f"type {fn.get('name')} = (_: {{")
                _ts_props(params, 0, lines, params.get("$defs") or {})
                lines.append("}) => any;")
            else:
                lines.append(f"type {fn.get('name')} = () => any;")
            lines.append("")
        if len(lines) > 2:
            lines.append("} // namespace functions")
            self.tokens += _TOOLS + self.text("\n".join(lines))
            self.tools = True

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


def _ts_props(schema: Mapping[str, Any], indent: int, lines: list[str], defs: Any) -> None:
    required = schema.get("required") or ()
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, Mapping):
            if prop.get("description") and indent < 2:
                lines.append(f"{' ' * indent}// {prop['description']}")
            optional = "" if name in required else "?"
            lines.append(f"{' ' * indent}{name}{optional}: {_ts_type(prop, indent, defs)},")


def _ts_type(prop: Mapping[str, Any], indent: int, defs: Any) -> str:
    ref = prop.get("$ref")
    if isinstance(ref, str) and isinstance(defs, Mapping):
        target = defs.get(ref.rsplit("/", 1)[-1])
        prop = target if isinstance(target, Mapping) else prop
    if isinstance(prop.get("enum"), list):
        return " | ".join(json.dumps(value) for value in prop["enum"])
    if isinstance(prop.get("anyOf"), list):
        return " | ".join(
            _ts_type(p, indent, defs) for p in prop["anyOf"] if isinstance(p, Mapping)
        )
    kind = prop.get("type")
    if kind == "object":
        lines = ["{"]
        _ts_props(prop, indent + 2, lines, defs)
        return "\n".join([*lines, " " * indent + "}"])
    if kind == "array":
        items = prop.get("items")
        return (_ts_type(items, indent, defs) if isinstance(items, Mapping) else "any") + "[]"
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
    if body.get("web_search_options") is not None:
        counter.miss("hosted_tools")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        counter.output_format(fmt.get("json_schema"))


def count_request_input(
    api: str, body: Mapping[str, Any], model: str
) -> tuple[int, bool, tuple[str, ...]]:
    """
    The input tokens of a request body, and whether they are all the request will be billed for.

    *api* is ``"responses"``, ``"chat.completions"``, ``"embeddings"`` or
    ``"responses.compact"`` (whose compaction pass adds a hidden prompt, so it is never
    complete). Returns ``(input_tokens, complete, reasons)``. Pure: no I/O.
    """
    if api not in _APIS:
        raise ConfigurationError(f"count_request_input() does not know the api {api!r}")
    counter = _Counter(model)
    if api == "embeddings":  # no message framing: the sum of the inputs' tokens
        data = body.get("input")
        inputs: list[Any] = [data] if isinstance(data, str) or _is_token_list(data) else data or []
        for item in inputs:
            counter.tokens += len(item) if _is_token_list(item) else counter.text(item)
        return counter.tokens, True, ()
    if api == "chat.completions":
        _chat(counter, body)
    else:
        _responses(counter, body)
        if api == "responses.compact":
            counter.miss("compaction_prompt")
    return counter.total(), not counter.reasons, tuple(counter.reasons)


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], int)


# -- images --------------------------------------------------------------------------------------

# Patch models: ceil(w/32)·ceil(h/32) patches (at most 1536) times a multiplier; detail ignored.
_PATCH_MULTIPLIERS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "gpt-5-mini": 1.62}
_PATCH_MULTIPLIERS |= {"gpt-5-nano": 2.46, "o4-mini": 1.72}
# Tile models: base + per-tile tokens per 512-px tile (base only for detail "low").
_TILE_TOKENS = {"gpt-4o-mini": (2833, 5667), "computer-use": (65, 129), "gpt-5": (70, 140)}
_TILE_TOKENS |= {"o1": (75, 150), "o3": (75, 150)}  # everything else: gpt-4o's 85 + 170/tile


def _image_tokens(model: str, width: int, height: int, *, detail: str) -> int:
    """OpenAI's image rule: 32-px patches times a multiplier, or 512-px tiles."""
    name = _short_name(model)
    for prefix, multiplier in _PATCH_MULTIPLIERS.items():
        if name.startswith(prefix):
            patches = math.ceil(width / 32) * math.ceil(height / 32)
            if patches > 1536:  # shrink to fit 1536 patches, whole patches along one side
                scale = math.sqrt(32 * 32 * 1536 / (width * height))
                w, h = width * scale / 32, height * scale / 32
                scale *= min(math.floor(w) / w, math.floor(h) / h)
                patches = math.ceil(width * scale / 32) * math.ceil(height * scale / 32)
            return math.ceil(patches * multiplier)
    base, per_tile = next((v for p, v in _TILE_TOKENS.items() if name.startswith(p)), (85, 170))
    if detail == "low":
        return base
    for limit, side in ((2048, max), (768, min)):  # fit in a 2048 square, shortest side to 768
        length = side(width, height)
        if length > limit:
            width, height = int(width * limit / length), int(height * limit / length)
    return base + per_tile * math.ceil(width / 512) * math.ceil(height / 512)


@functools.lru_cache(maxsize=256)
def _image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a ``data:`` URL image (PNG, JPEG, GIF, WEBP), else ``None``."""
    head, sep, payload = url[:200].partition(";base64,")
    if not head.startswith("data:") or not sep:
        return None
    payload = url[len(head) + len(sep) :]
    for chunk in (payload[:4096], payload):  # a JPEG frame header may follow a large EXIF block
        try:
            size = _header_size(base64.b64decode(chunk[: len(chunk) - len(chunk) % 4]))
        except (binascii.Error, ValueError):
            return None
        if size is not None or len(chunk) == len(payload):
            return size
    return None  # pragma: no cover - the loop always returns


def _header_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(
                data[27:30], "little"
            )
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data[:2] != b"\xff\xd8":
        return None
    i = 2  # JPEG: walk the segments to the first start-of-frame (SOFn) marker
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


# -- the public estimate -------------------------------------------------------------------------


def estimate(*, model: str, messages: object = None, **request_kwargs: Any) -> Estimate:
    """
    Estimate a request's input tokens and worst-case cost without sending it.

    Takes the keyword arguments of ``client.responses.create``, or of
    ``client.chat.completions.create`` when *messages* is given. The output bound is the
    request's ``max_output_tokens``/``max_completion_tokens``/``max_tokens`` (which include
    reasoning tokens, so it is a true worst case), else `DEFAULT_MAX_OUTPUT_TOKENS`. Prices
    are standard-tier unless ``service_tier`` is given. An unpriced model gives
    ``cost_usd=None`` rather than an error: estimating must never break the caller's request.

    Raises:
        ConfigurationError: *model* is not a non-empty str; the output bound is not an int
            >= 0; *input* is not a str or list, or *messages*/*tools* not a list.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"estimate() needs model as a non-empty str, got {model!r}")
    body: dict[str, Any] = dict(request_kwargs)
    for key, value, types in (
        ("messages", messages, (list,)),
        ("input", body.get("input"), (str, list)),
        ("tools", body.get("tools"), (list,)),
    ):
        if value is not None and not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigurationError(
                f"estimate() needs {key} as a {expected}, got {type(value).__name__}"
            )
    bound_key = next((key for key in _BOUND_KEYS if body.get(key) is not None), None)
    bound = body[bound_key] if bound_key else None
    if bound_key and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
        raise ConfigurationError(f"estimate() needs {bound_key} as an int >= 0, got {bound!r}")
    if messages is not None:
        body["messages"] = messages
    api = "responses" if messages is None else "chat.completions"
    input_tokens, complete, reasons = count_request_input(api, body, model)
    max_output, from_request = output_bound(api, body)
    cost: Decimal | None = None
    source: str | None = None
    try:
        price = price_of(model, service_tier=body.get("service_tier"))
    except UnknownModelError:
        pass
    else:
        cost = worst_case_usd(price, input_tokens, max_output)
        source = price.source
    return Estimate(
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output,
        output_bound_from_request=from_request,
        cost_usd=cost,
        complete=complete,
        reasons=reasons,
        price_source=source,
    )


def output_bound(api: str, body: Mapping[str, Any]) -> tuple[int, bool]:
    """
    The most output tokens the request can be billed for, and whether the request said so.

    The request's own limit (which includes reasoning tokens, so it is a true worst case), else
    `DEFAULT_MAX_OUTPUT_TOKENS`; embeddings have no output.
    """
    if api == "embeddings":
        return 0, True
    for key in _BOUND_KEYS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value, True
    return DEFAULT_MAX_OUTPUT_TOKENS, False


def worst_case_usd(price: ModelPrice, input_tokens: int, max_output_tokens: int) -> Decimal:
    """
    The most a request can cost: every input token at the dearest input rate (no cache hit is
    assumed, and a cache write can cost more than plain input, e.g. gpt-5.6), plus the whole
    output bound, at the long-context rates when the input crosses their threshold.
    """
    rates = price.for_input(input_tokens)
    input_rate = max(rates.input_per_mtok, rates.cache_write_per_mtok)
    return (input_tokens * input_rate + max_output_tokens * rates.output_per_mtok) / _MILLION


def reserve_usd(
    api: str,
    body: Mapping[str, Any],
    model: str,
    input_tokens: int,
    price_for: Callable[[str | None], ModelPrice | None],
) -> Decimal | None:
    """
    The most the request can be billed, before it is sent; ``None`` when its model is unpriced.

    *price_for(tier)* prices the request's model at a service tier (``None``: standard). Every
    parameter that multiplies billed output counts (Chat ``n``).
    """
    tier = body.get("service_tier")
    price = price_for(tier if isinstance(tier, str) else None)
    if price is None:
        return None
    bound, _ = output_bound(api, body)
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        bound *= n
    with money_math():
        return worst_case_usd(price, input_tokens, bound)
