"""
The token-priced text endpoints' shared worst case: Responses, Chat, embeddings (and the like).

Before sending, the input is counted locally (or taken from the server's free count) and the
worst case priced at the dearest rate the request can be billed at. The price of the request's
model is looked up at the requested tier, falling back to the standard tier when the source
publishes none for that tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._errors import CostmeterError, PricingError, UnknownModelError
from costmeter._input_count import count_request_input
from costmeter._observe import Observation, text_delta_observer
from costmeter._pricing import ModelPrice, PricesFileError, normalize_tier, price_of
from costmeter._worst_case import reserve_usd

__all__ = ["TextEndpoint", "requested_price"]


def requested_price(request: Request, tier: str | None) -> ModelPrice | None:
    """
    The price of the request's model at *tier* (``None``: the standard tier), trying the Azure
    deployment's mapped model first; at an unknown tier, the standard price; ``None`` if unknown.
    """
    tier = tier if tier is not None and normalize_tier(tier) != "default" else None
    for model in request.price_models():
        try:
            return price_of(model, service_tier=tier)
        except UnknownModelError:
            if tier is not None:
                try:
                    return price_of(model)
                except UnknownModelError:
                    pass
        except PricesFileError:
            raise  # a broken price file is the caller's to fix, not an unknown model
        except CostmeterError:
            return None
    return None


class TextEndpoint(Endpoint):
    """A token-priced endpoint whose usage comes in the Responses or Chat shape."""

    def estimate(self, request: Request) -> Reserve:
        return self.worst_case(request, bound=False)

    def stream_observer(
        self, seen: Observation, observe: Callable[[Any], None]
    ) -> Callable[[Any], None]:
        return text_delta_observer(seen, observe)  # Responses deltas: what `take` does, faster

    def bound(self, request: Request) -> Reserve | None:
        """Each text counted by its UTF-8 length: no vocabulary to load, nothing to tokenize."""
        if request.exact_input_tokens is not None:
            return None  # the server counted: `estimate` does not tokenize
        return self.worst_case(request, bound=True)

    def worst_case(self, request: Request, *, bound: bool) -> Reserve:
        """
        `estimate` (*bound* ``False``) and `bound` in one: subclasses extend this, so that the
        bound can never leave out what the estimate adds.
        """
        model = request.model or ""
        reasons: tuple[str, ...] = ()
        if request.exact_input_tokens is not None:  # the server's count: no local tokenizing
            tokens, complete = request.exact_input_tokens, True
        else:
            tokens, complete, reasons = count_request_input(
                self.api, request.body, model, bound=bound
            )
        try:
            cost = reserve_usd(
                self.api,
                request.body,
                model,
                tokens,
                lambda tier: requested_price(request, tier),
                exact_input=request.exact_input_tokens is not None,
            )
        except PricingError as exc:  # e.g. audio asked for, and no audio rate published
            return Reserve(None, tokens, False, (*reasons, "unpriced"), unpriced=str(exc))
        return Reserve(cost, tokens, complete, reasons)
