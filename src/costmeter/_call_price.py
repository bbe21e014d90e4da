"""
Which price applies to a call: the model to price (Azure deployments mapped), the tier (one no
source knows priced at the dearest known), the regional uplift, and why a call could not be
priced (its ``price_status``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._errors import CostmeterError, UnknownModelError
from costmeter._model_names import parse_model
from costmeter._money import money_math
from costmeter._pricing import Cost, UnpricedTokensError, normalize_tier
from costmeter._usage import Usage

__all__ = ["REGIONAL_UPLIFT", "price_call", "pricing_model", "uplifted"]

#: Regional processing (data residency) costs 10% more than the global endpoint.
REGIONAL_UPLIFT = Decimal("1.1")


def pricing_model(
    model: str | None, served_model: str | None, deployments: Mapping[str, str]
) -> str | None:
    """
    The model to price: the response's model, unless the caller mapped the deployment.

    Azure's responses name models loosely (``gpt-4`` for a ``gpt-4-1106-preview``
    deployment, ``gpt-35-turbo`` for every 3.5 version, ``ada`` for
    ``text-embedding-ada-002``), so a ``deployments=`` mapping wins over the response's
    model, except where the response names a more specific version of the mapped model
    (mapping ``gpt-4o``, response ``gpt-4o-2024-05-13``, which has its own price).
    """
    mapped = deployments.get(model) if model else None
    if served_model:
        served = deployments.get(served_model, served_model)
        if mapped is None or _vaguer(mapped, served):
            return served
        return mapped
    return mapped or model


def price_call(
    endpoint: Endpoint,
    request: Request,
    model: str | None,
    tier: str | None,
    usage: Usage,
    *,
    region: str | None,
    unmapped: bool,
) -> tuple[Cost | None, str]:
    """
    Price *usage* of a call to *model* served at *tier*, and say how it went: ``ok``,
    ``unknown_tier`` (a tier no source knows: the dearest the model has, never nothing),
    ``undated_model`` (Azure named only a model family), ``unknown_model``,
    ``unmapped_deployment`` (*unmapped*: an Azure deployment ``deployments=`` does not map) or
    ``unpriced_<kind>_tokens``. Unexpected failures propagate: the caller reports them.
    """
    if model is None:
        return None, "unknown_model"
    status = "ok"
    try:
        with money_math():
            try:
                cost = endpoint.price(model, usage, request, tier)
            except UnknownModelError:
                if tier is None or normalize_tier(tier) == "default":
                    raise
                cost = _dearest_tier(endpoint, request, model, usage)
                status = "unknown_tier"
            if region is not None:
                cost = _scaled(cost, REGIONAL_UPLIFT)
    except UnknownModelError:
        return None, "unmapped_deployment" if unmapped else "unknown_model"
    except UnpricedTokensError as exc:
        return None, f"unpriced_{exc.kind}_tokens"
    if unmapped and len(parse_model(model).candidates()) == 1:
        # Azure named only a family (``gpt-4``, ``gpt-35-turbo``, ``ada``): its versions
        # differ in price, so this one is a best guess until the deployment is mapped.
        return cost, "undated_model"
    return cost, status


def _dearest_tier(endpoint: Endpoint, request: Request, model: str, usage: Usage) -> Cost:
    costs = []
    for tier in ("priority", None):
        with contextlib.suppress(UnknownModelError):
            costs.append(endpoint.price(model, usage, request, tier))
    if not costs:
        raise UnknownModelError(model, ("all price sources",))
    return max(costs, key=lambda cost: cost.total_usd)


def uplifted(reserve: Reserve, region: str | None) -> Reserve:
    """A worst case with the regional uplift applied (a client on a regional host)."""
    if region is None or reserve.cost_usd is None:
        return reserve
    with money_math():
        return replace(reserve, cost_usd=reserve.cost_usd * REGIONAL_UPLIFT)


def _scaled(cost: Cost, factor: Decimal) -> Cost:
    """*cost* with every money part multiplied by *factor* (the regional uplift)."""
    parts = {
        name: getattr(cost, name) * factor
        for name in cost.__slots__
        if name.endswith("_usd") and isinstance(getattr(cost, name), Decimal)
    }
    return replace(cost, **parts)


def _vaguer(name: str, than: str) -> bool:
    """Whether model *name* is *than* or a less specific name of it (``gpt-4`` of ``gpt-4-0613``)."""
    try:
        short, full = parse_model(name).key, parse_model(than).key
    except CostmeterError:
        return False
    return short == full or full.startswith(short + "-")
