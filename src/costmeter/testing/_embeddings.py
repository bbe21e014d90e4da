"""
The fake Embeddings API: ``POST /v1/embeddings``, one deterministic vector per input (float
lists, or ``encoding_format="base64"``), 3,072 dimensions for ``*large*`` models and 1,536
otherwise unless ``dimensions`` says; usage as :func:`fake_input_tokens` counts it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import TYPE_CHECKING, Any

from costmeter.testing._routing import _Call, add_model_route
from costmeter.testing._usage import _Plan, put_usage
from costmeter.testing._wire import JSONDict

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI
    from costmeter.testing._reply import Reply


def _vector(seed: str, dims: int) -> list[float]:
    """A deterministic unit-ish vector for *seed*; cheap, not meaningful."""
    digest = hashlib.sha256(seed.encode()).digest()
    return [((digest[i % 32] + i) % 256) / 255.0 - 0.5 for i in range(dims)]


def _create(fake: FakeAPI, reply: Reply, call: _Call, plan: _Plan) -> None:
    body = call.body
    raw = body.get("input")
    items: list[Any] = raw if isinstance(raw, list) else [raw]
    if items and all(isinstance(x, int) for x in items):
        items = [items]
    model = str(body.get("model"))
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims < 1:
        dims = 3072 if "large" in model else 1536
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector = _vector(json.dumps(item), dims)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    out: JSONDict = {"object": "list", "data": data, "model": model, "usage": None}
    usage = {"prompt_tokens": plan.input_tokens, "total_tokens": plan.input_tokens}
    put_usage(out, usage, plan.usage_fault)
    if plan.drop_model:
        out.pop("model")
    fake._finish_body(reply, out, call.faults)


add_model_route(r"/v1/embeddings", "embeddings", "emb-", _create)
