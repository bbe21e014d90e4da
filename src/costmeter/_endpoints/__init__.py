"""
Billed endpoints: each is one small module saying how to route, estimate, observe and price it.

The metering core (`costmeter._meter`) knows nothing about any particular endpoint. For every
request the SDK sends, it asks `endpoint_for` which `Endpoint` bills it, then calls that
endpoint's hooks at fixed points of one flow::

    route  ->  estimate (worst case, before sending)  ->  observe (each object received)
           ->  price (exact cost of the usage seen, or of `fallback_usage`)  ->  settle + event

Adding an endpoint means writing a module here with an `Endpoint` subclass and listing it in
`_MODULES`; the core does not change. Paths are the SDK's relative URLs (``/images/generations``),
without the ``/v1`` prefix or an Azure deployment part.

A request that bills money but has no endpoint module yet is listed in `UNMETERED`: inside a
budget it is refused before sending (it cannot be priced, so the cap could not hold); outside
one it is logged.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from costmeter._pricing import Cost, cost_of
from costmeter._usage import Usage

if TYPE_CHECKING:
    from costmeter._observe import Observation

__all__ = [
    "UNMETERED",
    "register_estimators",
    "Endpoint",
    "FilePart",
    "Request",
    "Reserve",
    "endpoint_for",
    "unmetered_api",
]


@dataclass(frozen=True, slots=True)
class FilePart:
    """
    One uploaded file of a multipart request (``images.edit``, ``audio.transcriptions``).

    *content* is ``None`` when the file cannot be read without consuming what the SDK is about
    to send (an open stream): estimators must then bound the worst case without it.
    """

    field: str
    filename: str | None
    content: bytes | None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """
    A request as an endpoint sees it, before it is sent.

    *body* is the JSON body, or the form fields of a multipart request (files in *files*).
    *path* is relative to the client's base URL, without query string.
    """

    api: str
    method: str
    path: str
    body: Mapping[str, Any]
    files: tuple[FilePart, ...] = ()
    stream: bool = False
    lookup_id: str | None = None  # the object id a lookup (retrieve/cancel/...) refers to
    deployments: Mapping[str, str] = field(default_factory=dict)  # Azure: deployment -> model
    exact_input_tokens: int | None = None  # the server's own count, when the client asked for it

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) and model else None

    def price_models(self) -> tuple[str, ...]:
        """The names to price the request's model by: an Azure deployment's mapped model first."""
        model = self.model
        if model is None:
            return ()
        mapped = self.deployments.get(model)
        return (mapped, model) if mapped and mapped != model else (model,)


@dataclass(frozen=True, slots=True)
class Reserve:
    """
    The worst case of a request, computed before it is sent.

    Attributes:
        cost_usd: The most the request can be billed (every multiplier, the dearest rate it can
            be billed at); ``None`` when no price is known (a budget then refuses the request
            unless it allows unpriced calls).
        input_tokens: The estimated input tokens, for the event (``None``: not counted).
        complete: Whether the estimator saw the whole input; *reasons* say what it could not.
        unpriced: Why *cost_usd* is ``None`` when the model itself is priced (e.g. audio asked
            for and no audio rate published): a budget refuses naming this reason.
    """

    cost_usd: Decimal | None
    input_tokens: int | None = None
    complete: bool = True
    reasons: tuple[str, ...] = field(default=())
    unpriced: str | None = None


class Endpoint:
    """
    One billed API endpoint. Subclasses set `api` and `paths`, and override the hooks whose
    default (token-priced text, Responses/Chat-shaped usage) does not fit.

    Hooks are pure: they read the request and what was received, and do no I/O.
    """

    #: The event's ``api`` value.
    api: ClassVar[str]
    #: (HTTP method, regex matched in full against the relative path) pairs that create a call.
    paths: ClassVar[Sequence[tuple[str, str]]] = ()
    #: (HTTP method, regex with one group: the id) pairs that look up an earlier call's object
    #: (a background response, a batch): billed once, when the object is seen finished.
    lookups: ClassVar[Sequence[tuple[str, str]]] = ()
    #: ``False``: a request that costs nothing itself but that an endpoint needs to see (a
    #: batch's input file upload): no reservation, no event; `finished` runs on success.
    billed: ClassVar[bool] = True
    #: ``False``: the request names no model (a batch: its lines do); it is estimated anyway.
    needs_model: ClassVar[bool] = True
    #: The model the API uses when the request names none (``images.variation``: dall-e-2).
    default_model: ClassVar[str | None] = None

    def matches(self, method: str, path: str) -> bool:
        return any(m == method and re.fullmatch(p, path) for m, p in self.paths)

    def lookup_id(self, method: str, path: str) -> str | None:
        for m, pattern in self.lookups:
            if m == method and (found := re.fullmatch(pattern, path)):
                return found.group(1)
        return None

    def estimate(self, request: Request) -> Reserve:
        """The worst case before sending (default: nothing known: ``Reserve(None)``)."""
        return Reserve(None)

    def bound(self, request: Request) -> Reserve | None:
        """
        A worst case never below `estimate`'s, much cheaper to compute (no tokenizing), or
        ``None`` when `estimate` is cheap already (the default).

        A budget admits on it and has `estimate` computed while the request is in flight; a
        bound that does not fit is never a refusal: the exact estimate then decides.
        """
        return None

    def observe(self, seen: Observation, obj: Any) -> None:
        """Record what matters for billing from one received object (response, event, dict)."""
        seen.take(obj)

    def stream_observer(
        self, seen: Observation, observe: Callable[[Any], None]
    ) -> Callable[[Any], None]:
        """
        The function a typed stream calls with each event: *observe* (`observe` behind the
        core's error guard) by default; an endpoint may take its bulk events on a faster path
        that records the same.
        """
        return observe

    def finished(self, request: Request, seen: Observation) -> None:
        """An unbilled request (`billed` ``False``) succeeded (default: nothing to do)."""

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """
        The usage to bill when a response arrived but reported none: input as estimated, output
        counted from the text received (flagged ``usage_source: "estimated"``).
        """
        from costmeter._input_count import output_tokens_of  # noqa: PLC0415  (tokenizer: lazy)

        model = seen.response_model or request.model or ""
        texts = seen.deltas or [seen.final_text() or ""]
        output = output_tokens_of(texts, model) if any(texts) else 0
        return Usage(input_tokens=estimated_input, output_tokens=output)

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        """
        The exact cost of *usage* (default: per-token text, audio and cache rates).

        Raises:
            UnknownModelError / PricingError: no price for it (the core records the call as
                unpriced and, inside a budget, charges what it reserved).
        """
        return cost_of(model, usage, service_tier=service_tier)


# Billed endpoints, one module each (imported lazily, once, on the first metered request).
_MODULES: tuple[str, ...] = (
    "costmeter._endpoints.responses",
    "costmeter._endpoints.chat",
    "costmeter._endpoints.embeddings",
    "costmeter._endpoints.images",
    "costmeter._endpoints.audio",
    "costmeter._endpoints.completions",
    "costmeter._endpoints.batches",
)

#: Requests that bill money but no endpoint module prices yet: (method, path regex) -> api.
UNMETERED: Mapping[tuple[str, str], str] = {
    ("post", r"/images/generations"): "images.generate",
    ("post", r"/images/edits"): "images.edit",
    ("post", r"/images/variations"): "images.variation",
    ("post", r"/audio/transcriptions"): "audio.transcriptions",
    ("post", r"/audio/translations"): "audio.translations",
    ("post", r"/audio/speech"): "audio.speech",
    ("post", r"/completions"): "completions",
    ("post", r"/batches"): "batches",
    ("post", r"/realtime/client_secrets"): "realtime",
    ("post", r"/realtime/calls.*"): "realtime",
    ("post", r"/fine_tuning/jobs"): "fine_tuning",
    ("post", r"/videos.*"): "videos",
    ("post", r"/containers"): "containers",
    ("post", r"/moderations"): "moderations",
}

_registry: list[Endpoint] | None = None


def _endpoints() -> list[Endpoint]:
    global _registry  # noqa: PLW0603
    if _registry is None:
        found: list[Endpoint] = []
        for name in _MODULES:
            module = importlib.import_module(name)
            found.extend(getattr(module, "ENDPOINTS", ()))
        _registry = found
    return _registry


def endpoint_for(method: str, path: str) -> tuple[Endpoint, str | None] | None:
    """
    The endpoint billing ``METHOD path``, and the looked-up object id for a lookup request;
    ``None`` for requests that bill nothing (or that no module meters: see `unmetered_api`).
    """
    method = method.lower()
    for endpoint in _endpoints():
        if endpoint.matches(method, path):
            return endpoint, None
        found = endpoint.lookup_id(method, path)
        if found is not None:
            return endpoint, found
    return None


def unmetered_api(method: str, path: str) -> str | None:
    """The ``api`` name of a billed request no endpoint module meters yet, else ``None``."""
    method = method.lower()
    metered = {e.api for e in _endpoints()}
    for (m, pattern), api in UNMETERED.items():
        if m == method and api not in metered and re.fullmatch(pattern, path):
            return api
    return None


def register_estimators() -> None:
    """
    Make ``costmeter.estimate(api=...)`` cover every endpoint module (images, audio, batches,
    ...) through its own `Endpoint.estimate`: the keyword arguments are the request body;
    uploaded files (``file=``, ``image=``, ...) are read as they would be sent. Endpoints
    ``estimate`` already knows keep their own estimator.
    """
    from costmeter._estimate import _ESTIMATORS, register_estimator  # noqa: PLC0415

    for endpoint in _endpoints():
        if endpoint.api in _ESTIMATORS or not endpoint.paths:
            continue
        register_estimator(endpoint.api, _estimator_of(endpoint))


def _estimator_of(endpoint: Endpoint) -> Any:
    from costmeter._estimate import Estimate  # noqa: PLC0415
    from costmeter._flow import _peek  # noqa: PLC0415

    method, pattern = endpoint.paths[0]

    def estimator(body: dict[str, Any], model: str) -> Estimate:
        files: list[FilePart] = []
        fields: dict[str, Any] = {"model": model}
        for key, value in body.items():
            uploads = value if isinstance(value, list) and key in ("image", "file") else [value]
            if key in ("file", "image", "mask", "audio") or any(
                isinstance(v, (bytes, tuple)) or hasattr(v, "read") for v in uploads
            ):
                for upload in uploads:
                    name, content = (upload[0], upload[1]) if isinstance(upload, tuple) else (
                        getattr(upload, "name", None), upload)  # fmt: skip
                    files.append(FilePart(key, name, _peek(content)))
            else:
                fields[key] = value
        request = Request(
            api=endpoint.api,
            method=method,
            path=pattern,
            body=fields,
            files=tuple(files),
            stream=bool(fields.get("stream")),
        )
        reserve = endpoint.estimate(request)
        return Estimate(
            model=model,
            input_tokens=reserve.input_tokens or 0,
            max_output_tokens=0,
            output_bound_from_request=False,
            cost_usd=reserve.cost_usd,
            complete=reserve.complete,
            reasons=reserve.reasons,
            price_source=None,
            api=endpoint.api,
        )

    return estimator
