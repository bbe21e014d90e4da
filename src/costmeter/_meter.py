"""
The meter: everything that *decides* about one API call, in one place, with no I/O.

A `Call` is created before the request is sent for the `Endpoint` that bills it. It estimates the
worst case and reserves it in every active budget (which may refuse), is told about each attempt
the SDK makes (an attempt that reached the API and lost its response is billed all the same),
observes whatever comes back through its endpoint, and finishes exactly once on every exit path
(complete, incomplete, failed, error, abandoned, cancelled): it prices the usage — reported, or
estimated when none arrived, or the reserved worst case when the response was lost or cannot be
priced — settles the budgets and emits one ``costmeter.call`` event (`costmeter._record`).

The flow that drives it (`costmeter._flow`) does the I/O; a call's state changes only through
its own methods.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401  (see below)
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from costmeter import _events as _log
from costmeter._budget import Budget, Reservation, Settled, active_budgets
from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._errors import (
    BudgetExceededError,
    ConfigurationError,
    CostmeterError,
    UnknownModelError,
    UnpricedRequestError,
)
from costmeter._model_names import parse_model
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation
from costmeter._pricing import Cost, UnpricedTokensError, normalize_tier
from costmeter._record import CallRecord
from costmeter._tags import current_tags
from costmeter._usage import Usage, field_of

__all__ = [
    "CURRENT",
    "Call",
    "MeterConfig",
    "current_call",
    "report_internal_error",
    "set_strict",
    "strict",
]

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
# Transport failures that happen before the request reaches the API: nothing was billed.
# (Names, not classes: the same for ``httpx2`` and a 0.x ``httpx`` client.)
_NOT_SENT = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "UnsupportedProtocol",
        "ProxyError",
        "LocalProtocolError",
        "InvalidURL",
    }
)
# tiktoken imports ``concurrent.futures.thread``, whose import registers a shutdown hook and so
# fails during interpreter shutdown: imported here, a metered call made from an ``atexit``
# handler (the tokenizer's first use) still works.

_OUTCOME_OF_STATUS = {"incomplete": "incomplete", "failed": "failed", "cancelled": "cancelled"}
_strict = False
#: The call whose request is being sent in this context (set by the flow around the SDK's
#: ``request()``; read by the per-attempt hooks and by the stream classes the SDK builds).
CURRENT: ContextVar[Call | None] = ContextVar("costmeter_call", default=None)


def current_call() -> Call | None:
    """The call whose request is being sent in this context, if any."""
    return CURRENT.get()


def set_strict(enabled: bool = True) -> None:
    """
    Re-raise costmeter's internal failures instead of logging ``costmeter.internal_error``.

    Off by default: metering must never break a user's call. costmeter's own tests turn it on.
    """
    global _strict  # noqa: PLW0603
    _strict = enabled


def strict() -> bool:
    """Whether internal failures re-raise (`set_strict`)."""
    return _strict


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
        always_estimate: Estimate every call before sending, even with no budget active.
        region: The data-residency region of the client's host (``eu.api.openai.com`` → ``eu``),
            whose requests OpenAI bills with a `REGIONAL_UPLIFT`; ``None`` for the global host.
    """

    budget: Budget | None = None
    include_stream_usage: bool = False
    exact_input_tokens: bool = False
    deployments: Mapping[str, str] = field(default_factory=dict)
    log_content: bool = False
    azure: bool = False
    region: str | None = None
    always_estimate: bool = False


#: Regional processing (data residency) costs 10% more than the global endpoint.
REGIONAL_UPLIFT = Decimal("1.1")


