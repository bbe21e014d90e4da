"""Pricing: exact Decimal costs against independent hand computation, sources and tiers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costmeter
from costmeter import ConfigurationError, UnknownModelError, cost_of, price_of
from costmeter._pricing import PRICES_FILE_ENV

from .conftest import load_traffic

# OpenAI's published list prices, USD per 1M tokens: (input, cached input, cache write, output).
# Written out by hand from the pricing pages (2026-11), independently of costmeter's sources.
PUBLISHED = {
    ("gpt-4.1", "default"): ("2", "0.5", "2", "8"),
    ("gpt-4.1-mini", "default"): ("0.4", "0.1", "0.4", "1.6"),
    ("gpt-4.1-nano", "default"): ("0.1", "0.025", "0.1", "0.4"),
    ("gpt-4o", "default"): ("2.5", "1.25", "2.5", "10"),
    ("gpt-4o-mini", "default"): ("0.15", "0.075", "0.15", "0.6"),
    ("gpt-4o-audio-preview", "default"): ("2.5", "2.5", "2.5", "10"),
    ("gpt-4.5-preview", "default"): ("75", "37.5", "75", "150"),
    ("gpt-3.5-turbo", "default"): ("0.5", "0.5", "0.5", "1.5"),
    ("gpt-4", "default"): ("30", "30", "30", "60"),
    ("gpt-5", "default"): ("1.25", "0.125", "1.25", "10"),
    ("gpt-5", "flex"): ("0.625", "0.0625", "0.625", "5"),
    ("gpt-5", "priority"): ("2.5", "0.25", "2.5", "20"),
    ("gpt-5-mini", "default"): ("0.25", "0.025", "0.25", "2"),
    ("gpt-5-nano", "default"): ("0.05", "0.005", "0.05", "0.4"),
    ("gpt-5-pro", "default"): ("15", "15", "15", "120"),
    ("gpt-5.2", "default"): ("1.75", "0.175", "1.75", "14"),
    ("gpt-5.4", "default"): ("2.5", "0.25", "2.5", "15"),
    ("gpt-5.4-mini", "default"): ("0.75", "0.075", "0.75", "4.5"),
    ("gpt-5.5", "default"): ("5", "0.5", "5", "30"),
    ("gpt-5.6-sol", "default"): ("4", "0.4", "5", "20"),
    ("o1-mini", "default"): ("1.1", "0.55", "1.1", "4.4"),
    ("o3", "default"): ("2", "0.5", "2", "8"),
    ("o3-mini", "default"): ("1.1", "0.55", "1.1", "4.4"),
    ("o4-mini", "default"): ("1.1", "0.275", "1.1", "4.4"),
    ("computer-use-preview", "default"): ("3", "3", "3", "12"),
}
MILLION = Decimal(1_000_000)


def _family(model: str) -> str:
    """The price family of a dated snapshot, by hand: drop a trailing date."""
    for family in sorted({f for f, _ in PUBLISHED}, key=len, reverse=True):
        if model == family or model.startswith(family + "-"):
            return family
    raise KeyError(model)


def _tier(record: dict[str, Any]) -> str:
    body = record["response"]
    events = body if isinstance(body, list) else [body]
    tier = None
    for event in events:
        found = (event.get("response") or {}).get("service_tier") or event.get("service_tier")
        tier = found or tier
    return "default" if tier in (None, "auto", "default") else tier


# Audio tokens have their own rates (USD per 1M, input/output): gpt-4o-audio-preview-2024-12-17.
AUDIO = {"gpt-4o-audio-preview": ("40", "80")}


def _hand_cost(
    usage: dict[str, Any], prices: tuple[str, str, str, str], audio: tuple[str, str] = ("0", "0")
) -> Decimal:
    inp, cached, write, out = (Decimal(p) for p in prices)
    audio_in_rate, audio_out_rate = (Decimal(p) for p in audio)
    if "input_tokens" in usage:
        total_in, total_out = usage["input_tokens"], usage["output_tokens"]
        details = usage.get("input_tokens_details") or {}
        out_details = usage.get("output_tokens_details") or {}
    else:
        total_in, total_out = usage["prompt_tokens"], usage["completion_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
    n_cached = details.get("cached_tokens") or 0
    n_write = details.get("cache_write_tokens") or 0
    n_audio_in = details.get("audio_tokens") or 0
    n_audio_out = out_details.get("audio_tokens") or 0
    plain = total_in - n_cached - n_write - n_audio_in
    text_out = total_out - n_audio_out
    return (
        plain * inp
        + n_cached * cached
        + n_write * write
        + n_audio_in * audio_in_rate
        + text_out * out
        + n_audio_out * audio_out_rate
    ) / MILLION


RECORDS = load_traffic()


class TestRecordedUsage:
    @pytest.mark.parametrize(("name", "record"), RECORDS, ids=[n for n, _ in RECORDS])
    def test_cost_matches_hand_computation(self, name: str, record: dict[str, Any]) -> None:
        """cost_of on every recorded usage equals the hand computation to the last digit."""
        tier = _tier(record)
        prices = PUBLISHED[(_family(record["model"]), tier)]

        cost = cost_of(record["model"], record["usage"], service_tier=tier)

        audio = AUDIO.get(_family(record["model"]), ("0", "0"))
        assert _hand_cost(record["usage"], prices, audio) == cost.total_usd
        assert cost.total_usd == (
            cost.input_usd
            + cost.cached_input_usd
            + cost.cache_write_usd
            + cost.output_usd
            + cost.tool_usd
        )

    def test_coverage_of_the_recordings(self) -> None:
        """The recordings exercise >= 10 models and cached, write, reasoning, flex, priority."""
        models = {_family(r["model"]) for _, r in RECORDS}
        tiers = {_tier(r) for _, r in RECORDS}
        usages = [costmeter.Usage() if False else r["usage"] for _, r in RECORDS]
        normalized = [costmeter._usage.usage_from(u) for u in usages]

        assert len(models) >= 10
        assert {"flex", "priority"} <= tiers
        assert any(u.cached_input_tokens for u in normalized)
        assert any(u.cache_write_input_tokens for u in normalized)
        assert any(u.reasoning_tokens for u in normalized)


class TestSemantics:
    def test_reasoning_is_part_of_output(self) -> None:
        """Reasoning tokens are billed once, inside output_tokens."""
        usage = {
            "input_tokens": 0,
            "output_tokens": 100,
            "output_tokens_details": {"reasoning_tokens": 90},
        }

        assert Decimal("0.001") == cost_of("gpt-5", usage).output_usd

    def test_cached_and_writes_are_parts_of_input(self) -> None:
        """Cached reads and cache writes are carved out of input_tokens, never added."""
        usage = {
            "input_tokens": 4020,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 4012},
            "output_tokens": 5,
        }

        cost = cost_of("gpt-5.6-sol", usage)

        assert Decimal(8) * 4 / MILLION == cost.input_usd
        assert Decimal(4012) * 5 / MILLION == cost.cache_write_usd

    def test_missing_details_mean_zero(self) -> None:
        """A usage without detail objects prices every input token at the full rate."""
        cost = cost_of("gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 0})

        assert Decimal("0.0025") == cost.total_usd
        assert Decimal(0) == cost.cached_input_usd

    def test_long_context_cliff(self) -> None:
        """Above 272k input tokens gpt-5.4 bills the whole request at the long-context rates."""
        at = cost_of("gpt-5.4", {"input_tokens": 272_000, "output_tokens": 0})
        above = cost_of("gpt-5.4", {"input_tokens": 272_001, "output_tokens": 10})

        assert Decimal("0.68") == at.total_usd
        assert Decimal("1.360005") + Decimal("0.000225") == above.total_usd
        assert above.long_context

    def test_web_search_fee_when_reported(self) -> None:
        """Reported billable web searches add the per-call fee."""
        usage = costmeter.Usage(input_tokens=0, output_tokens=0, web_search_calls=3)

        assert Decimal("0.03") == cost_of("gpt-5", usage).tool_usd

    def test_auto_and_none_are_default(self) -> None:
        """A response tier of auto or None is priced at standard rates."""
        assert price_of("gpt-5", service_tier="auto") == price_of("gpt-5", service_tier=None)

    def test_ultrafast_without_price_is_unknown(self) -> None:
        """A tier no source prices raises instead of silently using standard rates."""
        with pytest.raises(UnknownModelError, match="ultrafast"):
            price_of("gpt-5.6-sol", service_tier="ultrafast")


class TestSources:
    def test_genai_prices_wins_over_stale_tokencost(self) -> None:
        """o1-mini-2024-09-12: tokencost still has the $3/$12 launch price; the current is used."""
        from costmeter._bundled_prices import _tokencost_table

        stale = _tokencost_table()["o1-mini-2024-09-12"]
        price = price_of("o1-mini-2024-09-12")

        assert Decimal("3") == stale["input_cost_per_token"] * MILLION
        assert (Decimal("1.1"), Decimal("4.4")) == (price.input_per_mtok, price.output_per_mtok)
        assert "genai-prices" == price.source

    def test_tokencost_without_cached_price_bills_cached_at_full_rate(self) -> None:
        """Where tokencost publishes no cached price, cached tokens cost the full input rate."""
        from costmeter._bundled_prices import from_tokencost
        from costmeter._model_names import parse_model

        price = from_tokencost(parse_model("gpt-4-turbo"), "default")
        assert price is not None
        usage = {
            "prompt_tokens": 2000,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens": 0,
        }

        assert ("tokencost", Decimal(10), Decimal(10)) == (
            price.source,
            price.input_per_mtok,
            price.cached_input_per_mtok,
        )
        assert Decimal("0.02") == cost_of(price, usage).total_usd

    def test_tokencost_prices_embeddings_when_genai_prices_lacks_them(self) -> None:
        """tokencost's table is read (as data) and scaled to per-1M exactly."""
        from costmeter._bundled_prices import from_tokencost
        from costmeter._model_names import parse_model

        price = from_tokencost(parse_model("gpt-5-2025-08-07"), "default")

        assert price is not None
        assert (Decimal("1.25"), Decimal("0.125"), Decimal(10)) == (
            price.input_per_mtok,
            price.cached_input_per_mtok,
            price.output_per_mtok,
        )

    def test_tokencost_is_not_imported(self) -> None:
        """Reading tokencost's table never imports tokencost (1.2 s, the anthropic SDK)."""
        import subprocess
        import sys

        code = (
            "import sys, costmeter; from costmeter._bundled_prices import _tokencost_table;"
            "_tokencost_table(); costmeter.price_of('gpt-5');"
            "print('tokencost' in sys.modules, 'anthropic' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )

        assert "False False" == out.stdout.strip()

    def test_override_in_code_wins(self) -> None:
        """register_prices() takes precedence over every other source."""
        costmeter.register_prices({"gpt-5": {"input": "1", "output": "2"}})

        price = price_of("gpt-5-2025-08-07")

        assert ("override", Decimal(1), Decimal(1)) == (
            price.source,
            price.input_per_mtok,
            price.cached_input_per_mtok,
        )

    def test_override_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A TOML file named by COSTMETER_PRICES_FILE prices models nobody else knows."""
        path = tmp_path / "prices.toml"
        path.write_text(
            '[my-model]\ninput = "1.5"\noutput = "6"\n[my-model.tiers.flex]\ninput = "0.75"\noutput = "3"\n'
        )
        monkeypatch.setenv(PRICES_FILE_ENV, str(path))

        assert Decimal("1.5") == price_of("my-model").input_per_mtok
        assert Decimal("0.75") == price_of("my-model", service_tier="flex").input_per_mtok

    def test_override_json_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """JSON override files work too, floats read exactly."""
        path = tmp_path / "prices.json"
        path.write_text(json.dumps({"my-model": {"input": 0.1, "output": "0.2"}}))
        monkeypatch.setenv(PRICES_FILE_ENV, str(path))

        assert Decimal("0.1") == price_of("my-model").input_per_mtok

    @pytest.mark.parametrize(
        "prices",
        [
            {"m": {"input": "-1", "output": "1"}},
            {"m": {"input": "NaN", "output": "1"}},
            {"m": {"input": "1"}},
            {"m": {"input": "1", "output": "1", "bogus": "1"}},
            {"m": {"input": True, "output": "1"}},
        ],
    )
    def test_bad_override_is_rejected(self, prices: dict[str, Any]) -> None:
        """Invalid override prices raise ConfigurationError naming the problem."""
        with pytest.raises(ConfigurationError, match="m"):
            costmeter.register_prices(prices)


class TestModelNames:
    @pytest.mark.parametrize(
        ("name", "priced_as"),
        [
            ("gpt-5-2025-08-07", "gpt-5"),
            ("GPT-4o", "gpt-4o"),
            ("openai/gpt-4o", "gpt-4o"),
            ("gpt-35-turbo", "gpt-3.5-turbo"),
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
            ("ft:gpt-4o-mini-2024-07-18:org::abc123", "ft:gpt-4o-mini"),
            ("gpt-4o-mini-2024-07-18.ft-0123abcd", "ft:gpt-4o-mini"),
        ],
    )
    def test_spellings(self, name: str, priced_as: str) -> None:
        """Snapshots, case, router prefixes, Azure and fine-tuned spellings resolve correctly."""
        assert priced_as == price_of(name).priced_as

    def test_fine_tuned_is_never_base(self) -> None:
        """A fine-tuned model is priced as fine-tuned (2x base for gpt-4o-mini), never as base."""
        base = price_of("gpt-4o-mini")
        tuned = price_of("ft:gpt-4o-mini-2024-07-18:org::id")

        assert tuned.input_per_mtok == 2 * base.input_per_mtok

    def test_unpriced_fine_tune_is_unknown(self) -> None:
        """A fine-tune nobody prices is unknown, not silently its base model."""
        with pytest.raises(UnknownModelError) as info:
            price_of("ft:gpt-4.1-2025-04-14:org::x")

        assert "ft:gpt-4.1-2025-04-14:org::x" == info.value.model
        assert "genai-prices" in info.value.sources

    def test_unknown_model_error_shape(self) -> None:
        """UnknownModelError is a LookupError and a CostmeterError naming the model and sources."""
        with pytest.raises(LookupError) as info:
            price_of("gpt-6.2-sol")

        assert isinstance(info.value, costmeter.CostmeterError)
        assert "gpt-6.2-sol" in str(info.value)
        assert "tokencost" in str(info.value)


class TestBadInput:
    @pytest.mark.parametrize("model", [None, 42, "", "   "])
    def test_non_string_model(self, model: object) -> None:
        """A model that is not a non-empty string raises ConfigurationError."""
        with pytest.raises(ConfigurationError, match="model"):
            price_of(model)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "usage",
        [
            {"input_tokens": -1, "output_tokens": 0},
            {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 11}, "output_tokens": 0},
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "output_tokens_details": {"reasoning_tokens": 2},
            },
            {"input_tokens": "12", "output_tokens": 1},
            {"total_tokens": 3},
            "nonsense",
        ],
    )
    def test_bad_usage(self, usage: object) -> None:
        """Negative, inconsistent, mistyped or unrecognisable usage raises UsageError."""
        with pytest.raises(costmeter.UsageError):
            cost_of("gpt-5", usage)

    def test_no_bare_errors(self) -> None:
        """UsageError is a CostmeterError and a ValueError, never a bare KeyError/TypeError; a
        bad payload from the server is not a configuration mistake of the caller's."""
        assert issubclass(costmeter.UsageError, ValueError)
        assert issubclass(costmeter.UsageError, costmeter.CostmeterError)
        assert not issubclass(costmeter.UsageError, costmeter.ConfigurationError)
