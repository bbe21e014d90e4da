"""
The fake's route table: each endpoint module registers its routes with `add_route`, and billing
hooks see every generated response.

A route handler is called as ``handler(fake, reply, call)``: *fake* the `FakeAPI` (its state and
configuration), *reply* the `Reply` to write the answer into, *call* the parsed request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from costmeter.testing._faults import _Taken
from costmeter.testing._reply import Reply
from costmeter.testing._wire import JSONDict, _error_body

if TYPE_CHECKING:
    from costmeter.testing._api import FakeAPI
    from costmeter.testing._usage import _Plan

__all__ = ["ExtraRoute", "add_route"]


@dataclass(frozen=True)
class _Call:
    """One parsed request on its way to a route."""

    method: str
    path: str
    body: JSONDict
    headers: Mapping[str, str]
    query: Mapping[str, str]
    faults: _Taken
    #: The raw query string, for routes that take repeated keys (``key[]=a&key[]=b``).
    query_string: str = ""


Handler = Callable[["FakeAPI", Reply, _Call], None]


@dataclass(frozen=True)
class ExtraRoute:
    """A route served by an endpoint module of `costmeter.testing` (responses, images, ...)."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    billed: bool


_ROUTES: list[ExtraRoute] = []
#: Called as ``hook(fake, plan, request_headers)`` for each response the fake generates
#: (``costmeter.testing._admin`` keeps the organization's bill with it).
_BILLING_HOOKS: list[Callable[[FakeAPI, _Plan, Mapping[str, str]], None]] = []


def add_route(method: str, pattern: str, handler: Handler, *, billed: bool = True) -> None:
    """
    Serve ``METHOD /v1/...`` paths matching *pattern* (a regex, matched in full) with *handler*.

    Each endpoint the fake serves lives in its own module and registers its routes here, so the
    core stays the same; the first registered match wins. *billed* routes count in
    `FakeOpenAI.calls`.
    """
    _ROUTES.append(ExtraRoute(method.upper(), re.compile(pattern), handler, billed))


def add_model_route(
    pattern: str, endpoint: str, prefix: str, answer: Callable[[FakeAPI, Reply, _Call, _Plan], None]
) -> None:
    """
    Serve a billed ``POST`` that generates a model response: 400 when the body names no model,
    else *answer* gets the call's `_Plan` (usage decided, billed, its usage fault attached).
    """

    def handler(fake: FakeAPI, reply: Reply, call: _Call) -> None:
        if _missing_model(reply, call.body):
            return
        plan = fake._plan(endpoint, call.body, call.headers, prefix)
        if call.faults.usage is not None:
            plan.usage_fault = call.faults.usage
            plan.drop_model = bool(call.faults.usage.params["drop_model"])
        answer(fake, reply, call, plan)

    add_route("POST", pattern, handler)


def _route_for(method: str, path: str) -> ExtraRoute | None:
    for route in _ROUTES:
        if route.method == method and route.pattern.fullmatch(path):
            return route
    return None


def _missing_model(reply: Reply, body: JSONDict) -> bool:
    """Answer 400 like the API when a request names no model; whether it did."""
    if body.get("model"):
        return False
    reply.send_json(400, _error_body(400, "Missing required parameter: 'model'."))
    return True
