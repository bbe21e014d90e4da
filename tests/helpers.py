"""Payload builders for tests: realistic Responses/Chat bodies and SSE streams."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

BASE_URL = "https://api.openai.test/v1"


def response_body(
    *,
    response_id: str = "resp_abc123",
    model: str = "gpt-5-mini-2025-08-07",
    input_tokens: int = 120,
    cached: int = 0,
    output_tokens: int = 30,
    reasoning: int = 10,
    status: str = "completed",
    service_tier: str | None = "default",
    background: bool = False,
    usage: bool = True,
    text: str = "Hello!",
) -> dict[str, Any]:
    """A Responses API ``Response`` object as the API returns it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1_760_000_000,
        "status": status,
        "background": background,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "service_tier": service_tier,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        }
        if usage
        else None,
    }


def response_events(body: dict[str, Any], deltas: list[str] | None = None) -> list[dict[str, Any]]:
    """The SSE event sequence of a streamed response ending in *body*'s status."""
    started = {**body, "status": "in_progress", "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for delta in deltas if deltas is not None else ["Hel", "lo", "!"]:
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }
        )
    events.append({"type": f"response.{body['status']}", "response": body})
    return [{**event, "sequence_number": i} for i, event in enumerate(events)]


def sse(events: list[dict[str, Any]], *, done: bool = False) -> bytes:
    """Encode events as a ``text/event-stream`` body."""
    parts = []
    for event in events:
        kind = event.get("type")
        prefix = f"event: {kind}\n" if kind else ""
        parts.append(f"{prefix}data: {json.dumps(event)}\n\n")
    if done:
        parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def chat_body(
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    prompt: int = 50,
    completion: int = 12,
    cached: int = 0,
) -> dict[str, Any]:
    """A Chat Completions response."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": model,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hi there"},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def money(value: float | None) -> Decimal | None:
    """Read an event's money field back as the exact Decimal it renders."""
    return None if value is None else Decimal(repr(value))


def calls(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``costmeter.call`` events among captured logs."""
    return [entry for entry in logs if entry["event"] == "costmeter.call"]
