"""
What the fake's requests and answers look like as bytes: JSON bodies, SSE framing, the API's
error shape, ``multipart/form-data`` uploads and the path spellings the SDK may use.

Shared by the API semantics (which build bodies) and both ways of carrying them (the loopback
HTTP server and the in-process transport), so they frame everything the same way.
"""

from __future__ import annotations

import email.policy
import json
from collections.abc import Iterable, Mapping, Sequence
from email.parser import BytesParser
from typing import Any, Final

__all__ = ["JSONDict", "sse"]

JSONDict = dict[str, Any]

_ERROR_TYPES: Final[Mapping[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error_body(status: int, message: str | None = None, code: str | None = None) -> JSONDict:
    """The API's ``{"error": {...}}`` body for *status*, so the SDK raises its typed error."""
    kind, default_code, default_message = _ERROR_TYPES.get(
        status,
        ("server_error", None, "The server had an error while processing your request. Sorry!"),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def sse(events: Iterable[Mapping[str, Any]], *, done: bool | None = None) -> bytes:
    """
    Encode payloads as a ``text/event-stream`` body the way the API frames them.

    Responses events get an ``event: <type>`` line; Chat chunks (``object ==
    "chat.completion.chunk"``) are ``data:`` only, and the stream ends with ``data: [DONE]``
    unless *done* says otherwise, because that is the difference the SDK's decoder relies on.
    """
    return b"".join(_sse_frames(list(events), done=done))


def _sse_frames(events: Sequence[Mapping[str, Any]], *, done: bool | None) -> list[bytes]:
    frames = []
    any_chat = False
    for event in events:
        data = _dumps(event)
        kind = event.get("type")
        if event.get("object") == "chat.completion.chunk":
            any_chat = True
            frames.append(b"data: " + data + b"\n\n")
        elif isinstance(kind, str):
            frames.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")
        else:
            frames.append(b"data: " + data + b"\n\n")
    if done if done is not None else any_chat:
        frames.append(b"data: [DONE]\n\n")
    return frames


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A non-negative integer knob from a request header (``x-fake-*``); junk reads as unset."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def _multipart(raw: bytes, content_type: str) -> JSONDict:
    """
    A ``multipart/form-data`` body as a dict: text fields as ``str`` (repeated fields such as
    ``image[]`` as lists), files as ``{"filename": ..., "content_type": ..., "data": bytes}``.
    """
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    out: JSONDict = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: Any
        if filename is not None:
            value = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "data": data,
            }
        else:
            value = data.decode("utf-8", "replace")
        key = name.removesuffix("[]")
        if key in out or name.endswith("[]"):
            previous = out.get(key, [])
            out[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            out[key] = value
    return out


def _parse_body(raw: bytes, content_type: str) -> tuple[JSONDict | None, bool]:
    """The request body as a dict (JSON object or multipart form) and whether it was bad JSON."""
    if not raw:
        return None, False
    if content_type.startswith("multipart/form-data"):
        return _multipart(raw, content_type), False
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None, True
    if isinstance(parsed, dict):
        return parsed, False
    return None, True


def _normalize(path: str) -> str:
    """Map Azure-style and unversioned paths onto the ``/v1`` routes."""
    if path.startswith("/openai/deployments/"):
        _, _, rest = path[len("/openai/deployments/") :].partition("/")
        return "/v1/" + rest
    if path.startswith("/openai/v1/"):
        return path[len("/openai") :]
    if path.startswith("/openai/"):
        return "/v1/" + path[len("/openai/") :]
    if not path.startswith("/v1/"):
        return "/v1" + path
    return path