class _Registry:
    """
    Objects billed later (background responses, batches), and recently billed ids, so each id
    bills once per process.

    A ``background=True`` create returns ``queued`` with no usage; its cost arrives later via
    ``retrieve``, a stream replay or ``cancel``. The creating call stays pending (holding its
    budget reservation) until one of them reports a terminal status.
    """

    def __init__(self, remember: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Call] = {}
        self._billed: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def add_pending(self, object_id: str, call: Call) -> None:
        with self._lock:
            self._pending[object_id] = call

    def pop_pending(self, object_id: str) -> Call | None:
        with self._lock:
            return self._pending.pop(object_id, None)

    def drain_pending(self) -> list[Call]:
        """Every call still waiting for its object to finish (at exit)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        return pending

    def claim(self, object_id: str) -> bool:
        """Mark *object_id* billed; ``False`` if it already was."""
        with self._lock:
            if object_id in self._billed:
                return False
            self._billed[object_id] = None
            if len(self._billed) > self._remember:
                self._billed.popitem(last=False)
            return True

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()


registry = _Registry()
if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork() stays held
    os.register_at_fork(after_in_child=registry.reset_after_fork)


@atexit.register
def _report_unbilled_background() -> None:
    """
    A background response still running when the process exits is billed by OpenAI, but
    costmeter never saw its usage: say so (one ``costmeter.warning`` each, with the worst case
    that was reserved) rather than lose it silently.
    """
    for call in registry.drain_pending():
        _log.emit(
            _log.WARNING,
            {
                "warning": "background_response_unbilled",
                "api": call.api,
                "model": call.model,
                "response_id": call.seen.response_id,
                "estimated_cost_usd": _log.usd(call.worst_case),
                "tags": dict(call.tags),
            },
        )


def _dedupe(budgets: tuple[Budget, ...]) -> tuple[Budget, ...]:
    """Each budget once, however often it was entered (a nested ``with b:`` charges once)."""
    seen: list[Budget] = []
    for b in budgets:
        if not any(b is other for other in seen):
            seen.append(b)
    return tuple(seen)


class Call:
    """One metered API call (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, request: Request, config: MeterConfig) -> None:
        self.endpoint = endpoint
        self.request = request
        self.config = config
        self.api = endpoint.api
        self.model = request.model or endpoint.default_model
        self.lookup = request.lookup_id is not None
        self.stream = request.stream
        self.started = time.perf_counter()
        self.tags = current_tags()
        budgets = active_budgets()
        if config.budget is not None:
            budgets = (*budgets, config.budget)
        self.budgets = _dedupe(budgets)
        self.reservations: list[Reservation] = []
        self.estimate: Reserve | None = None
        self._deferred = False  # the estimate was skipped: nothing needed it before sending
        self.seen = Observation(response_id=request.lookup_id, keep_text=config.log_content)
        self.seen.background = bool(request.body.get("background"))
        self.attempts = 0  # attempts the SDK made (0: it raised before sending anything)
        self.lost: list[str] = []  # attempts that reached the API and lost their response
        self.hide_usage_chunk = False
        self._in_sdk = False
        self._finish_lock = threading.Lock()
        self.finished = False

    @property
    def worst_case(self) -> Decimal | None:
        estimate = self._ensure_estimate()
        return None if estimate is None else estimate.cost_usd

    def _ensure_estimate(self) -> Reserve | None:
        """The estimate, computed now if it was deferred (a lost response, missing usage)."""
        if self._deferred:
            self._deferred = False
            try:
                self.estimate = _uplifted(self.endpoint.estimate(self.request), self.config.region)
            except Exception as exc:
                if _strict:
                    raise
                report_internal_error(exc, "estimate", self.api, self.model)
        return self.estimate

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
        if not (self.config.exact_input_tokens and self.api == "responses" and not self.lookup):
            return None
        return {key: self.request.body[key] for key in _COUNT_KEYS if key in self.request.body}

    def begin(self, exact_input_tokens: int | None = None) -> None:
        """
        Estimate the worst case and reserve it in every active budget.

        Raises:
            BudgetExceededError: a budget cannot cover the worst case; do not send.
            UnpricedRequestError: a budget is active and the worst case cannot be bounded.
        """
        if self.lookup or not self.endpoint.billed:
            return  # a lookup bills an earlier call; an unbilled request reserves nothing
        if self.model is None and self.endpoint.needs_model:
            return  # no model: the API rejects the request
        if exact_input_tokens is not None:
            self.request = _with_exact(self.request, exact_input_tokens)
        elif not (self.budgets or self.config.always_estimate or self.config.exact_input_tokens):
            # Count only when it pays: with no budget nothing can be refused, and the response
            # reports the real usage. The estimate is made later only if it is needed (no
            # usage arrived, a response was lost); events then carry null estimates.
            self._deferred = True
            return
        try:
            self.estimate = _uplifted(self.endpoint.estimate(self.request), self.config.region)
        except Exception as exc:
            if self.budgets and not all(b.allow_unpriced for b in self.budgets):
                if isinstance(exc, ConfigurationError):
                    raise  # e.g. a broken COSTMETER_PRICES_FILE: its own error names the file
                raise UnpricedRequestError(
                    self.api, f"its worst case could not be estimated: {type(exc).__name__}: {exc}"
                ) from exc
            if _strict:
                raise
            report_internal_error(exc, "estimate", self.api, self.model)
            return
        if not self.budgets:
            return
        amount = self.estimate.cost_usd
        if amount is None:
            if not all(b.allow_unpriced for b in self.budgets):
                _log.emit(_log.BUDGET_EXCEEDED, self._unpriced_refusal())
                if self.estimate.unpriced is not None or self.model is None:
                    reason = self.estimate.unpriced or "no model to price it by"
                    raise UnpricedRequestError(self.api, reason)
                raise UnknownModelError(self.model, ("all price sources",))
            amount = ZERO
        self._reserve(amount)

    def _reserve(self, amount: Decimal) -> None:
        try:
            # Held as sent: should this process die with the request in flight, its lease
            # ends in a charge (OpenAI billed it), not a release.
            reservation = Reservation.take(self.budgets, amount, self.model, sent=True)
        except BudgetExceededError as refusal:
            _log.emit(_log.BUDGET_EXCEEDED, _exceeded_fields(refusal, refused=True))
            raise
        self.reservations.append(reservation)
        for warning in reservation.warned:
            _log.emit(_log.BUDGET_EXCEEDED, _exceeded_fields(warning, refused=False))

    def _unpriced_refusal(self) -> dict[str, Any]:
        inner = self.budgets[-1]
        return {
            "budget": inner.name,
            "limit_usd": _log.usd(inner.limit_usd),
            "estimated_cost_usd": None,
            "model": self.model,
            "api": self.api,
            "reason": "unpriced",
            "refused": True,
        }

    def release(self) -> None:
        """Give back every reservation (the request was refused, or never sent)."""
        reservations, self.reservations = self.reservations, []
        for reservation in reservations:
            reservation.release()

    # -- each attempt the SDK makes ------------------------------------------------------------
    def attempt(self) -> None:
        """
        The SDK is about to send an attempt. A retry after an attempt whose response was lost
        is a second billed request: reserve its worst case too (which may refuse it).
        """
        self.attempts += 1
        if self.lost and self.budgets and self.worst_case is not None:
            self._reserve(self.worst_case)

    def attempt_failed(self, exc: BaseException) -> None:
        """An attempt raised before a response: billed when the request had reached the API."""
        if type(exc).__name__ not in _NOT_SENT and isinstance(exc, Exception):
            self.lost.append(type(exc).__name__)

    def answered(self, request_id: str | None, success: bool) -> None:
        """An attempt got response headers (a retried 5xx/429 is not billed)."""
        if request_id:
            self.seen.request_id = request_id
        if success:
            self.seen.received = True

    # -- while receiving ---------------------------------------------------------------------
    def observe(self, obj: Any) -> None:
        """Take what matters for billing from a response object, stream event or JSON dict."""
        try:  # once per stream event: no guard object
            self.endpoint.observe(self.seen, obj)
        except Exception as exc:
            if _strict:
                raise
            report_internal_error(exc, "observe", self.api, self.model)

    def stream_next(self) -> None:
        """The SDK's stream generator is being advanced (its own body close is not an exit)."""
        self._in_sdk = True

    def stream_item(self, item: Any) -> bool:
        """A typed stream event left the SDK: observe it; ``False`` hides it from the caller
        (only the usage-only Chat chunk costmeter itself asked for, ``include_stream_usage``)."""
        self._in_sdk = False
        self.observe(item)
        return not (self.hide_usage_chunk and _usage_only(item))

    def stream_ended(self, error: BaseException | None = None) -> None:
        """The SDK's stream generator ended (or raised *error*): this is how iteration ended."""
        self._in_sdk = False
        if error is None and not self.seen.terminal and self.seen.usage is None:
            error = _IncompleteStreamError()  # the server closed the stream before its end
        self.finish(error)

    def body_failed(self, exc: BaseException) -> None:
        """The HTTP body broke. Inside the SDK's stream the SDK wraps it and `stream_ended`
        finishes with what the caller sees; a raw reader finishes here."""
        if not self._in_sdk:
            self.finish(exc)

    def body_closed(self) -> None:
        """The HTTP body was closed (read to its end, or abandoned)."""
        if not self._in_sdk:
            self.finish(abandoned=True)

    # -- finishing ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        """Price, settle and emit — exactly once, whatever path gets here first."""
        with self._finish_lock:
            if self.finished:
                return
            self.finished = True
        with self._guard("finish"):
            if error is not None and not self.attempts and not self.seen.received:
                self.release()  # the SDK raised before sending anything: nothing to record
                return
            self._finish(error, abandoned)

    def _finish(self, error: BaseException | None, abandoned: bool) -> None:
        seen = self.seen
        if not self.endpoint.billed:
            self.release()
            if error is None and seen.received:
                self.endpoint.finished(self.request, seen)
            return
        if self.lookup:
            self._finish_lookup(error)
            return
        if seen.background and seen.response_id:
            if self.reservations:  # held under the object's id: any process may settle it
                self.reservations[0].hold_as_object(seen.response_id, self._created_at())
            # A background object keeps running server-side even when our connection to its
            # stream drops or the reading task is cancelled: billed when a lookup sees it end.
            if seen.usage is None and not seen.terminal:
                registry.add_pending(seen.response_id, self)
                return
            if not registry.claim(seen.response_id):
                self.release()
                return
        self._settle_and_emit(error, abandoned)

    def _created_at(self) -> float | None:
        """When the object was created (the window it is charged in, in every process)."""
        created = field_of(self.seen.final_response, "created_at")
        return float(created) if isinstance(created, (int, float)) and created > 0 else None

    def _finish_lookup(self, error: BaseException | None) -> None:
        """A retrieve/cancel/replay: bills a background object the first time it is terminal."""
        seen = self.seen
        if error is not None or seen.response_id is None or not seen.terminal:
            return
        pending = registry.pop_pending(seen.response_id)
        if pending is None:
            if seen.background and registry.claim(seen.response_id):
                self._settle_and_emit(None, abandoned=False)
            return
        if not registry.claim(seen.response_id):
            pending.release()
            return
        pending.seen.absorb(seen)
        pending._settle_and_emit(None, abandoned=False)

    def _outcome(self, error: BaseException | None, abandoned: bool) -> str:
        if error is not None:
            return "cancelled" if isinstance(error, _CANCELLATIONS) else "error"
        status = self.seen.status
        if status in _OUTCOME_OF_STATUS:
            return _OUTCOME_OF_STATUS[status]
        if abandoned and self.seen.usage is None and status != "completed":
            return "cancelled"
        return "ok"

    def _usage(self) -> tuple[Usage, str]:
        """The usage to bill and where it came from."""
        seen = self.seen
        if seen.usage is not None:
            return seen.usage, "reported"
        if seen.received:  # a response arrived without (usable) usage: its text was billed
            return self.endpoint.fallback_usage(
                self.request, seen, self._estimated_input
            ), "estimated"
        if self.lost:  # the last attempt reached the API and its response was lost
            return Usage(input_tokens=self._estimated_input), "reserved"
        return Usage(), "reported"  # no request reached the API: nothing was billed

    @property
    def _estimated_input(self) -> int:
        estimate = self._ensure_estimate()
        return 0 if estimate is None else estimate.input_tokens or 0

    def _settle_and_emit(self, error: BaseException | None, abandoned: bool) -> None:
        """
        Charge and log every billed attempt: each attempt whose response was lost before the
        one that answered (or before the last, lost one) is its own ``costmeter.call`` event,
        charged the reserved worst case — OpenAI bills a request it received, answered or not.
        """
        outcome = self._outcome(error, abandoned)
        usage, source = self._usage()
        lost_before = self.lost[:-1] if source == "reserved" else self.lost
        if source == "reserved":
            cost, total = None, self.worst_case
            price_status = "ok" if total is not None else "unknown_model"
        else:
            cost, price_status = self._price(usage)
            total = None if cost is None else cost.total_usd
        worst = self.worst_case if lost_before else None  # each lost attempt: its worst case
        with money_math():
            extra = ZERO if not lost_before else None if worst is None else worst * len(lost_before)
            whole = None if total is None or extra is None else total + extra
        charged, settled = self._charge(whole)
        if settled and all(entry.duplicate for entry in settled):
            return  # another process sharing the ledger charged (and logged) this object
        records = [
            self._record(
                "error",
                _Lost(name),
                Usage(input_tokens=self._estimated_input),
                "reserved",
                None,
                "ok" if worst is not None else "unknown_model",
                worst,
                worst,
                settled,
            )
            for name in lost_before
        ]
        with money_math():
            own = None if charged is None or extra is None else charged - extra
        records.append(
            self._record(outcome, error, usage, source, cost, price_status, total, own, settled)
        )
        for record in records:
            _log.emit(_log.CALL, record.as_event(_log.usd))
        for entry in settled:
            for fraction in entry.crossed_thresholds:
                _log.emit(
                    _log.BUDGET_THRESHOLD,
                    {
                        "budget": entry.budget.name,
                        "budget_key": entry.budget_key,
                        "fraction": float(fraction),
                        "limit_usd": _log.usd(entry.budget.limit_usd),
                        "spent_usd": _log.usd(entry.spent_usd),
                    },
                )

    def _charge(self, total: Decimal | None) -> tuple[Decimal | None, list[Settled]]:
        """
        Settle the budgets: the exact cost, or — when it cannot be computed — at least what was
        reserved for the call (a billed call is never charged $0). Returns what was charged and,
        per budget, its numbers after the charge (no second ledger read for the event).
        """
        if not self.reservations:
            if not (self.lookup and self.budgets and total):
                return total, []
            # A background response (or batch) created elsewhere — another process, a bare
            # client — and first seen finished here: charged to this call's budgets, settling
            # the creator's hold if it took one in a shared ledger, once per ledger.
            object_id = self.seen.response_id or ""
            self.reservations = [
                Reservation.for_object(self.budgets, object_id, self._created_at(), self.model)
            ]
        if total is None:
            with money_math():
                total = sum((r.amount for r in self.reservations), ZERO)
        first, *rest = self.reservations
        self.reservations = []
        settled = first.settle_report(total)
        for reservation in rest:
            reservation.settle_report(ZERO)
        return total, settled

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
        served_model = self.seen.response_model
        if served_model:
            served = deployments.get(served_model, served_model)
            if mapped is None or _vaguer(mapped, served):
                return served
            return mapped
        return mapped or self.model

    def _price(self, usage: Usage) -> tuple[Cost | None, str]:
        model = self._pricing_model()
        if model is None:
            return None, "unknown_model"
        tier = self.seen.served_tier
        if tier is None:
            requested = self.request.body.get("service_tier")
            tier = requested if isinstance(requested, str) else None
        unmapped = self.config.azure and self.model not in self.config.deployments
        status = "ok"
        try:
            with money_math():
                try:
                    cost = self.endpoint.price(model, usage, self.request, tier)
                except UnknownModelError:
                    if tier is None or normalize_tier(tier) == "default":
                        raise
                    # A tier no price source knows (a new one, say ``ultrafast``): the dearest
                    # tier the model has a price for, never nothing.
                    cost = self._dearest_tier(model, usage)
                    status = "unknown_tier"
                if self.config.region is not None:
                    cost = _scaled(cost, REGIONAL_UPLIFT)
        except UnknownModelError:
            # Azure: the request names a deployment, which only ``deployments=`` can price.
            return None, "unmapped_deployment" if unmapped else "unknown_model"
        except UnpricedTokensError as exc:
            return None, f"unpriced_{exc.kind}_tokens"
        except Exception as exc:
            if _strict:
                raise
            # the event still goes out, with its tokens, flagged unpriced: nothing is lost
            report_internal_error(exc, "price", self.api, self.model)
            return None, "error"
        if unmapped and len(parse_model(model).candidates()) == 1:
            # Azure named only a family (``gpt-4``, ``gpt-35-turbo``, ``ada``): its versions
            # differ in price, so this one is a best guess until the deployment is mapped.
            return cost, "undated_model"
        return cost, status

    def _dearest_tier(self, model: str, usage: Usage) -> Cost:
        costs = []
        for tier in ("priority", None):
            with contextlib.suppress(UnknownModelError):
                costs.append(self.endpoint.price(model, usage, self.request, tier))
        if not costs:
            raise UnknownModelError(model, ("all price sources",))
        return max(costs, key=lambda cost: cost.total_usd)

    def _record(
        self,
        outcome: str,
        error: BaseException | None,
        usage: Usage,
        source: str,
        cost: Cost | None,
        price_status: str,
        total: Decimal | None,
        charged: Decimal | None,
        settled: list[Settled],
    ) -> CallRecord:
        seen = self.seen
        served = normalize_tier(seen.served_tier) if seen.served_tier else None
        requested = self.request.body.get("service_tier")
        requested = normalize_tier(requested) if isinstance(requested, str) else "default"
        audio = bool(usage.audio_input_tokens or usage.audio_output_tokens)
        images = bool(usage.image_input_tokens or usage.image_output_tokens)
        tools = bool(
            usage.file_search_calls
            or usage.container_sessions
            or usage.image_gen_input_tokens
            or usage.image_gen_output_tokens
        )
        content = self.config.log_content
        inner = self.budgets[-1] if self.budgets else None
        after = next((e for e in reversed(settled) if e.budget is inner), None)
        if inner is not None and after is None:  # nothing settled (not reserved): read it
            spent, remaining, key = inner.spent_usd, inner.remaining_usd, None
        elif after is not None:
            spent, remaining, key = after.spent_usd, after.remaining_usd, after.budget_key
        estimate = self.estimate
        return CallRecord(
            api=self.api,
            model=self.model or seen.response_model,
            response_model=seen.response_model,
            response_id=seen.response_id,
            request_id=seen.request_id,
            stream=self.stream,
            background=seen.background,
            service_tier=served,
            requested_service_tier=requested if served and served != requested else None,
            outcome=outcome,
            error_type=_error_type(error),
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_input_tokens=usage.cache_write_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            web_search_calls=usage.web_search_calls,
            usage_source=source,
            usage_problem=seen.usage_problem,
            estimated_input_tokens=None if estimate is None else estimate.input_tokens,
            estimated_cost_usd=None if estimate is None else estimate.cost_usd,
            estimate_complete=None if estimate is None else estimate.complete,
            estimate_reasons=(
                list(estimate.reasons) if estimate is not None and not estimate.complete else None
            ),
            cost_usd=total,
            input_cost_usd=cost.input_usd if cost else None,
            cached_input_cost_usd=cost.cached_input_usd if cost else None,
            cache_write_cost_usd=cost.cache_write_usd if cost else None,
            output_cost_usd=cost.output_usd if cost else None,
            tool_cost_usd=cost.tool_usd if cost else None,
            price_source=cost.price_source if cost else None,
            priced_as=cost.priced_as if cost else None,
            price_status=price_status,
            duration_ms=int((time.perf_counter() - self.started) * 1000),
            tags=dict(self.tags),
            audio_input_tokens=usage.audio_input_tokens if audio else None,
            audio_output_tokens=usage.audio_output_tokens if audio else None,
            audio_input_cost_usd=cost.audio_input_usd if audio and cost else None,
            audio_output_cost_usd=cost.audio_output_usd if audio and cost else None,
            image_input_tokens=usage.image_input_tokens if images else None,
            image_output_tokens=usage.image_output_tokens if images else None,
            images=usage.images or None,
            audio_seconds=usage.audio_seconds or None,
            input_characters=usage.input_characters or None,
            file_search_calls=usage.file_search_calls if tools else None,
            container_sessions=usage.container_sessions if tools else None,
            image_gen_input_tokens=usage.image_gen_input_tokens if tools else None,
            image_gen_output_tokens=usage.image_gen_output_tokens if tools else None,
            region=self.config.region,
            budget=inner.name if inner else None,
            budget_spent_usd=spent if inner else None,
            budget_remaining_usd=remaining if inner else None,
            budget_key=key if inner else None,
            charged_usd=charged if inner else None,
            request_content=(
                {
                    k: self.request.body[k]
                    for k in ("instructions", "input", "messages", "prompt")
                    if k in self.request.body
                }
                if content
                else None
            ),
            output_text=(("".join(seen.deltas) or seen.final_text()) if content else None),
        )

    # -- internal-error containment ----------------------------------------------------------
    def _guard(self, stage: str) -> _Guard:
        return _Guard(self, stage)


def _uplifted(reserve: Reserve, region: str | None) -> Reserve:
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


def _with_exact(request: Request, tokens: int) -> Request:
    return replace(request, exact_input_tokens=tokens)


class _Lost(Exception):
    """An attempt whose response was lost (recorded, not raised); named after its error."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _IncompleteStreamError(Exception):
    """The server ended a stream cleanly but before its terminal event (recorded, not raised)."""


_IncompleteStreamError.__name__ = "IncompleteStream"


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
        report_internal_error(exc, self.stage, self.call.api, self.call.model)
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


def _error_type(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.name if isinstance(error, _Lost) else type(error).__name__


def _usage_only(item: Any) -> bool:
    """The extra Chat chunk ``include_usage`` adds: no choices, only usage."""
    return getattr(item, "usage", None) is not None and not getattr(item, "choices", True)


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
        "budget_key": getattr(error, "budget_key", None),
        "limit_usd": _log.usd(error.limit_usd),
        "spent_usd": _log.usd(error.spent_usd),
        "reserved_usd": _log.usd(error.reserved_usd),
        "estimated_cost_usd": _log.usd(error.estimated_cost_usd),
        "model": error.model,
        "refused": refused,
    }
