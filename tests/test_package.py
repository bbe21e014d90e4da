"""The package's public face: a sorted, importable ``__all__`` and private modules."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import costmeter


def test_all_is_sorted_and_importable() -> None:
    """``__all__`` is sorted, has no duplicates, and every name in it exists."""
    assert sorted(set(costmeter.__all__)) == costmeter.__all__
    assert [] == [name for name in costmeter.__all__ if not hasattr(costmeter, name)]


def test_only_documented_modules_are_public() -> None:
    """Modules are private (``_name``) except the CLI and the documented testing helpers."""
    public = {
        m.name for m in pkgutil.iter_modules(costmeter.__path__) if not m.name.startswith("_")
    }
    assert {"cli", "testing"} == public


# The public API, pinned (as httpx does): a name added or removed here is a deliberate decision.
PUBLIC = [
    "AsyncAzureOpenAI",
    "AsyncOpenAI",
    "AzureOpenAI",
    "Budget",
    "BudgetAlert",
    "BudgetExceededError",
    "BudgetKeyMissingError",
    "ConfigurationError",
    "Cost",
    "CostmeterError",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "Estimate",
    "LedgerError",
    "LogSink",
    "ModelPrice",
    "OpenAI",
    "PriceSource",
    "PricesFileError",
    "PricingError",
    "UnknownModelError",
    "UnpricedRequestError",
    "UnpricedTokensError",
    "Usage",
    "UsageError",
    "__version__",
    "add_price_source",
    "budget",
    "clear_price_overrides",
    "cost_of",
    "count_tokens",
    "enable_metrics",
    "estimate",
    "instrument",
    "log_to",
    "otel_genai_keys",
    "price_of",
    "register_prices",
    "set_strict",
    "tags",
]


def test_the_public_api_is_pinned() -> None:
    assert PUBLIC == costmeter.__all__


def test_public_classes_show_the_public_module() -> None:
    """``costmeter.BudgetExceededError``, not ``costmeter._errors.BudgetExceededError``."""
    classes = [getattr(costmeter, n) for n in PUBLIC if isinstance(getattr(costmeter, n), type)]

    assert [] == [c.__qualname__ for c in classes if c.__module__ != "costmeter"]


def test_no_merge_conflict_markers_in_the_project() -> None:
    """A resolved merge or revert leaves no ``<<<<<<<``/``>>>>>>>`` lines (docs, code, data)."""
    root = Path(__file__).parent.parent
    markers = ("<" * 7 + " ", ">" * 7 + " ")
    found = [
        f"{path.relative_to(root)}:{number}"
        for top in ("src", "tests", "bench", "examples", ".ci")
        for path in sorted((root / top).rglob("*"))
        if path.is_file() and path.suffix in {"", ".py", ".md", ".toml", ".txt", ".json", ".sh"}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if line.startswith(markers)
    ] + [
        f"{name}:{number}"
        for name in ("README.md", "CHANGELOG.md", "pyproject.toml")
        for number, line in enumerate((root / name).read_text().splitlines(), 1)
        if line.startswith(markers)
    ]
    assert [] == found
