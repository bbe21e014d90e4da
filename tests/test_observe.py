"""What a call records from the objects it receives (`costmeter._observe`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from costmeter._observe import TEXT_DELTA_EVENTS, Observation, text_delta_observer


class TestTextDeltaFastPath:
    """`text_delta_observer` takes Responses text deltas without dispatching: it must record
    exactly what `Observation.take` records, and hand anything else to the full path."""

    @pytest.mark.parametrize("kind", sorted(TEXT_DELTA_EVENTS))
    def test_records_what_take_records(self, kind: str) -> None:
        event = SimpleNamespace(type=kind, delta="Hello", item_id="it_1", sequence_number=3)
        by_take, by_fast_path = Observation(), Observation()
        by_take.take(event)
        handed_on: list[Any] = []
        text_delta_observer(by_fast_path, handed_on.append)(event)
        assert by_take.deltas == by_fast_path.deltas == ["Hello"]
        assert handed_on == []

    @pytest.mark.parametrize(
        "event",
        [
            SimpleNamespace(type="response.completed", response=None),
            SimpleNamespace(type="response.audio.delta", delta="AAAA"),  # audio, not text
            SimpleNamespace(type="response.output_text.delta", delta=None),
            SimpleNamespace(type=["unhashable"], delta="x"),  # a broken server's event
            {"type": "response.output_text.delta", "delta": "raw dict"},
        ],
    )
    def test_anything_else_goes_to_the_full_path(self, event: Any) -> None:
        seen = Observation()
        handed_on: list[Any] = []
        text_delta_observer(seen, handed_on.append)(event)
        assert (seen.deltas, handed_on) == ([], [event])
