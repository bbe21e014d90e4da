"""
The fake Responses API: ``POST /v1/responses`` (plain, ``stream``, ``background``),
``GET|DELETE /v1/responses/{id}`` (``?stream=true&starting_after=N`` replays stored events),
``POST /v1/responses/{id}/cancel``, ``GET /v1/responses/{id}/input_items``,
``POST /v1/responses/compact`` and ``POST /v1/responses/input_tokens``, in the SDK's shapes
(`openai.types.responses.Response` and its stream events).

A background response answers ``in_progress`` to the first ``background_polls`` polls, then its
final state; a stored response is kept until deleted or pushed out by ``max_stored`` newer ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from costmeter.testing._routing import _Call, add_model_route, add_route
from costmeter.testing._usage import _Plan, fake_input_tokens
from costmeter.testing._wire import JSONDict, _error_body

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI
    from costmeter.testing._reply import Reply

_TERMINAL: Final = frozenset({"completed", "incomplete", "failed", "cancelled"})
_FINAL: Final = ("completed", "incomplete", "failed")

# ----------------------------------------------------------------------------------- rendering


def _response(plan: _Plan, state: str) -> JSONDict:
    """The ``Response`` object of *plan* as seen in lifecycle *state* (usage not yet set)."""
    req = plan.request
    final = state in _FINAL
    reasoning = req.get("reasoning") if isinstance(req.get("reasoning"), dict) else {}
    text_cfg = req.get("text") if isinstance(req.get("text"), dict) else {}
    obj: JSONDict = {
        "id": plan.rid,
        "object": "response",
        "created_at": plan.created,
        "status": state,
        "background": plan.background,
        "completed_at": plan.created + 1 if state == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": req.get("max_tool_calls"),
        "model": plan.model,
        "output": _output(plan, state) if final else [],
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": req.get("previous_response_id"),
        "prompt_cache_key": req.get("prompt_cache_key"),
        "prompt_cache_retention": req.get("prompt_cache_retention"),
        "reasoning": {
            "effort": plan.effort,
            "summary": (reasoning or {}).get("summary"),
        },
        "safety_identifier": req.get("safety_identifier"),
        "service_tier": plan.service_tier,
        "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(text_cfg or {})},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_logprobs": req.get("top_logprobs", 0),
        "top_p": req.get("top_p", 1.0),
        "truncation": req.get("truncation", "disabled"),
        "usage": None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }
    if state == "incomplete":
        obj["incomplete_details"] = {"reason": "max_output_tokens"}
    elif state == "failed":
        obj["error"] = {
            "code": "server_error",
            "message": "The model failed to generate a response.",
        }
    if plan.drop_model:
        obj.pop("model", None)
    return obj


def final_response(plan: _Plan, state: str) -> JSONDict:
    """The ``Response`` in *state*, with the usage it reports once final."""
    obj = _response(plan, state)
    if state in _FINAL:
        plan.put_usage(obj)
    return obj


def _reasoning_item(plan: _Plan) -> JSONDict:
    return {"id": plan.item_ids[0], "type": "reasoning", "summary": []}


def _message_item(plan: _Plan, state: str, text: str | None) -> JSONDict:
    content = (
        [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
        if text is not None
        else []
    )
    return {
        "id": plan.item_ids[1],
        "type": "message",
        "status": state,
        "content": content,
        "role": "assistant",
    }


def _function_call_item(plan: _Plan, state: str) -> JSONDict:
    assert plan.tool is not None
    name, arguments = plan.tool
    suffix = plan.rid[-24:]
    return {
        "id": "fc_" + suffix,
        "type": "function_call",
        "call_id": "call_" + suffix,
        "name": name,
        "arguments": arguments,
        "status": state,
    }


def _output(plan: _Plan, state: str) -> list[JSONDict]:
    items = [_reasoning_item(plan)] if plan.effort is not None else []
    item_state = "incomplete" if state == "incomplete" else "completed"
    if plan.tool is not None:
        items.append(_function_call_item(plan, item_state))
    else:
        items.append(_message_item(plan, item_state, "".join(plan.deltas)))
    return items


def _tool_events(plan: _Plan, index: int) -> list[JSONDict]:
    done = _function_call_item(plan, "completed")
    added = {**done, "arguments": "", "status": "in_progress"}
    where = {"item_id": done["id"], "output_index": index}
    return [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        {"type": "response.function_call_arguments.delta", **where, "delta": done["arguments"]},
        {"type": "response.function_call_arguments.done", **where, "arguments": done["arguments"]},
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]


def _text_events(plan: _Plan, index: int, terminal: str) -> list[JSONDict]:
    text = "".join(plan.deltas)
    empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    where = {"item_id": plan.item_ids[1], "output_index": index, "content_index": 0}
    item_state = "incomplete" if terminal == "incomplete" else "completed"
    return [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": _message_item(plan, "in_progress", None),
        },
        {"type": "response.content_part.added", **where, "part": empty_part},
        *(
            {"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []}
            for delta in plan.deltas
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**empty_part, "text": text}},
        {
            "type": "response.output_item.done",
            "output_index": index,
            "item": _message_item(plan, item_state, text),
        },
    ]


def response_events(plan: _Plan, terminal: str) -> list[JSONDict]:
    """The realistic SSE event sequence of a streamed response ending in *terminal*."""
    start = _response(plan, "queued" if plan.background else "in_progress")
    events: list[JSONDict] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": {**start, "status": "in_progress"}},
    ]
    index = 0
    if plan.effort is not None:
        item = _reasoning_item(plan)
        events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        index = 1
    if plan.tool is not None:
        events.extend(_tool_events(plan, index))
    else:
        events.extend(_text_events(plan, index, terminal))
    events.append({"type": f"response.{terminal}", "response": final_response(plan, terminal)})
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
    return events


def _input_items(plan: _Plan) -> list[JSONDict]:
    """The request's input as stored input items (stable ids derived from the response id)."""
    raw = plan.request.get("input")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items: list[JSONDict] = []
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(entry, dict):
            continue
        item = dict(entry)
        item.setdefault("type", "message")
        item.setdefault("id", f"msg_{plan.rid[5:33]}{index:04x}")
        if item["type"] == "message":
            item.setdefault("status", "completed")
            content = item.get("content")
            if isinstance(content, str):
                kind = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": kind, "text": content}]
        items.append(item)
    return items


