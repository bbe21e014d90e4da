"""
costmeter: a drop-in OpenAI client that prices every call exactly, refuses calls a budget cannot
cover before they are sent, and logs one structured JSON event per call.

    - from openai import OpenAI
    + from costmeter import OpenAI
"""

from __future__ import annotations

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
)
from costmeter._estimate import DEFAULT_MAX_OUTPUT_TOKENS, Estimate, estimate
from costmeter._instrument import instrument
from costmeter._logging import LogSink, configure_from_env, log_to, otel_genai_keys
from costmeter._meter import set_strict
from costmeter._pricing import (
    Cost,
    ModelPrice,
    clear_price_overrides,
    cost_of,
    price_of,
    register_prices,
)
from costmeter._tags import tags
from costmeter._tokenizer import count_tokens
from costmeter._usage import Usage, UsageError

__version__ = "0.1.0"

configure_from_env()

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
    "PricingError",
    "UnknownModelError",
    "Usage",
    "UsageError",
    "__version__",
    "budget",
    "clear_price_overrides",
    "cost_of",
    "count_tokens",
    "estimate",
    "instrument",
    "log_to",
    "otel_genai_keys",
    "price_of",
    "register_prices",
    "set_strict",
    "tags",
]
