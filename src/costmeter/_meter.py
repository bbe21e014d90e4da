"""
The meter: everything that *decides* about one API call, in one place, with no I/O.

A `Call` is created before the request is sent (estimate, price, budget reservation — which may
refuse), observes whatever the SDK hands back (a response object, stream events, raw JSON), and
finishes exactly once on every exit path (complete, incomplete, failed, error, abandoned,
cancelled), pricing the reported usage — or, when usage never arrived, the estimate of what was
consumed — settling budgets and emitting one ``costmeter.call`` event.

The sync and async shells (`costmeter._shell`) only do I/O around it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costmeter import _logging as _log
from costmeter._budget import Budget, Reservation, active_budgets
from costmeter._errors import BudgetExceededError, CostmeterError, UnknownModelError
from costmeter._models import parse_model
from costmeter._pricing import (
    Cost,
    ModelPrice,
    UnpricedTokensError,
    cost_of,
    normalize_tier,
    price_of,
)
from costmeter._tags import current_tags
from costmeter._usage import Usage, UsageError, usage_from

__all__ = ["Call", "MeterConfig", "route_of", "set_strict"]

_ZERO = Decimal(0)
_BILLED_APIS = {
    "/responses": "responses",
    "/responses/compact": "responses.compact",
    "/chat/completions": "chat.completions",
    "/embeddings": "embeddings",
}
_TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})
_OUTCOME_OF_STATUS = {"incomplete": "incomplete", "failed": "failed", "cancelled": "cancelled"}
_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.cancelled"}
)
_STARTED_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
# What the free ``POST /responses/input_tokens`` endpoint accepts of a Responses request.
_COUNT_KEYS = (
    "model",
    "conversation",
    "input",
    "instructions",
    "parallel_tool_calls",
    "personality",
    "previous_response_id",
    "reasoning",
    "text",
    "tool_choice",
    "tools",
    "truncation",
)
_strict = False


def set_strict(enabled: bool = True) -> None:
    """
    Re-raise costmeter's internal failures instead of logging ``costmeter.internal_error``.

    Off by default: metering must never break a user's call. costmeter's own tests turn it on.
    """
    global _strict  # noqa: PLW0603
    _strict = enabled


@dataclass(frozen=True)
class MeterConfig:
    """
    Per-client metering options, shared by a client and its ``with_options()``/``copy()`` clones.

    Attributes:
        budget: A client-wide cap applied to every call of the client (in addition to the
            budgets active in the caller's context).
        include_stream_usage: Chat streams only: add ``stream_options.include_usage`` and hide the
            extra usage-only chunk from the caller.
        exact_input_tokens: Ask the free ``responses.input_tokens.count`` endpoint for the exact
            input size before each Responses call, instead of the local estimate.
        deployments: Azure deployment name → model, for pricing.
        log_content: Add prompts and outputs to events (off: never logged by default).
        azure: The client is an Azure client: request models are deployment names.
    """

    budget: Budget | None = None
    include_stream_usage: bool = False
    exact_input_tokens: bool = False
    deployments: Mapping[str, str] = field(default_factory=dict)
    log_content: bool = False
    azure: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """What a request is, as far as billing goes."""

    api: str
    kind: str  # "create" (a new billed response) | "lookup" (retrieve/cancel of an existing one)


def route_of(method: str, url: str) -> Route | None:
    """Classify a request by method and path; ``None`` for requests that bill nothing."""
    path = url.split("?", 1)[0].rstrip("/")
    method = method.lower()
    if method == "post":
        api = _BILLED_APIS.get(path)
        if api is not None:
            return Route(api, "create")
        if path.startswith("/responses/") and path.endswith("/cancel"):
            return Route("responses", "lookup")
    elif method == "get" and path.startswith("/responses/") and path.count("/") == 2:
        return Route("responses", "lookup")
    return None


class _Registry:
    """
    Background responses in flight, and recently billed ones, so each response id bills once.

    A ``background=True`` create returns ``queued`` with no usage; its cost arrives later via
    ``retrieve``, a stream replay or ``cancel``. The creating call stays pending (holding its
    budget reservation) until one of them reports a terminal status.
    """

    def __init__(self, remember: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Call] = {}
        self._billed: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def add_pending(self, response_id: str, call: Call) -> None:
        with self._lock:
            self._pending[response_id] = call

    def pop_pending(self, response_id: str) -> Call | None:
        with self._lock:
            return self._pending.pop(response_id, None)

    def drain_pending(self) -> list[Call]:
        """Every call still waiting for its background response to finish (at exit)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        return pending

    def claim(self, response_id: str) -> bool:
        """Mark *response_id* billed; ``False`` if it already was."""
        with self._lock:
            if response_id in self._billed:
                return False
            self._billed[response_id] = None
            if len(self._billed) > self._remember:
                self._billed.popitem(last=False)
            return True


registry = _Registry()

_LARGE_INPUT_CHARS = 4096  # below ~1k tokens counting inline is cheaper than a thread hand-off
_count_pool: ThreadPoolExecutor | None = None
_count_pool_lock = threading.Lock()
_counter_free = threading.Semaphore(1)


def _counter() -> ThreadPoolExecutor:
    """One thread that counts large inputs while their requests are in flight (lazy)."""
    global _count_pool  # noqa: PLW0603
    with _count_pool_lock:
        if _count_pool is None:
            _count_pool = ThreadPoolExecutor(1, thread_name_prefix="costmeter-count")
        return _count_pool


def _forget_counter_after_fork() -> None:
    global _count_pool, _counter_free  # noqa: PLW0603
    _count_pool = None  # the parent's thread does not exist in a forked child
    _counter_free = threading.Semaphore(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_counter_after_fork)


def _large(body: Mapping[str, Any]) -> bool:
    """Whether the text of a request's input is worth counting on the counting thread."""
    size = 0
    for key in ("input", "messages", "instructions"):
        value = body.get(key)
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            for item in value:
                content = item.get("content") if isinstance(item, Mapping) else None
                if isinstance(content, str):
                    size += len(content)
    return size >= _LARGE_INPUT_CHARS


@atexit.register
def _report_unbilled_background() -> None:
    """
    A ``background=True`` response still running when the process exits is billed by OpenAI,
    but costmeter never saw its usage: say so (one ``costmeter.warning`` each, with the
    worst case that was reserved) rather than lose it silently.
    """
    for call in registry.drain_pending():
        _log.emit(
            _log.WARNING,
            {
                "warning": "background_response_unbilled",
                "api": call.route.api,
                "model": call.model,
                "response_id": call.response_id,
                "estimated_cost_usd": _log.usd(call.estimated_cost),
                "tags": dict(call.tags),
            },
        )


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(key)
    return getattr(obj, key, None)


class Call:
    """One metered API call (see the module docstring)."""

    def __init__(
        self,
        route: Route,
        body: Mapping[str, Any] | None,
        config: MeterConfig,
        *,
        stream: bool,
        response_id: str | None = None,
    ) -> None:
        self.route = route
        self.body: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        self.config = config
        model = self.body.get("model")
        self.model: str | None = model if isinstance(model, str) else None
        self.stream = bool(stream)
        self.background = bool(self.body.get("background"))
        self.started = time.perf_counter()
        self.tags = current_tags()
        self.budgets: tuple[Budget, ...] = active_budgets()
        if config.budget is not None and config.budget not in self.budgets:
            self.budgets = (*self.budgets, config.budget)
        self.reservation: Reservation | None = None
        self._counting: Future[None] | None = None
        self.estimated_input_tokens: int | None = None
        self.estimated_cost: Decimal | None = None
        self.estimate_complete = True
        # observed
        self.received = False
        self.response_id = response_id
        self.response_model: str | None = None
        self.request_id: str | None = None
        self.served_tier: str | None = None
        self.status: str | None = None
        self.usage_obj: Any = None
        self.final_response: Any = None  # last response object seen: its text, if usage is missing
        self.web_search_calls = 0
        self.deltas: list[str] = []
        self.output_text: str | None = None  # only kept when the client opted in to content
        self.in_sdk = False
        self.hide_usage_chunk = False
        self._finish_lock = threading.Lock()
        self.finished = False

    # -- before sending ----------------------------------------------------------------------
    @property
    def ledger_io(self) -> bool:
        """Whether a budget of this call keeps its books in SQLite or Redis (blocking I/O)."""
        return any(b.persistent for b in self.budgets)

    def count_body(self) -> dict[str, Any] | None:
        """
        The body for the free input-token count endpoint, when the client asked for exact input
        tokens (``exact_input_tokens=True``) and this is a new Responses call; else ``None``.

        The server counts what it will bill, including server-side context the local estimate
        cannot see (``previous_response_id``, ``conversation``): one extra round trip, no cost.
        """
        if not (
            self.config.exact_input_tokens
            and self.route.api == "responses"
            and self.route.kind == "create"
        ):
            return None
        return {key: self.body[key] for key in _COUNT_KEYS if key in self.body}

    def begin(self, exact_input_tokens: int | None = None) -> None:
        """
        Estimate the worst case and reserve it in every active budget.

        With no budget active nothing can be refused, so a large non-streamed input is counted
        on one helper thread while the request is in flight and joined before the event.

        Raises:
            BudgetExceededError: a budget cannot cover the worst case; do not send.
            UnknownModelError: the model is unpriced and a budget is active.
        """
        if self.route.kind != "create":
            return
        price = self._requested_price()
        if (
            exact_input_tokens is None
            and not self.budgets
            and not self.stream
            and _large(self.body)
            and _counter_free.acquire(blocking=False)
        ):
            # Nothing can be refused, so the count is only needed for the event: run it while
            # the request is in flight (tiktoken releases the GIL), joined before the event.
            # One count at a time: when the thread is busy, count inline as usual.
            self._counting = _counter().submit(self._estimate, price, None)
            self._counting.add_done_callback(lambda _: _counter_free.release())
            return
        self._estimate(price, exact_input_tokens)
        if not self.budgets:
            return
        if self.estimated_cost is None:
            if all(b.allow_unpriced for b in self.budgets):
                self.reservation = Reservation.take(self.budgets, _ZERO, self.model)
                return
            raise UnknownModelError(self.model, ("all price sources",))
        try:
            self.reservation = Reservation.take(self.budgets, self.estimated_cost, self.model)
        except BudgetExceededError as refusal:
            _log.emit(_log.BUDGET_EXCEEDED, _exceeded_fields(refusal, refused=True))
            raise
        for warning in self.reservation.warned:
            _log.emit(_log.BUDGET_EXCEEDED, _exceeded_fields(warning, refused=False))

    def _estimate(self, price: ModelPrice | None, exact_input_tokens: int | None) -> None:
        """Input tokens (counted locally unless the server counted them) and the worst case."""
        from costmeter._estimate import (  # noqa: PLC0415  (tokenizer loads on first call only)
            count_request_input,
            output_bound,
            worst_case_usd,
        )

        with self._guard("estimate"):
            if exact_input_tokens is not None:  # the server's count: no local tokenizing
                tokens, complete = exact_input_tokens, True
            else:
                tokens, complete, _reasons = count_request_input(
                    self.route.api, self.body, self.model or ""
                )
            self.estimated_input_tokens = tokens
            self.estimate_complete = complete
            if price is not None:
                bound, _ = output_bound(self.route.api, self.body)
                self.estimated_cost = worst_case_usd(price, tokens, bound)

    def _requested_price(self) -> ModelPrice | None:
        """Price at the requested tier (priority costs more: the worst case must use it)."""
        if self.model is None:
            return None
        tier = self.body.get("service_tier")
        tier = tier if isinstance(tier, str) and normalize_tier(tier) != "default" else None
        for model in (self.config.deployments.get(self.model), self.model):
            if model is None:
                continue
            try:
                return price_of(model, service_tier=tier)
            except UnknownModelError:
                if tier is not None:
                    try:
                        return price_of(model)
                    except UnknownModelError:
                        pass
            except CostmeterError:
                return None
        return None

    # -- while receiving ---------------------------------------------------------------------
    def observe(self, obj: Any) -> None:
        """Take what matters for billing from a response object, stream event or JSON dict."""
        self.received = True
        with self._guard("observe"):
            kind = _get(obj, "type")
            if isinstance(kind, str):
                if kind.endswith(".delta"):
                    delta = _get(obj, "delta")
                    if isinstance(delta, str) and kind != "response.audio.delta":
                        self.deltas.append(delta)
                    return
                if kind in _TERMINAL_EVENTS or kind in _STARTED_EVENTS:
                    self._take_response(_get(obj, "response"))
                    return
                if kind == "error":
                    self.status = self.status or "failed"
                    return
            obj_kind = _get(obj, "object")
            if obj_kind == "chat.completion.chunk":
                self._take_chunk(obj)
            elif obj_kind in ("response", "response.compaction"):
                self._take_response(obj)
            elif obj_kind == "chat.completion" or (
                obj_kind is not None and _get(obj, "usage") is not None
            ):
                self._take_response(obj)  # chat.completion, embeddings list
            if self.request_id is None:
                request_id = getattr(obj, "_request_id", None)
                if isinstance(request_id, str):
                    self.request_id = request_id

    def _take_response(self, response: Any) -> None:
        if response is None:
            return
        self.final_response = response
        self.response_id = _get(response, "id") or self.response_id
        model = _get(response, "model")
        if isinstance(model, str) and model:
            self.response_model = model
        tier = _get(response, "service_tier")
        if isinstance(tier, str):
            self.served_tier = tier
        status = _get(response, "status")
        if isinstance(status, str):
            self.status = status
        for choice in _get(response, "choices") or ():
            self._take_finish_reason(choice)
        if _get(response, "background"):
            self.background = True
        usage = _get(response, "usage")
        if usage is not None:
            self.usage_obj = usage
            searches = _get(_get(_get(response, "tool_usage"), "web_search"), "num_requests")
            if isinstance(searches, int) and searches > 0:
                self.web_search_calls = searches
        if self.config.log_content:
            self.output_text = _output_text(response) or self.output_text

    def _take_chunk(self, chunk: Any) -> None:
        self.response_id = self.response_id or _get(chunk, "id")
        model = _get(chunk, "model")
        if isinstance(model, str) and model:
            self.response_model = model
        tier = _get(chunk, "service_tier")
        if isinstance(tier, str):
            self.served_tier = tier
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage_obj = usage
        for choice in _get(chunk, "choices") or ():
            self._take_finish_reason(choice)
            delta = _get(choice, "delta")
            for text in (_get(delta, "content"), _get(delta, "refusal")):
                if isinstance(text, str) and text:
                    self.deltas.append(text)
            for tool_call in _get(delta, "tool_calls") or ():
                arguments = _get(_get(tool_call, "function"), "arguments")
                if isinstance(arguments, str) and arguments:
                    self.deltas.append(arguments)

    def _take_finish_reason(self, choice: Any) -> None:
        """
        A Chat choice's ``finish_reason`` is its end state: ``length`` (cut by ``max_tokens``)
        is the Chat form of an incomplete response; any other reason means it completed, so a
        stream read to its end without usage is not mistaken for an abandoned one.
        """
        reason = _get(choice, "finish_reason")
        if isinstance(reason, str) and self.status != "incomplete":
            self.status = "incomplete" if reason == "length" else "completed"

    def stream_item(self, item: Any) -> bool:
        """A typed stream event left the SDK: observe it; ``False`` hides it from the caller
        (only the usage-only Chat chunk costmeter itself asked for, ``include_stream_usage``)."""
        self.in_sdk = False
        self.observe(item)
        return not (self.hide_usage_chunk and _usage_only(item))

    def stream_ended(self, error: BaseException | None = None) -> None:
        """The SDK's stream generator ended (or raised *error*): this is how iteration ended."""
        self.in_sdk = False
        self.finish(error)

    # -- finishing ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        """Price, settle and emit — exactly once, whatever path gets here first."""
        with self._finish_lock:
            if self.finished:
                return
            self.finished = True
        with self._guard("finish"):
            self._finish(error, abandoned)

    def _finish(self, error: BaseException | None, abandoned: bool) -> None:
        if self.route.kind == "lookup":
            self._finish_lookup(error)
            return
        # A background response keeps running server-side even when our connection to its
        # stream drops or the reading task is cancelled: it is billed when a lookup sees it end.
        if (
            self.background
            and self.response_id
            and self.usage_obj is None
            and self.status not in _TERMINAL_STATUSES
        ):
            registry.add_pending(self.response_id, self)  # billed when it completes
            return
        if self.background and self.response_id and not registry.claim(self.response_id):
            self._release()
            return
        self._settle_and_emit(error, abandoned)

    def _finish_lookup(self, error: BaseException | None) -> None:
        """A retrieve/cancel/replay: bills a background response the first time it is terminal."""
        if error is not None or self.response_id is None:
            return
        terminal = self.status in _TERMINAL_STATUSES
        if not terminal:
            return
        pending = registry.pop_pending(self.response_id)
        if pending is None and not (self.background and registry.claim(self.response_id)):
            return
        if pending is not None:
            if not registry.claim(self.response_id):
                pending._release()
                return
            pending.absorb(self)
            pending._settle_and_emit(None, abandoned=False)
            return
        self._settle_and_emit(None, abandoned=False)

    def absorb(self, other: Call) -> None:
        """Take the final state a later lookup saw for this (background) call's response."""
        self.received = True
        self.status = other.status
        self.usage_obj = other.usage_obj
        self.final_response = other.final_response or self.final_response
        self.web_search_calls = other.web_search_calls
        self.response_model = other.response_model or self.response_model
        self.served_tier = other.served_tier or self.served_tier
        self.deltas.extend(other.deltas)

    def _release(self) -> None:
        if self.reservation is not None:
            self.reservation.settle(_ZERO)

    def _outcome(self, error: BaseException | None, abandoned: bool) -> str:
        if error is not None:
            return "cancelled" if isinstance(error, _CANCELLATIONS) else "error"
        if self.status in _OUTCOME_OF_STATUS:
            return _OUTCOME_OF_STATUS[self.status]
        if abandoned and self.usage_obj is None and self.status != "completed":
            return "cancelled"
        return "ok"

    def _usage(self) -> tuple[Usage, str, str | None]:
        """The usage to bill, where it came from, and any problem with what was reported."""
        problem = None
        if self.usage_obj is not None:
            try:
                return (
                    usage_from(self.usage_obj, web_search_calls=self.web_search_calls),
                    "reported",
                    None,
                )
            except UsageError as exc:
                problem = str(exc)
        if not self.received:
            return Usage(), "reported", problem  # no response at all: nothing was billed
        from costmeter._estimate import output_tokens_of  # noqa: PLC0415

        model = self.response_model or self.model or ""
        # Usage missing from a complete response: its output text was still billed.
        texts = self.deltas or [_output_text(self.final_response) or ""]
        output = output_tokens_of(texts, model) if any(texts) else 0
        return (
            Usage(input_tokens=self.estimated_input_tokens or 0, output_tokens=output),
            "estimated",
            problem,
        )

    def _settle_and_emit(self, error: BaseException | None, abandoned: bool) -> None:
        if self._counting is not None:
            self._counting.result()  # the input count started in `begin` (it never raises)
        outcome = self._outcome(error, abandoned)
        usage, source, problem = self._usage()
        cost, price_status = self._price(usage)
        crossed: list[tuple[Budget, Decimal]] = []
        if self.reservation is not None:
            crossed = self.reservation.settle(cost.total_usd if cost is not None else _ZERO)
        fields = self._fields(outcome, error, usage, source, cost, price_status)
        if problem is not None:
            fields["usage_problem"] = problem
        _log.emit(_log.CALL, fields)
        for b, fraction in crossed:
            _log.emit(
                _log.BUDGET_THRESHOLD,
                {
                    "budget": b.name,
                    "fraction": float(fraction),
                    "limit_usd": _log.usd(b.limit_usd),
                    "spent_usd": _log.usd(b.spent_usd),
                },
            )

    def _pricing_model(self) -> str | None:
        """
        The model to price: the response's model, unless the caller mapped the deployment.

        Azure's responses name models loosely (``gpt-4`` for a ``gpt-4-1106-preview``
        deployment, ``gpt-35-turbo`` for every 3.5 version, ``ada`` for
        ``text-embedding-ada-002``), so a ``deployments=`` mapping wins over the response's
        model, except where the response names a more specific version of the mapped model
        (mapping ``gpt-4o``, response ``gpt-4o-2024-05-13``, which has its own price).
        """
        deployments = self.config.deployments
        mapped = deployments.get(self.model) if self.model else None
        if self.response_model:
            served = deployments.get(self.response_model, self.response_model)
            if mapped is None or _vaguer(mapped, served):
                return served
            return mapped
        return mapped or self.model

    def _price(self, usage: Usage) -> tuple[Cost | None, str]:
        model = self._pricing_model()
        tier = self.served_tier if self.served_tier is not None else self.body.get("service_tier")
        if model is None:
            return None, "unknown_model"
        unmapped = self.config.azure and self.model not in self.config.deployments
        try:
            cost = cost_of(model, usage, service_tier=tier)
        except UnknownModelError:
            # Azure: the request names a deployment, which only ``deployments=`` can price.
            return None, "unmapped_deployment" if unmapped else "unknown_model"
        except UnpricedTokensError as exc:
            return None, f"unpriced_{exc.kind}_tokens"
        except Exception as exc:
            if _strict:
                raise
            # the event still goes out, with its tokens, flagged unpriced: nothing is lost
            report_internal_error(exc, "price", self.route.api, self.model)
            return None, "error"
        if unmapped and len(parse_model(model).candidates()) == 1:
            # Azure named only a family (``gpt-4``, ``gpt-35-turbo``, ``ada``): its versions
            # differ in price, so this one is a best guess until the deployment is mapped.
            return cost, "undated_model"
        return cost, "ok"

    def _fields(
        self,
        outcome: str,
        error: BaseException | None,
        usage: Usage,
        source: str,
        cost: Cost | None,
        price_status: str,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "api": self.route.api,
            "model": self.model,
            "response_model": self.response_model,
            "response_id": self.response_id,
            "request_id": self.request_id,
            "stream": self.stream,
            "background": self.background,
            "service_tier": normalize_tier(self.served_tier) if self.served_tier else None,
            "outcome": outcome,
            "error_type": None if error is None else type(error).__name__,
            "input_tokens": usage.input_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "cache_write_input_tokens": usage.cache_write_input_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "web_search_calls": usage.web_search_calls,
            "usage_source": source,
            "estimated_input_tokens": self.estimated_input_tokens,
            "estimated_cost_usd": _log.usd(self.estimated_cost),
            "estimate_complete": self.estimate_complete,
            "cost_usd": _log.usd(cost.total_usd) if cost else None,
            "input_cost_usd": _log.usd(cost.input_usd) if cost else None,
            "cached_input_cost_usd": _log.usd(cost.cached_input_usd) if cost else None,
            "cache_write_cost_usd": _log.usd(cost.cache_write_usd) if cost else None,
            "output_cost_usd": _log.usd(cost.output_usd) if cost else None,
            "tool_cost_usd": _log.usd(cost.tool_usd) if cost else None,
            "price_source": cost.price_source if cost else None,
            "priced_as": cost.priced_as if cost else None,
            "price_status": price_status,
            "duration_ms": int((time.perf_counter() - self.started) * 1000),
            "tags": dict(self.tags),
        }
        if usage.audio_input_tokens or usage.audio_output_tokens:
            # Only when present, so text-only events keep their schema: audio has its own rates.
            fields["audio_input_tokens"] = usage.audio_input_tokens
            fields["audio_output_tokens"] = usage.audio_output_tokens
            fields["audio_input_cost_usd"] = _log.usd(cost.audio_input_usd) if cost else None
            fields["audio_output_cost_usd"] = _log.usd(cost.audio_output_usd) if cost else None
        if self.config.log_content:  # opt-in only: prompts and outputs are often sensitive
            fields["request_content"] = {
                key: self.body[key]
                for key in ("instructions", "input", "messages")
                if key in self.body
            }
            fields["output_text"] = self.output_text or "".join(self.deltas) or None
        if self.budgets:
            inner = self.budgets[-1]
            fields["budget"] = inner.name
            fields["budget_spent_usd"] = _log.usd(inner.spent_usd)
            fields["budget_remaining_usd"] = _log.usd(inner.remaining_usd)
        return fields

    # -- internal-error containment ----------------------------------------------------------
    def _guard(self, stage: str) -> _Guard:
        return _Guard(self, stage)


class _Guard:
    """
    Turn an unexpected failure inside costmeter into a ``costmeter.internal_error`` event.

    Metering must never break or alter the user's call; `set_strict` re-raises instead.
    """

    __slots__ = ("call", "stage")

    def __init__(self, call: Call, stage: str) -> None:
        self.call = call
        self.stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if _strict:
            return False
        report_internal_error(exc, self.stage, self.call.route.api, self.call.model)
        return True


def report_internal_error(
    exc: BaseException, stage: str, api: str | None, model: str | None
) -> None:
    """Emit ``costmeter.internal_error``; never raises."""
    with contextlib.suppress(Exception):  # the last line of defence must not raise
        _log.emit(
            _log.INTERNAL_ERROR,
            {
                "stage": stage,
                "api": api,
                "model": model,
                "error_type": type(exc).__name__,
                "error": str(exc)[:500],
            },
        )


_CANCELLATIONS: tuple[type[BaseException], ...] = (
    GeneratorExit,
    asyncio.CancelledError,
    KeyboardInterrupt,
)


def _usage_only(item: Any) -> bool:
    """The extra Chat chunk ``include_usage`` adds: no choices, only usage."""
    return getattr(item, "usage", None) is not None and not getattr(item, "choices", True)


def _output_text(response: Any) -> str | None:
    """The text a Responses or Chat response produced (for opt-in content logging)."""
    parts: list[str] = []
    for item in _get(response, "output") or ():
        for content in _get(item, "content") or ():
            text = _get(content, "text")
            if isinstance(text, str):
                parts.append(text)
    for choice in _get(response, "choices") or ():
        text = _get(_get(choice, "message"), "content")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts) or None


def _vaguer(name: str, than: str) -> bool:
    """Whether model *name* is *than* or a less specific name of it (``gpt-4`` of ``gpt-4-0613``)."""
    try:
        short, full = parse_model(name).key, parse_model(than).key
    except CostmeterError:
        return False
    return short == full or full.startswith(short + "-")


def _exceeded_fields(error: BudgetExceededError, *, refused: bool) -> dict[str, Any]:
    return {
        "budget": error.budget_name,
        "limit_usd": _log.usd(error.limit_usd),
        "spent_usd": _log.usd(error.spent_usd),
        "reserved_usd": _log.usd(error.reserved_usd),
        "estimated_cost_usd": _log.usd(error.estimated_cost_usd),
        "model": error.model,
        "refused": refused,
    }