# -------------------------------------------------------------------------------------- routes


def _create(fake: FakeAPI, reply: Reply, call: _Call, plan: _Plan) -> None:
    faults = call.faults
    terminal = plan.status
    if faults.stream is not None and faults.stream.kind == "end_with":
        terminal = str(faults.stream.params["status"])
        plan.status = terminal
    if call.body.get("stream"):
        plan.state = terminal
        fake._store(plan)
        fake._finish_stream(reply, response_events(plan, terminal), faults)
        return
    if plan.background:
        plan.state = "queued"
        fake._store(plan)
        fake._finish_body(reply, _response(plan, "queued"), faults)
        return
    plan.state = terminal
    fake._store(plan)
    fake._finish_body(reply, final_response(plan, terminal), faults)


def _compact(fake: FakeAPI, reply: Reply, call: _Call, plan: _Plan) -> None:
    items = [i for i in _input_items(plan) if i.get("role") == "user"]
    items.append(
        {
            "id": "cmp_" + plan.rid[5:],
            "type": "compaction",
            "encrypted_content": "gAAAAB" + hashlib.sha256(plan.rid.encode()).hexdigest(),
        }
    )
    out: JSONDict = {
        "id": plan.rid,
        "object": "response.compaction",
        "created_at": plan.created,
        "output": items,
    }
    plan.put_usage(out)
    fake._finish_body(reply, out, call.faults)


def _input_tokens(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    count = fake_input_tokens(call.body, "responses")
    reply.send_json(200, {"object": "response.input_tokens", "input_tokens": count})


def _list_page(items: list[JSONDict]) -> JSONDict:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


def _by_id(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    method, path, query, faults = call.method, call.path, call.query, call.faults
    rid, _, action = path[len("/v1/responses/") :].partition("/")
    with fake._lock:
        plan = fake._stored.get(rid)
    if plan is None:
        reply.send_json(404, _error_body(404, f"Response with id '{rid}' not found."))
    elif method == "DELETE" and not action:
        with fake._lock:
            fake._stored.pop(rid, None)
        reply.send_json(200, {"id": rid, "object": "response.deleted", "deleted": True})
    elif method == "POST" and action == "cancel":
        if not plan.background:
            reply.send_json(400, _error_body(400, "Only background responses can be cancelled."))
            return
        with fake._lock:
            if plan.state not in _TERMINAL:
                plan.state = "cancelled"
            state = plan.state
        fake._finish_body(reply, final_response(plan, state), faults)
    elif method == "GET" and action == "input_items":
        items = _input_items(plan)
        if query.get("order", "desc") == "desc":
            items.reverse()
        reply.send_json(200, _list_page(items))
    elif method == "GET" and not action and query.get("stream") == "true":
        fake._finish_stream(reply, _replayed_events(fake, plan, query), faults)
    elif method == "GET" and not action:
        fake._finish_body(reply, final_response(plan, _poll(fake, plan)), faults)
    else:
        reply.send_json(404, _error_body(404, f"Invalid URL ({method} {path})"))


def _replayed_events(fake: FakeAPI, plan: _Plan, query: Mapping[str, str]) -> list[JSONDict]:
    """A stored response's events after ``starting_after`` (streaming it completes it)."""
    with fake._lock:
        if plan.state not in _TERMINAL:
            plan.state = plan.status
        terminal = plan.state
    after = int(query.get("starting_after", "-1"))
    events = response_events(plan, "completed" if terminal == "cancelled" else terminal)
    if terminal == "cancelled":
        # A cancelled response never produced output: only its opening events exist.
        events = events[:2]
    return [e for e in events if e["sequence_number"] > after]


def _poll(fake: FakeAPI, plan: _Plan) -> str:
    """The state a ``GET`` sees: a background response completes after enough polls."""
    with fake._lock:
        if plan.state in ("queued", "in_progress"):
            plan.polls += 1
            plan.state = "in_progress" if plan.polls <= fake.background_polls else plan.status
        return plan.state


# Registration order matters: the fixed paths before the ``{id}`` pattern.
add_model_route(r"/v1/responses", "responses", "resp_", _create)
add_model_route(r"/v1/responses/compact", "responses", "resp_", _compact)
add_route("POST", r"/v1/responses/input_tokens", _input_tokens, billed=False)
for _method in ("GET", "POST", "DELETE"):
    add_route(_method, r"/v1/responses/.+", _by_id, billed=False)
