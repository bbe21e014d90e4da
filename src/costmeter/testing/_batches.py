"""
Files and batches on the fake server.

* ``POST /v1/files`` (multipart ``file`` + ``purpose``) stores the upload and answers a
  ``FileObject`` (``openai/types/file_object.py``); ``GET /v1/files/{id}/content`` returns it.
* ``POST /v1/batches`` answers a ``validating`` ``Batch`` (``openai/types/batch.py``) for an
  uploaded ``purpose="batch"`` file; each ``GET /v1/batches/{id}`` poll moves it on:
  ``in_progress`` for the server's ``background_polls`` polls, then ``completed``.
  ``POST /v1/batches/{id}/cancel`` cancels one that has not completed (nothing ran: zero usage).
* A completed batch has an output file (JSONL, one line per request: ``{"id", "custom_id",
  "response": {"status_code": 200, "request_id", "body": <the endpoint's response, with
  usage>}, "error": null}``) and ``usage`` in the ``BatchUsage`` shape: the lines' usage summed.

Each line is answered as the fake answers that endpoint directly (same deterministic token
counts: see `costmeter.testing._fake` and `costmeter.testing._completions`), with the headers of
the ``batches.create`` request as knobs (``x-fake-output-tokens``, ...). The header
``x-fake-batch-omit: usage,model`` (either or both) leaves ``usage``/``model`` off the batch,
like batches created before September 2025.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from costmeter.testing._api import FakeAPI
from costmeter.testing._chat import chat_body
from costmeter.testing._completions import completion_prompt_tokens, completion_usage
from costmeter.testing._reply import Reply
from costmeter.testing._responses import final_response
from costmeter.testing._routing import _Call, add_route
from costmeter.testing._usage import _new_id, fake_input_tokens
from costmeter.testing._wire import _error_body

__all__ = ["batch_line_usage"]

_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class _Batch:
    body: dict[str, Any]
    id: str
    created: int
    input_file_id: str
    headers: dict[str, str]
    omit: frozenset[str]
    status: str = "validating"
    polls: int = 0
    output_file_id: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    lines: int = 0


@dataclass
class _Files:
    """One server's uploaded files and batches."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)


def _files(fake: FakeAPI) -> _Files:
    """*fake*'s files and batches (kept as long as the fake, across `FakeAPI.reset`)."""
    return fake._state_of(_Files)


