"""
Pre-flight estimate of a request's input tokens and worst-case cost, before it is sent.

A budget must refuse a call *before* it is billed, so the input is counted locally with the
model's own tokenizer under the rules OpenAI's servers apply (the cookbook formula, refined on
recorded real traffic), and the output is bounded by the request's own limit. Plain text is
exact; function tools are within a few tokens; and when the billed input will hold context the
request does not carry (server-side state, hosted-tool results, files, remote images, audio,
prompt templates) the estimate says so with ``complete=False`` and the reasons.

Counting: `costmeter._input_count`; the worst case: `costmeter._worst_case`.

Endpoints: `estimate` dispatches on ``api`` through a registry (`register_estimator`); the
token-billed endpoints here register `token_estimator`, and an endpoint module (images, audio)
registers its own ``estimator(body, model) -> Estimate`` without touching `estimate`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from costmeter._errors import ConfigurationError, UnknownModelError
from costmeter._input_count import count_request_input, short_name
from costmeter._pricing import PRICES_FILE_ENV, ModelPrice, UnpricedTokensError, price_with
from costmeter._worst_case import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    is_count,
    output_bound,
    reserve_usd,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "EndpointEstimator",
    "Estimate",
    "estimate",
    "register_estimator",
    "token_estimator",
]

_BOUND_KEYS = ("max_output_tokens", "max_completion_tokens", "max_tokens")


@dataclass(frozen=True, slots=True)
class Estimate:
    """
    A request's input tokens and worst-case cost, known before the request is sent.

    ``max_output_tokens`` is the most output the request can be billed for (its per-choice
    limit times ``n``/``best_of``/prompts). ``cost_usd`` is what a budget reserves for it
    (`reserve_usd`, USD), or ``None`` when no price source knows the model (or audio is asked
    of a model with no audio rate: reason ``audio_unpriced``). ``complete`` is ``False`` when
    the billed input will include context the request does not carry, or the count fell back
    to an over-count; ``reasons`` names each kind. ``api`` is the endpoint estimated.
    """

    model: str
    input_tokens: int
    max_output_tokens: int
    output_bound_from_request: bool
    cost_usd: Decimal | None
    complete: bool
    reasons: tuple[str, ...]
    price_source: str | None
    api: str = "responses"


EndpointEstimator = Callable[[dict[str, Any], str], Estimate]
"""``estimator(body, model) -> Estimate`` for one api; *body* holds the request's keywords."""

_ESTIMATORS: dict[str, EndpointEstimator] = {}


def register_estimator(api: str, estimator: EndpointEstimator) -> None:
    """
    Plug an endpoint's estimator into `estimate` (``estimate(api=api, ...)``).

    An endpoint module (images, audio, ...) registers its own function at import time; nothing
    in `estimate` changes. Registering an api again replaces its estimator.

    Raises:
        ConfigurationError: *api* is not a non-empty str or *estimator* is not callable.
    """
    if not isinstance(api, str) or not api:
        raise ConfigurationError(f"register_estimator() needs api as a non-empty str, got {api!r}")
    if not callable(estimator):
        raise ConfigurationError(f"register_estimator() needs a callable, got {estimator!r}")
    _ESTIMATORS[api] = estimator


