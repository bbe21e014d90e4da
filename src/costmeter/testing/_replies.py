"""
What the fake answers when a request asks for tools or structured output, so frameworks' tool
loops and structured-output parsers run against it without hand-written replies.

* **Tools**: a request offering function tools whose conversation does not yet end with a tool
  result is answered with one call of the first function tool, its arguments a minimal valid
  instance of the tool's JSON schema. Once the last input item is a tool result
  (``function_call_output`` / a ``tool`` message), the fake answers with text.
* **Structured output** (``text.format`` / ``response_format`` of type ``json_schema``): the
  text answer is a minimal valid JSON instance of the schema.

"Minimal valid": every property present (required or not), the first ``enum``/``const`` value,
``"fake"`` for strings, 1 for numbers, ``true`` for booleans, one item per array, the first
branch of ``anyOf``/``oneOf``, ``$ref`` resolved against ``$defs``/``definitions``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["json_reply", "tool_call"]

_MAX_DEPTH = 8


def _instance(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) and part else target
        return _instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return _instance(branches[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        return {
            name: _instance(sub, root, depth + 1)
            for name, sub in (props.items() if isinstance(props, Mapping) else ())
        }
    if kind == "array":
        return [_instance(schema.get("items", {}), root, depth + 1)]
    return {"string": "fake", "integer": 1, "number": 1.0, "boolean": True}.get(str(kind))


def _schema_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema of a request's structured-output format, if it asks for one."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None  # Responses
    if not isinstance(fmt, Mapping):
        fmt = body.get("response_format")  # Chat
        if isinstance(fmt, Mapping) and isinstance(fmt.get("json_schema"), Mapping):
            fmt = {"type": fmt.get("type"), **fmt["json_schema"]}
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, Mapping) else {}
    return None


def json_reply(body: Mapping[str, Any]) -> str | None:
    """The answer text for a structured-output request, else ``None``."""
    schema = _schema_of(body)
    if schema is None:
        return None
    return json.dumps(_instance(schema, schema), separators=(",", ":"))


def _function_tools(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            continue
        function = tool.get("function")
        spec: Mapping[str, Any] = function if isinstance(function, Mapping) else tool  # Chat
        name = spec.get("name")
        if isinstance(name, str):
            params = spec.get("parameters")
            found.append((name, params if isinstance(params, Mapping) else {}))
    return found


def _answered_a_tool(body: Mapping[str, Any]) -> bool:
    """Whether the conversation ends with a tool result (the model's turn to answer in text)."""
    items = body.get("input") if "input" in body else body.get("messages")
    if not isinstance(items, list) or not items:
        return False
    last = items[-1]
    if not isinstance(last, Mapping):
        return False
    return last.get("type") == "function_call_output" or last.get("role") == "tool"


def tool_call(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` of the tool call the fake makes for *body*, else ``None``."""
    if body.get("tool_choice") == "none" or _answered_a_tool(body):
        return None
    tools = _function_tools(body)
    if not tools:
        return None
    name, params = tools[0]
    return name, json.dumps(_instance(params, params) or {}, separators=(",", ":"))