def _file_object(file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _upload(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    upload = call.body.get("file")
    purpose = call.body.get("purpose")
    if not isinstance(upload, Mapping) or not isinstance(purpose, str):
        reply.send_json(400, _error_body(400, "Missing required parameters: 'file' and 'purpose'."))
        return
    data = upload.get("data", b"")
    file_id = _new_id("file-", 12)
    obj = _file_object(file_id, str(upload.get("filename") or "upload"), len(data), purpose)
    store = _files(fake)
    with store.lock:
        store.files[file_id] = (obj, data)
    reply.send_json(200, obj)


def _stored(reply: Reply, table: Mapping[str, Any], key: str, kind: str, store: _Files) -> Any:
    """The stored object, or ``None`` after answering 404 like the API."""
    with store.lock:
        found = table.get(key)
    if found is None:
        reply.send_json(404, _error_body(404, f"No such {kind} object: {key}"))
    return found


def _content(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    store = _files(fake)
    found = _stored(reply, store.files, call.path.split("/")[3], "File", store)
    if found is not None:
        reply.send_raw(200, found[1], "application/octet-stream")


def batch_line_usage(
    fake: FakeAPI, url: str, body: dict[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The response body the fake gives one batch line, and its usage in the ``BatchUsage`` shape.
    """
    if url == "/v1/completions":
        usage = completion_usage(fake, body, headers)
        response: dict[str, Any] = {
            "id": _new_id("cmpl-", 12),
            "object": "text_completion",
            "model": body.get("model"),
            "choices": [],
            "usage": usage,
        }
        prompt, output = completion_prompt_tokens(body), usage["completion_tokens"]
        return response, _batch_usage(prompt, 0, output, 0)
    if url == "/v1/embeddings":
        tokens = fake_input_tokens(body, "embeddings")
        response = {
            "object": "list",
            "data": [],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return response, _batch_usage(tokens, 0, 0, 0)
    if url == "/v1/chat/completions":
        plan = fake._plan("chat.completions", body, headers, "chatcmpl-")
        response = chat_body(plan)
    else:
        plan = fake._plan("responses", body, headers, "resp_")
        response = final_response(plan, plan.status)
    n = max(1, int(body.get("n") or 1)) if url == "/v1/chat/completions" else 1
    return response, _batch_usage(
        plan.input_tokens, plan.cached, (plan.reasoning + plan.visible) * n, plan.reasoning * n
    )


def _batch_usage(inp: int, cached: int, out: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def _run(fake: FakeAPI, store: _Files, batch: _Batch) -> None:
    """Answer every line of the batch's input file: its output file and summed usage."""
    with store.lock:
        _obj, data = store.files[batch.input_file_id]
    out_lines: list[bytes] = []
    totals = _batch_usage(0, 0, 0, 0)
    for raw in data.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        response, usage = batch_line_usage(fake, line["url"], line["body"], batch.headers)
        batch.model = batch.model or response.get("model")
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            totals[key] += usage[key]
        for part, key in (("input", "cached_tokens"), ("output", "reasoning_tokens")):
            totals[f"{part}_tokens_details"][key] += usage[f"{part}_tokens_details"][key]
        result = {
            "id": _new_id("batch_req_", 12),
            "custom_id": line.get("custom_id"),
            "response": {
                "status_code": 200,
                "request_id": _new_id("req_", 16),
                "body": response,
            },
            "error": None,
        }
        out_lines.append(json.dumps(result, separators=(",", ":")).encode())
        batch.lines += 1
    content = b"\n".join(out_lines) + b"\n"
    file_id = _new_id("file-", 12)
    obj = _file_object(file_id, "batch_output.jsonl", len(content), "batch_output")
    with store.lock:
        store.files[file_id] = (obj, content)
    batch.output_file_id = file_id
    batch.usage = totals


def _batch_object(batch: _Batch) -> dict[str, Any]:
    now = int(time.time())
    done = batch.status == "completed"
    out: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.body.get("endpoint"),
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.body.get("completion_window", "24h"),
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": None,
        "created_at": batch.created,
        "in_progress_at": now if batch.status != "validating" else None,
        "expires_at": batch.created + 86_400,
        "completed_at": now if done else None,
        "cancelled_at": now if batch.status == "cancelled" else None,
        "request_counts": {
            "total": batch.lines,
            "completed": batch.lines if done else 0,
            "failed": 0,
        },
        "metadata": batch.body.get("metadata"),
        "model": batch.model,
        "usage": batch.usage,
    }
    if batch.status not in _TERMINAL or "usage" in batch.omit:
        out.pop("usage")
    if "model" in batch.omit:
        out.pop("model")
    return out


def _create(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    body = call.body
    file_id = body.get("input_file_id")
    store = _files(fake)
    with store.lock:
        found = store.files.get(file_id) if isinstance(file_id, str) else None
    if not isinstance(file_id, str) or found is None or found[0]["purpose"] != "batch":
        reply.send_json(400, _error_body(400, f"Invalid 'input_file_id': {file_id!r}."))
        return
    omit = frozenset(
        p.strip() for p in call.headers.get("x-fake-batch-omit", "").split(",") if p.strip()
    )
    batch = _Batch(
        body=dict(body),
        id=_new_id("batch_", 12),
        created=int(time.time()),
        input_file_id=file_id,
        headers=dict(call.headers),
        omit=omit,
    )
    with store.lock:
        store.batches[batch.id] = batch
    reply.send_json(200, _batch_object(batch))


def _by_id(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    parts = call.path.split("/")
    batch_id, cancel = parts[3], len(parts) > 4
    store = _files(fake)
    batch = _stored(reply, store.batches, batch_id, "Batch", store)
    if batch is None:
        return
    with store.lock:  # re-entrant: `_run` stores the output file under it too
        if cancel:
            if batch.status not in _TERMINAL:
                batch.status = "cancelled"
                batch.usage = _batch_usage(0, 0, 0, 0)
        elif batch.status not in _TERMINAL:
            batch.polls += 1
            if batch.polls > fake.background_polls:
                batch.status = "completed"
                _run(fake, store, batch)
            else:
                batch.status = "in_progress"
        out = _batch_object(batch)
    reply.send_json(200, out)


add_route("POST", r"/v1/files", _upload, billed=False)
add_route("GET", r"/v1/files/[^/]+/content", _content, billed=False)
add_route("POST", r"/v1/batches", _create)
add_route("GET", r"/v1/batches/[^/]+", _by_id, billed=False)
add_route("POST", r"/v1/batches/[^/]+/cancel", _by_id, billed=False)
