"""
Plugged-in price sources (`costmeter.add_price_source`): where they stand in the precedence,
what a metered call is charged with one, and the errors a bad source gets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter import ConfigurationError, PricingError, UnknownModelError
from costmeter.testing import FakeOpenAI


class Table:
    """An in-house price list: the shape a gateway or a database would answer with."""

    def __init__(self, name: str, prices: Mapping[str, Mapping[str, object]]) -> None:
        self.name = name
        self.table = prices
        self.asked: list[str] = []

    def prices(self, model: str) -> Mapping[str, object] | None:
        self.asked.append(model)
        return self.table.get(model)


@pytest.fixture
def plugged() -> Iterator[list[object]]:
    """Removes whatever a test plugged in."""
    removers: list[object] = []
    yield removers
    for remove in removers:
        remove()  # type: ignore[operator]


def test_a_model_only_the_source_knows_is_priced_and_metered(
    plugged: list[object], fake: FakeOpenAI
) -> None:
    source = Table("acme-gateway", {"acme-llm-1": {"input": "2", "output": "8"}})
    plugged.append(costmeter.add_price_source(source))

    price = costmeter.price_of("openai/ACME-LLM-1")
    assert ("acme-gateway", Decimal(2), Decimal(8)) == (
        price.source,
        price.input_per_mtok,
        price.output_per_mtok,
    )
    client = costmeter.OpenAI(api_key="k", base_url=fake.base_url, max_retries=0)
    with capture_logs() as logs, costmeter.budget("1", name="acme") as budget:
        client.responses.create(
            model="acme-llm-1",
            input="hi",
            max_output_tokens=100,
            extra_headers={"x-fake-input-tokens": "1000", "x-fake-output-tokens": "100"},
        )
    [event] = [e for e in logs if e["event"] == "costmeter.call"]
    expected = Decimal("0.0028")  # 1000 x $2/1M + 100 x $8/1M
    assert (expected, expected) == (Decimal(str(event["cost_usd"])), budget.spent_usd)


def test_precedence_code_then_sources_in_order_then_bundled(plugged: list[object]) -> None:
    first = Table("first", {"gpt-4.1-mini": {"input": "1", "output": "1"}})
    second = Table(
        "second",
        {"gpt-4.1-mini": {"input": "9", "output": "9"}, "x-2": {"input": "3", "output": "3"}},
    )
    plugged += [costmeter.add_price_source(first), costmeter.add_price_source(second)]

    assert "first" == costmeter.price_of("gpt-4.1-mini").source  # beats genai-prices
    assert "second" == costmeter.price_of("x-2").source
    costmeter.register_prices({"gpt-4.1-mini": {"input": "5", "output": "5"}})
    try:
        assert "override" == costmeter.price_of("gpt-4.1-mini").source
    finally:
        costmeter.clear_price_overrides()
    assert "first" == costmeter.price_of("gpt-4.1-mini").source


def test_snapshots_ask_the_dated_name_first_and_tiers_apply(plugged: list[object]) -> None:
    source = Table(
        "list",
        {
            "gpt-x": {
                "input": "1",
                "output": "4",
                "tiers": {"flex": {"input": "0.5", "output": "2"}},
            }
        },
    )
    plugged.append(costmeter.add_price_source(source))

    flex = costmeter.price_of("gpt-x-2026-01-01", service_tier="flex")
    assert (Decimal("0.5"), Decimal(2)) == (flex.input_per_mtok, flex.output_per_mtok)
    assert ["gpt-x-2026-01-01", "gpt-x"] == source.asked


def test_removing_a_source_forgets_its_prices(plugged: list[object]) -> None:
    remove = costmeter.add_price_source(Table("t", {"only-here": {"input": "1", "output": "1"}}))
    assert "t" == costmeter.price_of("only-here").source
    remove()
    with pytest.raises(UnknownModelError):
        costmeter.price_of("only-here")


def test_a_bad_source_or_entry_is_an_error_naming_the_source(plugged: list[object]) -> None:
    with pytest.raises(ConfigurationError, match="`name`"):
        costmeter.add_price_source(object())  # type: ignore[arg-type]

    plugged.append(costmeter.add_price_source(Table("typo", {"m-1": {"input": "1"}})))
    with pytest.raises(ConfigurationError, match=r"price source 'typo'.*'output'"):
        costmeter.price_of("m-1")

    class Down:
        name = "down"

        def prices(self, model: str) -> Mapping[str, object] | None:
            raise TimeoutError("price service unreachable")

    plugged.append(costmeter.add_price_source(Down()))
    with pytest.raises(PricingError, match=r"price source 'down' failed.*unreachable"):
        costmeter.price_of("m-2")


def test_an_unknown_model_names_the_plugged_sources(plugged: list[object]) -> None:
    plugged.append(costmeter.add_price_source(Table("acme", {})))
    with pytest.raises(UnknownModelError, match="acme"):
        costmeter.price_of("nobody-prices-this")
