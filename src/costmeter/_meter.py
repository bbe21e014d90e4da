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
import concurrent.futures.thread  # noqa: F401  (see below)
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from costmeter import _events as _log
from costmeter._background import registry
from costmeter._budget import Budget, Reservation, Settled, active_budgets
from costmeter._call_price import price_call, pricing_model, uplifted
from costmeter._call_record import LostAttempt, call_record
from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._errors import (
    BudgetExceededError,
    ConfigurationError,
    UnknownModelError,
    UnpricedRequestError,
)
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation
from costmeter._pricing import Cost
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
# Calls in flight admitted on a bound of their worst case (`Call._admit_on_bound`), until they
# finish (one already counted costs a lock to skip). A WeakSet: a call abandoned without
# finishing is dropped with it.
_held_on_bounds: weakref.WeakSet[Call] = weakref.WeakSet()
_bounds_lock = threading.Lock()
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
        self.bound: Reserve | None = None  # the bound of the worst case a budget admitted on
        self._estimate_lock = threading.Lock()  # another call may tighten this one's hold
        self.seen = Observation(response_id=request.lookup_id, keep_text=config.log_content)
        self.seen.background = bool(request.body.get("background"))
        self.attempts = 0  # attempts the SDK made (0: it raised before sending anything)
        self.lost: list[str] = []  # attempts that reached the API and lost their response
        self.hide_usage_chunk = False
        # Set by the stream loop while the SDK's stream generator runs: a body it closes or
        # breaks is not how the stream ended (`stream_ended` says how).
        self.in_sdk = False
        self._finish_lock = threading.Lock()
        self.finished = False

    @property
    def worst_case(self) -> Decimal | None:
        estimate = self._ensure_estimate()
        return None if estimate is None else estimate.cost_usd

    def _ensure_estimate(self) -> Reserve | None:
        """
        The estimate, computed now if it was deferred (a lost response, missing usage, a cost
        that cannot be computed); a hold taken on a bound then shrinks to the exact worst case.
        """
        with self._estimate_lock:
            if self._deferred:
                self._deferred = False
                try:
                    self.estimate = self._exact_estimate()
                except Exception as exc:
                    if _strict:
                        raise
                    report_internal_error(exc, "estimate", self.api, self.model)
                worst = None if self.estimate is None else self.estimate.cost_usd
                reservations = self.reservations
                if self.bound is not None and reservations and worst is not None:
                    reservations[0].shrink(worst)
        return self.estimate

    def _exact_estimate(self) -> Reserve:
        return uplifted(self.endpoint.estimate(self.request), self.config.region)

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
        if self.budgets and not self.config.always_estimate and self._admit_on_bound():
            return
        try:
            self.estimate = estimate = self._exact_estimate()
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
        if _held_on_bounds:
            self._tighten_bounds()
        amount = estimate.cost_usd
        if amount is None:
            if not all(b.allow_unpriced for b in self.budgets):
                _log.emit(_log.BUDGET_EXCEEDED, self._unpriced_refusal())
                if estimate.unpriced is not None or self.model is None:
                    reason = estimate.unpriced or "no model to price it by"
                    raise UnpricedRequestError(self.api, reason)
                raise UnknownModelError(self.model, ("all price sources",))
            amount = ZERO
        self._reserve(amount)

    def _admit_on_bound(self) -> bool:
        """
        Admit the call on its endpoint's cheap bound of the worst case (`Endpoint.bound`, e.g.
        text counted by its UTF-8 length): no tokenizing unless something needs the exact
        estimate later (a lost response, missing usage; the hold then shrinks to it).

        ``False`` when there is no bound, or when it is more than `BOUND_SHARE` of what a
        budget has left (or would refuse, or warn): the exact estimate then decides before
        sending, as it always did. So a refusal is never decided on a bound, and near a limit
        every call holds its exact worst case. Budgets in a SQLite/Redis ledger always hold
        the exact worst case: other processes see the hold, a dead process is charged it, and
        the ledger's round trip costs more than the count saves.
        """
        if self.ledger_io:
            return False
        try:
            bound = self.endpoint.bound(self.request)
        except Exception as exc:
            if _strict:
                raise
            report_internal_error(exc, "estimate", self.api, self.model)
            return False
        if bound is None:
            return False
        bound = uplifted(bound, self.config.region)
        if bound.cost_usd is None:
            return False
        reservation = Reservation.probe(self.budgets, bound.cost_usd, self.model, sent=True)
        if reservation is None:
            return False
        self.reservations.append(reservation)
        self.bound, self._deferred = bound, True
        with _bounds_lock:
            _held_on_bounds.add(self)
        return True

    def _tighten_bounds(self) -> None:
        """
        This call is decided on its exact worst case (near a limit): first shrink the holds
        that calls in flight in the same budgets took on their bounds to their exact worst
        cases (counting them now), so that a refusal is decided on exact holds only.
        """
        mine = {b._identity() for b in self.budgets}
        with _bounds_lock:
            others = list(_held_on_bounds)
        for other in others:
            if other is not self and any(b._identity() in mine for b in other.budgets):
                other._ensure_estimate()

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
        try:  # no guard object: this runs once per event of a stream
            self.endpoint.observe(self.seen, obj)
        except Exception as exc:
            self.observe_failed(exc)

    def observe_failed(self, exc: Exception) -> None:
        """Observing raised: reported (raised in strict mode); the caller's call goes on."""
        if _strict:
            raise exc
        report_internal_error(exc, "observe", self.api, self.model)

    def stream_observer(self) -> Callable[[Any], None]:
        """What a typed stream calls with each event (`Endpoint.stream_observer`); the stream
        loop guards it with `observe_failed`."""
        return self.endpoint.stream_observer(self.seen, self.observe)

    def stream_ended(self, error: BaseException | None = None) -> None:
        """The SDK's stream generator ended (or raised *error*): this is how iteration ended."""
        self.in_sdk = False
        if error is None and not self.seen.terminal and self.seen.usage is None:
            error = _IncompleteStreamError()  # the server closed the stream before its end
        self.finish(error)

    def body_failed(self, exc: BaseException) -> None:
        """The HTTP body broke. Inside the SDK's stream the SDK wraps it and `stream_ended`
        finishes with what the caller sees; a raw reader finishes here."""
        if not self.in_sdk:
            self.finish(exc)

    def body_closed(self) -> None:
        """The HTTP body was closed (read to its end, or abandoned)."""
        if not self.in_sdk:
            self.finish(abandoned=True)

    # -- finishing ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        """Price, settle and emit — exactly once, whatever path gets here first."""
        with self._finish_lock:
            if self.finished:
                return
            self.finished = True
        if self.bound is not None:
            with _bounds_lock:
                _held_on_bounds.discard(self)
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
            call_record(
                self,
                "error",
                LostAttempt(name),
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
            call_record(
                self, outcome, error, usage, source, cost, price_status, total, own, settled
            )
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
            self._ensure_estimate()  # a hold taken on a bound: charge the exact worst case
            with money_math():
                total = sum((r.amount for r in self.reservations), ZERO)
        first, *rest = self.reservations
        self.reservations = []
        settled = first.settle_report(total)
        for reservation in rest:
            reservation.settle_report(ZERO)
        return total, settled

    # -- internal-error containment ----------------------------------------------------------
    def _price(self, usage: Usage) -> tuple[Cost | None, str]:
        tier = self.seen.served_tier
        if tier is None:
            requested = self.request.body.get("service_tier")
            tier = requested if isinstance(requested, str) else None
        config = self.config
        model = pricing_model(self.model, self.seen.response_model, config.deployments)
        unmapped = config.azure and self.model not in config.deployments
        try:
            return price_call(
                self.endpoint,
                self.request,
                model,
                tier,
                usage,
                region=config.region,
                unmapped=unmapped,
            )
        except Exception as exc:
            if _strict:
                raise
            # the event still goes out, with its tokens, flagged unpriced: nothing is lost
            report_internal_error(exc, "price", self.api, self.model)
            return None, "error"

    def _guard(self, stage: str) -> _Guard:
        return _Guard(self, stage)


def _with_exact(request: Request, tokens: int) -> Request:
    return replace(request, exact_input_tokens=tokens)


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
