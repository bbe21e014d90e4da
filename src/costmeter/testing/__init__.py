"""
Test helpers: `FakeOpenAI`, a real HTTP server on loopback that answers like the OpenAI API.

The server core lives in `costmeter.testing._fake`; each further endpoint the fake serves is a
module of this package that registers its routes with `add_route` (imported here, so
``from costmeter.testing import FakeOpenAI`` serves them all).
"""

from __future__ import annotations

from costmeter.testing import (  # noqa: F401  (each module registers its routes)
    _audio,
    _batches,
    _completions,
    _images,
)
from costmeter.testing._admin import Bill, BilledCall, bill
from costmeter.testing._fake import (
    MODEL_SNAPSHOTS,
    OMIT,
    ExtraRoute,
    FakeOpenAI,
    RecordedRequest,
    add_route,
    fake_input_tokens,
    sse,
)
from costmeter.testing._realtime import FakeRealtime

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
