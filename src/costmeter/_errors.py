"""
costmeter's exception hierarchy.

None of these subclass ``openai.OpenAIError``: a user's ``except openai.APIError`` retry loop must
never catch (and retry) a budget refusal.

* CostmeterError
  x BudgetExceededError   an active budget cannot cover the call's worst case; the request was NOT sent
    + BudgetKeyMissingError  a per-key budget's key (e.g. its tag) is not set (also a ConfigurationError)
  x PricingError
    + UnknownModelError   no price source knows the model (also a ``LookupError``)
    + UnpricedRequestError  inside a budget, a request costmeter cannot price: an endpoint it does
                          not meter yet, or one whose worst case could not be estimated; NOT sent
  x ConfigurationError    invalid arguments to costmeter itself (also a ``ValueError``)
  x UsageError            a usage payload that cannot be billed (also a ``ValueError``; defined
                          in ``costmeter._usage``)
  x LedgerError           a persistent budget ledger could not be reached in time
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

__all__ = [
    "BudgetExceededError",
    "BudgetKeyMissingError",
    "ConfigurationError",
    "CostmeterError",
    "LedgerError",
    "PricingError",
    "UnknownModelError",
    "UnpricedRequestError",
]


class CostmeterError(Exception):
    """Base class of every error costmeter raises on purpose."""


class ConfigurationError(CostmeterError, ValueError):
    """An argument given to costmeter (a limit, a price override, a model name) is invalid."""


class PricingError(CostmeterError):
    """A price could not be determined."""


class UnknownModelError(PricingError, LookupError):
    """
    No price source knows *model* (at the requested service tier).

    Attributes:
        model: The model name as given.
        sources: The price sources that were asked, in order.
        service_tier: The tier that was asked for, if any.
    """

    def __init__(
        self, model: object, sources: Sequence[str], service_tier: str | None = None
    ) -> None:
        self.model = model
        self.sources = tuple(sources)
        self.service_tier = service_tier
        tier = f" at service tier {service_tier!r}" if service_tier else ""
        super().__init__(
            f"no price known for model {model!r}{tier}; sources tried: {', '.join(self.sources)}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.model, self.sources, self.service_tier))


class UnpricedRequestError(PricingError):
    """
    Inside a budget, a request whose cost costmeter cannot bound was refused; it was not sent.

    A budget can only hold if every request in it is priced before sending. ``allow_unpriced=True``
    on the budget lets such requests through (uncounted).

    Attributes:
        api: The endpoint (``images.generate``, ...).
        reason: Why it cannot be priced.
    """

    def __init__(self, api: str, reason: str) -> None:
        self.api = api
        self.reason = reason
        super().__init__(
            f"costmeter cannot price this {api} request ({reason}), so an active budget refused "
            "it; the request was not sent (allow_unpriced=True on the budget lets it through)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.api, self.reason))


class BudgetExceededError(CostmeterError):
    """
    An active budget cannot cover the worst-case cost of a call; the request was not sent.

    Attributes:
        budget_name: Name of the budget that refused.
        limit_usd: Its limit.
        spent_usd: What it had spent when it refused.
        reserved_usd: What in-flight calls held reserved when it refused.
        estimated_cost_usd: The refused call's worst-case cost.
        model: The model the refused call asked for.
        budget_key: For a per-key budget (``per="tag:user"``), the key that refused.
    """

    def __init__(
        self,
        *,
        budget_name: str | None,
        limit_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        estimated_cost_usd: Decimal,
        model: str | None,
        budget_key: str | None = None,
    ) -> None:
        self.budget_name = budget_name
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.estimated_cost_usd = estimated_cost_usd
        self.model = model
        self.budget_key = budget_key
        name = budget_name or "(unnamed)"
        if budget_key is not None:
            name += f" [{budget_key}]"
        super().__init__(
            f"budget {name} cannot cover a call to {model}: "
            f"limit ${limit_usd}, spent ${spent_usd}, reserved ${reserved_usd}, "
            f"worst case of this call ${estimated_cost_usd}; the request was not sent"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_budget_error, (self.__dict__.copy(),))


def _rebuild_budget_error(state: dict[str, object]) -> BudgetExceededError:
    return BudgetExceededError(**state)  # type: ignore[arg-type]


class BudgetKeyMissingError(BudgetExceededError, ConfigurationError):
    """
    A per-key budget (``per="tag:user"``) was active, but the call has no value for its key:
    the request was not sent.

    A refusal (so ``except BudgetExceededError`` handlers and the ``costmeter.budget.exceeded``
    event cover it: an untagged call must not escape every per-user cap) caused by how the code
    is set up (so it is also a `ConfigurationError`). The fix is ``costmeter.tags(user=...)``
    around the call.

    Attributes:
        tag: The tag the budget keys on (``user`` for ``per="tag:user"``).
    """

    def __init__(
        self,
        *,
        budget_name: str | None,
        tag: str,
        limit_usd: Decimal,
        estimated_cost_usd: Decimal,
        model: str | None,
    ) -> None:
        super().__init__(
            budget_name=budget_name,
            limit_usd=limit_usd,
            spent_usd=Decimal(0),
            reserved_usd=Decimal(0),
            estimated_cost_usd=estimated_cost_usd,
            model=model,
        )
        self.tag = tag
        self.args = (
            f"budget {budget_name or '(unnamed)'} is per tag {tag!r}, but this call has no "
            f"{tag!r} tag: wrap it in costmeter.tags({tag}=...); the request was not sent",
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_key_missing,
            (self.budget_name, self.tag, self.limit_usd, self.estimated_cost_usd, self.model),
        )


def _rebuild_key_missing(
    budget_name: str | None, tag: str, limit: Decimal, estimated: Decimal, model: str | None
) -> BudgetKeyMissingError:
    return BudgetKeyMissingError(
        budget_name=budget_name,
        tag=tag,
        limit_usd=limit,
        estimated_cost_usd=estimated,
        model=model,
    )


class LedgerError(CostmeterError):
    """A persistent budget ledger (SQLite, Redis) could not be read or written in time."""
