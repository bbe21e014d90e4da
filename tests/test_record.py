"""The ``costmeter.call`` schema is defined once (`costmeter._record`); the README's table is it."""

from __future__ import annotations

import re
from pathlib import Path

from costmeter._record import CallRecord, schema

README = Path(__file__).parent.parent / "README.md"


def _readme_rows() -> list[tuple[str, str, str]]:
    text = README.read_text()
    table = text.split("### The `costmeter.call` event", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+?) \| (.+) \|$", table, re.M)
    return [(key, kind, doc) for key, kind, doc in rows]


def test_readme_table_is_the_schema() -> None:
    """Every field, in order, with its type and meaning, exactly as `CallRecord` defines it."""
    assert list(schema()) == _readme_rows()


def test_group_fields_appear_together_or_not_at_all() -> None:
    """A text call's event has no audio/image/budget keys; a budgeted one has all budget keys."""
    plain = CallRecord(api="responses").as_event(lambda v: v)
    budgeted = CallRecord(api="responses", budget="b").as_event(lambda v: v)

    assert not {"audio_input_tokens", "images", "budget", "charged_usd"} & set(plain)
    assert {"budget", "budget_spent_usd", "budget_remaining_usd", "charged_usd"} <= set(budgeted)
    assert budgeted["charged_usd"] is None
