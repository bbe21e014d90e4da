"""
One normalised view of the usage objects OpenAI returns.

Partition rules (OpenAI's, and the reason peers mis-price): ``cached_input_tokens`` and
``cache_write_input_tokens`` are *parts of* ``input_tokens``; ``reasoning_tokens`` are *part of*
``output_tokens``. Nothing is ever added on top. A missing detail object means zero of that part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from costmeter._errors import CostmeterError

__all__ = ["Usage", "UsageError", "field_of", "usage_from"]

_ZERO = Decimal(0)
# Quantities beyond text tokens; events carry them only when non-zero (text events keep their keys).
_EXTRA_QUANTITIES = (
    "image_input_tokens",
    "image_output_tokens",
    "images",
    "audio_seconds",
    "input_characters",
)


class UsageError(CostmeterError, ValueError):
    """A usage object has fields that cannot be billed (negative, non-integer, inconsistent):
    a bad payload, not a bad configuration."""


@dataclass(frozen=True, slots=True)
class Usage:
    """
    Token counts of one billed response, in OpenAI's own partition.

    Attributes:
        input_tokens: All input tokens, including cached reads and cache writes.
        cached_input_tokens: Input tokens read from the prompt cache (subset of input_tokens).
        cache_write_input_tokens: Input tokens written to the cache (subset of input_tokens).
        output_tokens: All output tokens, including reasoning tokens.
        reasoning_tokens: Hidden reasoning tokens (subset of output_tokens; never added twice).
        web_search_calls: Billable web-search tool calls (priced per call, not per token).
        audio_input_tokens: Audio input tokens (subset of input_tokens).
        audio_output_tokens: Audio output tokens (subset of output_tokens).
        image_input_tokens: Image input tokens (subset of input_tokens), at image input rates.
        image_output_tokens: Image output tokens (subset of output_tokens), at image rates.
        images: Images generated, for models priced per image (dall-e-2/3).
        audio_seconds: Audio duration billed by time (whisper-1, duration usage), in seconds.
        input_characters: Input characters, for models priced per character (tts-1).
        file_search_calls: Hosted file-search tool calls (a per-call fee).
        container_sessions: Code interpreter / shell container sessions (a per-session fee).
        image_gen_input_tokens: Tokens read by the image-generation tool (its model's rates).
        image_gen_output_tokens: Tokens written by the image-generation tool.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_calls: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    image_input_tokens: int = 0
    image_output_tokens: int = 0
    images: int = 0
    audio_seconds: Decimal = _ZERO
    input_characters: int = 0
    file_search_calls: int = 0
    container_sessions: int = 0
    image_gen_input_tokens: int = 0
    image_gen_output_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.audio_seconds, Decimal) or not (
            self.audio_seconds.is_finite() and self.audio_seconds >= 0
        ):
            raise UsageError(
                f"usage field audio_seconds must be a Decimal >= 0, got {self.audio_seconds!r}"
            )
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if type(value) is int and value >= 0:
                continue  # the common case, checked cheaply
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"usage field {name} must be an int, got {value!r}")
            if value < 0:
                raise UsageError(f"usage field {name} is negative: {value}")
        if self.cached_input_tokens + self.cache_write_input_tokens > self.input_tokens:
            raise UsageError(
                f"cached ({self.cached_input_tokens}) + cache-write "
                f"({self.cache_write_input_tokens}) tokens exceed input_tokens "
                f"({self.input_tokens}); they are parts of it"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens "
                f"({self.output_tokens}); they are part of it"
            )

    def quantities(self) -> dict[str, int | Decimal]:
        """The non-text billed quantities present (event fields shown only when non-zero)."""
        return {name: getattr(self, name) for name in _EXTRA_QUANTITIES if getattr(self, name)}

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input rate."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_input_tokens


# Whether a class is a `Mapping`, per class: ``isinstance(model, Mapping)`` goes through
# ``ABCMeta.__instancecheck__`` (~0.5 us for an SDK model), and `field_of` runs a few times per
# stream event. Bounded: past the cap a class is checked each time instead of remembered.
_MAPPING_CLASSES: dict[type, bool] = {dict: True}
_MAPPING_CLASSES_MAX = 4096


_COUNT_FIELDS = tuple(name for name in Usage.__slots__ if name != "audio_seconds")


def field_of(obj: Any, key: str) -> Any:
    """
    *key* of a JSON dict or an SDK model; ``None`` when absent — without raising inside
    pydantic: an SDK model's fields are in its ``__dict__`` and extras, so an absent key costs
    two dict lookups instead of a caught ``AttributeError``.
    """
    if obj is None:
        return None
    cls = type(obj)
    mapping = _MAPPING_CLASSES.get(cls)
    if mapping is None:
        mapping = isinstance(obj, Mapping)
        if len(_MAPPING_CLASSES) < _MAPPING_CLASSES_MAX:
            _MAPPING_CLASSES[cls] = mapping
    if mapping:
        return obj.get(key)
    values = getattr(obj, "__dict__", None)
    if values is not None:
        if key in values:
            return values[key]
        extra = getattr(obj, "__pydantic_extra__", None)
        if isinstance(extra, dict):  # an SDK model: fields absent from both are absent
            return extra.get(key)
    return getattr(obj, key, None)


def _count(obj: Any, key: str) -> int:
    value = field_of(obj, key)
    return 0 if value is None else value


#: (input total, its details, output total, its details): the Responses shape, then the Chat
#: Completions / Embeddings one; the details carry the same keys in both.
_USAGE_SHAPES = (
    ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details"),
    ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details"),
)


def usage_from(usage: object, *, web_search_calls: int = 0) -> Usage:
    """
    Normalise a Responses ``ResponseUsage``, a Chat/Embeddings ``CompletionUsage``, or a plain
    dict of either shape into a `Usage`.

    Raises:
        UsageError: the object is not a usage object, or its counts are invalid.
    """
    if isinstance(usage, Usage):
        return usage
    for total_in, in_key, total_out, out_key in _USAGE_SHAPES:
        if field_of(usage, total_in) is None:
            continue
        in_details = field_of(usage, in_key)
        out_details = field_of(usage, out_key)
        return Usage(
            input_tokens=_count(usage, total_in),
            cached_input_tokens=_count(in_details, "cached_tokens"),
            cache_write_input_tokens=_count(in_details, "cache_write_tokens"),
            output_tokens=_count(usage, total_out),
            reasoning_tokens=_count(out_details, "reasoning_tokens"),
            web_search_calls=web_search_calls,
            audio_input_tokens=_count(in_details, "audio_tokens"),
            audio_output_tokens=_count(out_details, "audio_tokens"),
        )
    raise UsageError(
        "not a usage object: expected input_tokens (Responses) or prompt_tokens (Chat), "
        f"got {type(usage).__name__}"
    )
