"""
The fake Images API: ``POST /v1/images/generations``, ``/v1/images/edits`` (multipart) and
``/v1/images/variations`` (multipart, dall-e-2), in the SDK's shapes (`openai.types.ImagesResponse`,
`ImageGenPartialImageEvent`/`ImageGenCompletedEvent`, `ImageEditPartialImageEvent`/
`ImageEditCompletedEvent`).

Deterministic usage for GPT Image models (``gpt-image-*``, ``chatgpt-image-*``); each image is
billed as its own request, as the real API does for ``n > 1``:

* text input tokens per image: ``len(prompt) // 4 + 6``;
* image input tokens per image: 194 per uploaded ``image`` file (one 512-px tile of gpt-image-1:
  65 + 129); masks are not counted;
* cached input tokens per image: the ``x-fake-cached-tokens`` header (default 0), reported as
  ``input_tokens_details.cached_tokens``;
* output image tokens per image: the ``x-fake-image-tokens`` header, else 1056 (gpt-image-1's
  medium 1024x1024), plus 100 per partial image streamed;
* output text tokens per image: the ``x-fake-text-tokens`` header (default 0); models after
  gpt-image-1/-1-mini report ``output_tokens_details`` ``{image_tokens, text_tokens}``.

``usage`` sums the images; a stream sends ``partial_images`` partial events and one
``*.completed`` event per image, each with that image's usage. DALL·E models return no usage:
``n`` images as ``url`` (their default) or ``b64_json``; dall-e-3 adds ``revised_prompt``.
Every image is the same 1x1 PNG.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from costmeter.testing._routing import _Call, add_route
from costmeter.testing._wire import JSONDict, _error_body, _int_header

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI
    from costmeter.testing._reply import Reply

__all__ = ["PNG_1X1", "fake_image_usage"]

#: A valid 1x1 transparent PNG, base64-encoded: every image the fake returns.
PNG_1X1: Final = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_TEXT_OVERHEAD: Final = 6
_TOKENS_PER_INPUT_IMAGE: Final = 194
_DEFAULT_IMAGE_TOKENS: Final = 1056
_PARTIAL_IMAGE_TOKENS: Final = 100
_NO_OUTPUT_DETAILS: Final = ("gpt-image-1", "gpt-image-1-mini")


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def _int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return default


def _files(value: Any) -> int:
    """How many uploaded files a multipart field holds (one dict, or a list of them)."""
    if isinstance(value, dict):
        return 1
    if isinstance(value, list):
        return sum(1 for item in value if isinstance(item, dict))
    return 0


def fake_image_usage(
    body: JSONDict, headers: Any, *, images: int = 1, partial_images: int = 0
) -> JSONDict:
    """The ``usage`` the fake reports for *images* images of a GPT Image request *body*."""
    prompt = body.get("prompt")
    text = (len(prompt) if isinstance(prompt, str) else 0) // 4 + _TEXT_OVERHEAD
    image_in = _TOKENS_PER_INPUT_IMAGE * _files(body.get("image"))
    cached = min(_int_header(headers, "x-fake-cached-tokens") or 0, text + image_in)
    image_out = _int_header(headers, "x-fake-image-tokens")
    image_out = (_DEFAULT_IMAGE_TOKENS if image_out is None else image_out) + (
        _PARTIAL_IMAGE_TOKENS * partial_images
    )
    text_out = _int_header(headers, "x-fake-text-tokens") or 0
    input_details: JSONDict = {"image_tokens": images * image_in, "text_tokens": images * text}
    if cached:
        input_details["cached_tokens"] = images * cached
    usage: JSONDict = {
        "input_tokens": images * (text + image_in),
        "input_tokens_details": input_details,
        "output_tokens": images * (image_out + text_out),
        "total_tokens": images * (text + image_in + image_out + text_out),
    }
    if str(body.get("model")) not in _NO_OUTPUT_DETAILS:
        usage["output_tokens_details"] = {
            "image_tokens": images * image_out,
            "text_tokens": images * text_out,
        }
    return usage


def _answer(fake: FakeAPI, reply: Reply, call: _Call, api: str) -> None:
    body = call.body
    model = str(body.get("model") or ("dall-e-2" if api == "variation" else ""))
    if not model:
        reply.send_json(400, _error_body(400, "Missing required parameter: 'model'."))
        return
    if api != "generation" and not _files(body.get("image")):
        reply.send_json(400, _error_body(400, "Missing required parameter: 'image'."))
        return
    n = _int(body.get("n"), 1)
    if not 1 <= n <= 10:
        reply.send_json(400, _error_body(400, f"Invalid 'n': {n}. Must be between 1 and 10."))
        return
    stream = body.get("stream") in (True, "true", "True")
    now = int(time.time())
    if not _is_gpt_image(model):
        if stream:
            reply.send_json(
                400, _error_body(400, "Streaming is only supported for GPT image models.")
            )
            return
        as_b64 = body.get("response_format") == "b64_json"
        data: list[JSONDict] = []
        for index in range(n):
            image: JSONDict = (
                {"b64_json": PNG_1X1} if as_b64 else {"url": f"https://images.fake/{index}.png"}
            )
            if model.startswith("dall-e-3"):
                image["revised_prompt"] = str(body.get("prompt", ""))
            data.append(image)
        fake._finish_body(reply, {"created": now, "data": data}, call.faults)
        return
    quality = str(body.get("quality") or "medium")
    size = str(body.get("size") or "1024x1024")
    shape: JSONDict = {
        "background": "opaque",
        "output_format": str(body.get("output_format") or "png"),
        "quality": "medium" if quality == "auto" else quality,
        "size": "1024x1024" if size == "auto" else size,
    }
    if not stream:
        out: JSONDict = {
            "created": now,
            "data": [{"b64_json": PNG_1X1} for _ in range(n)],
            **shape,
            "usage": fake_image_usage(body, call.headers, images=n),
        }
        fake._finish_body(reply, out, call.faults)
        return
    partials = min(max(_int(body.get("partial_images"), 0), 0), 3)
    prefix = "image_generation" if api == "generation" else "image_edit"
    events: list[JSONDict] = []
    for _ in range(n):
        events.extend(
            {
                "type": f"{prefix}.partial_image",
                "b64_json": PNG_1X1,
                "created_at": now,
                "partial_image_index": index,
                **shape,
            }
            for index in range(partials)
        )
        events.append(
            {
                "type": f"{prefix}.completed",
                "b64_json": PNG_1X1,
                "created_at": now,
                **shape,
                "usage": fake_image_usage(body, call.headers, partial_images=partials),
            }
        )
    fake._finish_stream(reply, events, call.faults)


def _generations(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    _answer(fake, reply, call, "generation")


def _edits(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    _answer(fake, reply, call, "edit")


def _variations(fake: FakeAPI, reply: Reply, call: _Call) -> None:
    _answer(fake, reply, call, "variation")


add_route("POST", r"/v1/images/generations", _generations)
add_route("POST", r"/v1/images/edits", _edits)
add_route("POST", r"/v1/images/variations", _variations)
