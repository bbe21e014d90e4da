"""
Test helpers: `FakeOpenAI`, a real HTTP server on loopback that answers like the OpenAI API, and
its in-process ``httpx2`` transport (`FakeOpenAI.transport`).

What the fake answers lives apart from how it is carried: `_api` (`FakeAPI`: state, routing,
the two-step receive/answer), `_faults` (the scripted faults), `_usage` (deterministic usage and
the generated-response plan), `_wire` (JSON, SSE, errors, multipart), `_reply` (an answer as
data); then one module per endpoint, each registering its routes with `add_route`
(`_responses`, `_chat`, `_embeddings`, `_completions`, `_images`, `_audio`, `_batches`, `_admin`);
and the two carriers, `_server` (`FakeOpenAI`, HTTP/1.1 on loopback) and `_transport`.
"""

from __future__ import annotations

from costmeter.testing import (  # noqa: F401  (each module registers its routes)
    _audio,
    _batches,
    _completions,
    _images,
)
from costmeter.testing._admin import Bill, BilledCall, bill
from costmeter.testing._api import RecordedRequest
from costmeter.testing._faults import OMIT
from costmeter.testing._realtime import FakeRealtime
from costmeter.testing._routing import ExtraRoute, add_route
from costmeter.testing._server import FakeOpenAI
from costmeter.testing._usage import MODEL_SNAPSHOTS, fake_input_tokens
from costmeter.testing._wire import sse

__all__ = [
    "MODEL_SNAPSHOTS",
    "OMIT",
    "Bill",
    "BilledCall",
    "ExtraRoute",
    "FakeOpenAI",
    "FakeRealtime",
    "RecordedRequest",
    "add_route",
    "bill",
    "fake_input_tokens",
    "sse",
]
