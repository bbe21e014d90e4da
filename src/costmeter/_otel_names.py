"""
OpenTelemetry GenAI semantic names for the ``costmeter.call`` event: a structlog processor.
"""

from __future__ import annotations

from collections.abc import Mapping

from structlog.typing import EventDict, WrappedLogger

from costmeter._events import CALL
from costmeter._record import OTEL_NAMES
from costmeter._record import schema as record_schema

__all__ = ["otel_genai_keys"]


_OTEL_RENAMES = OTEL_NAMES  # the record's OTel names (`costmeter._record`)
_OTEL_API_TYPES = {
    "responses": "responses",
    "responses.compact": "responses",
    "chat.completions": "chat_completions",
    "embeddings": "embeddings",
}
# Every other key of the costmeter.call record (`costmeter._record.CallRecord`) is prefixed with
# "costmeter.": derived from the record, so a new field gets its OTel name without an edit here.
_COSTMETER_KEYS = frozenset(
    name for name, _kind, _doc in record_schema() if name not in _OTEL_RENAMES and name != "tags"
)


def otel_genai_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """
    structlog processor: rename ``costmeter.call`` keys to OpenTelemetry GenAI semantic names.

    Token counts, models, response id and served tier get their ``gen_ai.*``/``openai.*`` names;
    ``gen_ai.provider.name`` (``openai``), ``gen_ai.operation.name`` (``chat`` or
    ``embeddings``), ``openai.api.type`` and the cost triple ``gen_ai.usage.cost.amount`` /
    ``.currency`` (``USD``) / ``.source`` (``local``) are added; a non-null ``error_type`` is also
    ``error.type``. The other costmeter keys move under ``costmeter.*`` (``tags`` are flattened
    to ``costmeter.tags.<key>``); keys costmeter did not put there (``event``, ``timestamp``,
    the app's own context) are left as they are. Other events pass through untouched.
    """
    if event_dict.get("event") != CALL:
        return event_dict
    out: EventDict = {}
    api = event_dict.get("api")
    for key, value in event_dict.items():
        renamed = _OTEL_RENAMES.get(key)
        if renamed is not None:
            out[renamed] = value
        elif key == "tags" and isinstance(value, Mapping):
            for tag, tag_value in value.items():
                out[f"costmeter.tags.{tag}"] = tag_value
        elif key in _COSTMETER_KEYS:
            out[f"costmeter.{key}"] = value
        else:
            out[key] = value
    out["gen_ai.provider.name"] = "openai"
    out["gen_ai.operation.name"] = "embeddings" if api == "embeddings" else "chat"
    if isinstance(api, str):
        out["openai.api.type"] = _OTEL_API_TYPES.get(api, api)
    if "gen_ai.usage.cost.amount" in out:
        out["gen_ai.usage.cost.currency"] = "USD"
        out["gen_ai.usage.cost.source"] = "local"
    if event_dict.get("error_type") is not None:
        out["error.type"] = event_dict["error_type"]
    return out
