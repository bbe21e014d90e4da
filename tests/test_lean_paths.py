"""
The speed paths of issue #16 keep their behaviour: genai-prices' first load leaves the garbage
collector as it found it (and prices exactly), and `field_of`'s per-class memo of "is this a
Mapping" reads dicts, Mapping subclasses, SDK models and plain objects alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from openai.types.responses import ResponseTextDeltaEvent

from costmeter._usage import field_of

# Runs in a fresh interpreter: the genai-prices data must not be loaded yet.
_FIRST_LOAD = """
import gc, json, sys
gc.{toggle}()
from costmeter import price_of
assert "genai_prices.data" not in sys.modules
price = price_of("gpt-4.1-mini")
print(json.dumps({{
    "enabled": gc.isenabled(),
    "loaded": "genai_prices.data" in sys.modules,
    "source": price.source,
    "input": str(price.input_per_mtok),
    "output": str(price.output_per_mtok),
}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("toggle", ["enable", "disable"])
def test_first_genai_prices_load_leaves_the_collector_as_it_was(toggle: str) -> None:
    """The collector is paused only around the first load, and restored as the caller had it."""
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_LOAD.format(toggle=toggle)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    result = json.loads(out)
    # gpt-4.1-mini: $0.40 in / $1.60 out per 1M tokens (OpenAI's pricing page).
    assert {
        "enabled": toggle == "enable",
        "loaded": True,
        "source": "genai-prices",
        "input": "0.4",
        "output": "1.6",
    } == result


class _Record(Mapping[str, Any]):
    """A Mapping that also has a ``__dict__`` (its attributes are not its keys)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.type = "attribute, not a key"

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class _Plain:
    def __init__(self) -> None:
        self.type = "plain"


class _Dict(dict):  # type: ignore[type-arg]
    pass


def test_field_of_reads_each_kind_of_object_repeatedly() -> None:
    """Read twice each (the second read goes through the per-class memo)."""
    event = ResponseTextDeltaEvent(
        type="response.output_text.delta",
        delta="hi",
        item_id="msg_1",
        output_index=0,
        content_index=0,
        sequence_number=3,
        logprobs=[],
    )
    record = _Record({"type": "key"})
    for _ in range(2):
        assert ("response.output_text.delta", "hi", None) == (
            field_of(event, "type"),
            field_of(event, "delta"),
            field_of(event, "usage"),
        )
        assert ("key", None) == (field_of(record, "type"), field_of(record, "data"))
        assert ("plain", None) == (field_of(_Plain(), "type"), field_of(_Plain(), "usage"))
        assert ("d", None) == (field_of(_Dict(type="d"), "type"), field_of(_Dict(), "type"))
        assert (1, None) == (field_of({"a": 1}, "a"), field_of(None, "a"))
