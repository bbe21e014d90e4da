"""
The fake Chat Completions API: ``POST /v1/chat/completions``, plain and streamed (usage in a
last chunk when ``stream_options.include_usage`` is set), ``n`` choices each billed, tool calls
and structured output (see ``costmeter.testing._replies``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costmeter.testing._routing import _Call, add_model_route
from costmeter.testing._usage import _Plan
from costmeter.testing._wire import JSONDict

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI
    from costmeter.testing._reply import Reply

__all__ = ["chat_body"]


def _finish_reason(plan: _Plan) -> str:
    if plan.tool is not None:
        return "tool_calls"
    return "length" if plan.status == "incomplete" else "stop"


def _tool_calls(plan: _Plan) -> list[JSONDict] | None:
    if plan.tool is None:
        return None
    name, arguments = plan.tool
    call_id = "call_" + plan.rid[-24:]
    return [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]


def chat_body(plan: _Plan) -> JSONDict:
    """The ``ChatCompletion`` of *plan*, with the usage it reports."""
    message: JSONDict = {
        "role": "assistant",
        "content": None if plan.tool is not None else "".join(plan.deltas),
        "refusal": None,
        "annotations": [],
    }
    if plan.tool is not None:
        message["tool_calls"] = _tool_calls(plan)
    body: JSONDict = {
        "id": plan.rid,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "choices": [
            {
                "index": i,
                "message": dict(message),
                "logprobs": None,
                "finish_reason": _finish_reason(plan),
            }
            for i in range(plan.choices)
        ],
        "usage": None,
        "service_tier": plan.service_tier,
        "system_fingerprint": "fp_fake",
    }
    plan.put_usage(body)
    if plan.drop_model:
        body.pop("model", None)
    return body


def _chunks(plan: _Plan) -> list[JSONDict]:
    """The ``ChatCompletionChunk`` payloads of a streamed *plan*."""
    finish = _finish_reason(plan)
    n = plan.choices
    options = plan.request.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base: JSONDict = {
        "id": plan.rid,
        "object": "chat.completion.chunk",
        "created": plan.created,
        "model": plan.model,
        "service_tier": plan.service_tier,
        "system_fingerprint": "fp_fake",
    }
    if plan.drop_model:
        base.pop("model")

    def chunk(choices: list[JSONDict]) -> JSONDict:
        out = {**base, "choices": choices}
        if include_usage:
            out["usage"] = None
        return out

    def choice(i: int, delta: JSONDict, reason: str | None = None) -> JSONDict:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}

    chunks = [
        chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})]) for i in range(n)
    ]
    for delta in plan.deltas:
        chunks.extend(chunk([choice(i, {"content": delta})]) for i in range(n))
    for call in _tool_calls(plan) or ():
        tool_delta = {"tool_calls": [{"index": 0, **call}]}
        chunks.extend(chunk([choice(i, tool_delta)]) for i in range(n))
    chunks.extend(chunk([choice(i, {}, finish)]) for i in range(n))
    if include_usage:
        last = {**base, "choices": [], "usage": None}
        plan.put_usage(last)
        chunks.append(last)
    return chunks


def _create(fake: FakeAPI, reply: Reply, call: _Call, plan: _Plan) -> None:
    if call.body.get("stream"):
        fake._finish_stream(reply, _chunks(plan), call.faults)
    else:
        fake._finish_body(reply, chat_body(plan), call.faults)


add_model_route(r"/v1/chat/completions", "chat.completions", "chatcmpl-", _create)
