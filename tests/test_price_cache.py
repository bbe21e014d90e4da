"""Repeated price lookups are cached, yet follow every change of overrides and override file."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import costmeter
from costmeter import ConfigurationError, cost_of, price_of
from costmeter._pricing import PRICES_FILE_ENV

# gpt-4.1 as OpenAI publishes it: $2 input, $0.50 cached input, $8 output per 1M tokens.
GPT_41 = (Decimal(2), Decimal("0.5"), Decimal(8))


def _rates(model: str, **kwargs: str | None) -> tuple[Decimal, Decimal, Decimal]:
    price = price_of(model, **kwargs)
    return price.input_per_mtok, price.cached_input_per_mtok, price.output_per_mtok


class TestCacheFollowsChanges:
    def test_override_file_set_changed_and_unset(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cached lookup never hides a COSTMETER_PRICES_FILE set, switched or removed later."""
        first, second = tmp_path / "a.toml", tmp_path / "b.toml"
        first.write_text('["gpt-4.1"]\ninput = "3"\noutput = "9"\n')
        second.write_text('["gpt-4.1"]\ninput = "4"\ncached_input = "1"\noutput = "10"\n')

        before = _rates("gpt-4.1")
        monkeypatch.setenv(PRICES_FILE_ENV, str(first))
        with_first = _rates("gpt-4.1")
        monkeypatch.setenv(PRICES_FILE_ENV, str(second))
        with_second = _rates("gpt-4.1")
        monkeypatch.delenv(PRICES_FILE_ENV)
        after = _rates("gpt-4.1")

        assert GPT_41 == before == after
        assert (Decimal(3), Decimal(3), Decimal(9)) == with_first
        assert (Decimal(4), Decimal(1), Decimal(10)) == with_second

    def test_register_and_clear_overrides(self) -> None:
        """register_prices() and clear_price_overrides() take effect on the next lookup."""
        before = _rates("gpt-4.1", service_tier="auto")
        costmeter.register_prices({"gpt-4.1": {"input": "1", "output": "2"}})
        overridden = _rates("gpt-4.1", service_tier="auto")
        costmeter.clear_price_overrides()

        assert GPT_41 == before == _rates("gpt-4.1", service_tier="auto")
        assert (Decimal(1), Decimal(1), Decimal(2)) == overridden

    def test_same_answer_for_every_spelling_of_the_default_tier(self) -> None:
        """None, auto, default and standard are one tier, whatever was cached first."""
        spellings = [None, "auto", "default", "standard", " Default "]

        rates = {_rates("gpt-4.1", service_tier=tier) for tier in spellings}

        assert {GPT_41} == rates


class TestBadInputIsNotCached:
    @pytest.mark.parametrize("tier", [["flex"], {"tier": "flex"}, 3])
    def test_bad_tier(self, tier: object) -> None:
        """A non-string tier (hashable or not) raises ConfigurationError, every time."""
        for _ in range(2):
            with pytest.raises(ConfigurationError, match="service_tier"):
                price_of("gpt-4.1", service_tier=tier)  # type: ignore[arg-type]

    @pytest.mark.parametrize("model", ["", "   ", None, 5])
    def test_bad_model(self, model: object) -> None:
        """An empty or non-string model raises ConfigurationError, every time."""
        for _ in range(2):
            with pytest.raises(ConfigurationError, match="model"):
                price_of(model)  # type: ignore[arg-type]


class TestCostOfAPriceFoundBefore:
    def test_needs_no_second_lookup(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        cost_of() given the ModelPrice looked up before sending prices the usage without any
        lookup: even an override file that became unreadable since is not consulted.
        """
        price = price_of("gpt-4.1")
        monkeypatch.setenv(PRICES_FILE_ENV, str(tmp_path / "missing.toml"))
        usage = {
            "input_tokens": 1_000_000,
            "input_tokens_details": {"cached_tokens": 400_000},
            "output_tokens": 100_000,
        }

        cost = cost_of(price, usage)

        # 600k uncached x $2 + 400k cached x $0.50 + 100k output x $8 (per 1M)
        assert (Decimal("1.2"), Decimal("0.2"), Decimal("0.8"), Decimal("2.2")) == (
            cost.input_usd,
            cost.cached_input_usd,
            cost.output_usd,
            cost.total_usd,
        )
        with pytest.raises(ConfigurationError, match=PRICES_FILE_ENV):
            cost_of("gpt-4.1", usage)


def test_only_audio_models_read_tokencosts_table() -> None:
    """
    tokencost's table (~6 ms to read) only completes audio rates, which only models named for
    audio have: pricing a dated text model in a fresh process never reads it; an audio one does.
    """
    script = """
import sys
from costmeter._bundled_prices import _tokencost_table
from costmeter import price_of
price_of("gpt-5-mini-2025-08-07")
price_of("gpt-4.1-2025-04-14")
text_only = _tokencost_table.cache_info().currsize
audio = price_of("gpt-4o-audio-preview-2024-12-17")
print(text_only, _tokencost_table.cache_info().currsize, audio.audio_input_per_mtok)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert "0 1 40" == done.stdout.strip()