def _infer_api(model: str, body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return "chat.completions"
    if "embedding" in short_name(model):
        return "embeddings"
    if isinstance(body.get("prompt"), (str, list)) and "input" not in body:
        return "completions"  # Responses' ``prompt`` is a template reference (a mapping)
    return "responses"


def estimate(*, model: str, api: str | None = None, **request_kwargs: Any) -> Estimate:
    """
    Estimate a request's input tokens and worst-case cost without sending it.

    Takes the keyword arguments of the endpoint's ``create`` call. *api* names the endpoint:
    ``"responses"``, ``"chat.completions"``, ``"embeddings"``, ``"completions"`` (legacy), or
    any an endpoint module registered (`register_estimator`); by default it is inferred:
    ``messages`` means Chat, an embedding model means embeddings, a str/list ``prompt`` without
    ``input`` means legacy completions, anything else Responses.

    ``cost_usd`` is what a budget reserves (`reserve_usd`): the input plus the estimator's error
    margin at the dearest input rate, the whole output bound (x ``n``/``best_of``) at the
    dearest output rate (audio when the request can answer in audio), at the dearest tier the
    request can be served at (no ``service_tier`` or ``"auto"``: standard or priority). An
    unpriced model gives ``cost_usd=None`` rather than an error: estimating must never break
    the caller's request.

    Raises:
        ConfigurationError: *model* is not a non-empty str; *api* is unknown; the output bound
            is not an int >= 0; ``n``/``best_of`` not an int >= 1; *input* is not a str or
            list, or *messages*/*tools* not a list; the price file is missing or malformed
            (`costmeter.PricesFileError`, naming the file).
        UnpricedTokensError: the request asks for audio and its model has no audio rate.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"estimate() needs model as a non-empty str, got {model!r}")
    body: dict[str, Any] = dict(request_kwargs)
    if body.get("messages") is None:
        body.pop("messages", None)
    api = api if api is not None else _infer_api(model, body)
    estimator = _ESTIMATORS.get(api) if isinstance(api, str) else None
    if estimator is None and isinstance(api, str):
        from costmeter._endpoints import register_estimators  # noqa: PLC0415  (images, audio...)

        register_estimators()
        estimator = _ESTIMATORS.get(api)
    if estimator is None:
        raise ConfigurationError(
            f"estimate() does not know the api {api!r} (known: {sorted(_ESTIMATORS)})"
        )
    return estimator(body, model)


def _validate(api: str, body: Mapping[str, Any]) -> None:
    for key, types in (
        ("messages", (list,)),
        ("input", (str, list)),
        ("prompt", (str, list) if api == "completions" else (Mapping,)),
        ("tools", (list,)),
    ):
        value = body.get(key)
        if value is not None and not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigurationError(
                f"estimate() needs {key} as a {expected}, got {type(value).__name__}"
            )
    bound_key = next((key for key in _BOUND_KEYS if body.get(key) is not None), None)
    if bound_key and not is_count(body[bound_key], 0):
        raise ConfigurationError(
            f"estimate() needs {bound_key} as an int >= 0, got {body[bound_key]!r}"
        )
    for key in ("n", "best_of"):
        if body.get(key) is not None and not is_count(body[key], 1):
            raise ConfigurationError(f"estimate() needs {key} as an int >= 1, got {body[key]!r}")


def _price_for(model: str) -> Callable[[str | None], ModelPrice | None]:
    """`price_of` per tier for one estimate, ``None`` where unpriced, each tier looked up once."""
    found: dict[str | None, ModelPrice | None] = {}
    prices_file = os.environ.get(PRICES_FILE_ENV) or None

    def price_for(tier: str | None) -> ModelPrice | None:
        if tier not in found:
            try:
                found[tier] = price_with(model, tier, prices_file)
            except UnknownModelError:
                found[tier] = None
        return found[tier]

    return price_for


def token_estimator(api: str) -> EndpointEstimator:
    """The estimator of a token-billed endpoint: `count_request_input` + `reserve_usd`."""

    def estimator(body: dict[str, Any], model: str) -> Estimate:
        _validate(api, body)
        input_tokens, complete, reasons = count_request_input(api, body, model)
        max_output, from_request = output_bound(api, body, model)
        price_for = _price_for(model)
        try:
            cost = reserve_usd(api, body, model, input_tokens, price_for, output=max_output)
        except UnpricedTokensError:  # audio asked for, no audio rate: the bill has no bound
            cost, reasons = None, (*reasons, "audio_unpriced")
        standard = price_for(None)
        return Estimate(
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output,
            output_bound_from_request=from_request,
            cost_usd=cost,
            complete=complete,
            reasons=reasons,
            price_source=standard.source if standard is not None and cost is not None else None,
            api=api,
        )

    return estimator


for _api in ("responses", "chat.completions", "embeddings", "completions", "responses.compact"):
    register_estimator(_api, token_estimator(_api))
