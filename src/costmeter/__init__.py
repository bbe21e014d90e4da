"""
costmeter: a drop-in OpenAI client that prices every call exactly, refuses calls a budget cannot
cover before they are sent, and logs one structured JSON event per call.

    - from openai import OpenAI
    + from costmeter import OpenAI
"""

from __future__ import annotations

from costmeter._budget import Budget, budget
from costmeter._clients import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from costmeter._errors import (
    BudgetExceededError,
    ConfigurationError,
    CostmeterError,
    LedgerError,
    PricingError,
    UnknownModelError,
)
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

__all__ = [
    "AsyncAzureOpenAI",
    "AsyncOpenAI",
    "AzureOpenAI",
    "Budget",
    "BudgetExceededError",
    "ConfigurationError",
    "Cost",
    "CostmeterError",
    "LedgerError",
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
    "price_of",
    "register_prices",
    "set_strict",
    "tags",
]
