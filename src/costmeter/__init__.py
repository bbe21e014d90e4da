"""
costmeter: a drop-in OpenAI client that prices every call exactly, refuses calls a budget cannot
cover before they are sent, and logs one structured JSON event per call.

    - from openai import OpenAI
    + from costmeter import OpenAI

The public names load on first use (module ``__getattr__``): ``import costmeter`` stays cheap, and
the ``costmeter`` command reads logs without importing the OpenAI SDK (~0.9 s) it does not need.
``from costmeter import OpenAI`` and ``costmeter.OpenAI`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costmeter._alerts import BudgetAlert
    from costmeter._budget import Budget, budget
    from costmeter._clients import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
    from costmeter._errors import (
        BudgetExceededError,
        BudgetKeyMissingError,
        ConfigurationError,
        CostmeterError,
        LedgerError,
        PricingError,
        UnknownModelError,
        UnpricedRequestError,
    )
    from costmeter._estimate import Estimate, estimate
    from costmeter._instrument import instrument
    from costmeter._meter import set_strict
    from costmeter._metrics import enable_metrics
    from costmeter._otel_names import otel_genai_keys
    from costmeter._pricing import (
        Cost,
        ModelPrice,
        PricesFileError,
        PriceSource,
        UnpricedTokensError,
        add_price_source,
        clear_price_overrides,
        cost_of,
        price_of,
        register_prices,
    )
    from costmeter._sinks import LogSink, log_to
    from costmeter._tags import tags
    from costmeter._tokenizer import count_tokens
    from costmeter._usage import Usage, UsageError
    from costmeter._worst_case import DEFAULT_MAX_OUTPUT_TOKENS

__version__ = "0.1.0"

# Public name -> the private module that defines it.
_LAZY: dict[str, str] = {
    "AsyncAzureOpenAI": "_clients",
    "AsyncOpenAI": "_clients",
    "AzureOpenAI": "_clients",
    "Budget": "_budget",
    "BudgetAlert": "_alerts",
    "BudgetExceededError": "_errors",
    "BudgetKeyMissingError": "_errors",
    "ConfigurationError": "_errors",
    "Cost": "_pricing",
    "CostmeterError": "_errors",
    "DEFAULT_MAX_OUTPUT_TOKENS": "_worst_case",
    "Estimate": "_estimate",
    "LedgerError": "_errors",
    "LogSink": "_sinks",
    "ModelPrice": "_pricing",
    "OpenAI": "_clients",
    "PriceSource": "_pricing",
    "PricesFileError": "_pricing",
    "PricingError": "_errors",
    "UnknownModelError": "_errors",
    "UnpricedRequestError": "_errors",
    "UnpricedTokensError": "_pricing",
    "Usage": "_usage",
    "UsageError": "_usage",
    "add_price_source": "_pricing",
    "budget": "_budget",
    "clear_price_overrides": "_pricing",
    "cost_of": "_pricing",
    "count_tokens": "_tokenizer",
    "enable_metrics": "_metrics",
    "estimate": "_estimate",
    "instrument": "_instrument",
    "log_to": "_sinks",
    "otel_genai_keys": "_otel_names",
    "price_of": "_pricing",
    "register_prices": "_pricing",
    "set_strict": "_meter",
    "tags": "_tags",
}


def __getattr__(name: str) -> Any:
    """Load a public name (or a private submodule, e.g. ``costmeter._meter``) on first use."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"costmeter.{module}"), name)
        if isinstance(value, type):
            value.__module__ = "costmeter"  # the public path, as in tracebacks and reprs
        globals()[name] = value  # later look-ups skip this function
        return value
    if name.startswith("_") and not name.startswith("__"):
        try:
            return importlib.import_module(f"costmeter.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"costmeter.{name}":
                raise
    raise AttributeError(f"module 'costmeter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
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
