"""
``costmeter.enable_metrics()``: OpenTelemetry metrics from costmeter's events.

Every ``costmeter.call`` event is recorded as the OpenTelemetry GenAI client metrics, under
their semantic-convention names, so GenAI dashboards built for those conventions work as they
are:

- ``gen_ai.client.token.usage`` (histogram, ``{token}``): the input and the output tokens of
  the call, ``gen_ai.token.type`` = ``input`` / ``output``;
- ``gen_ai.client.operation.duration`` (histogram, ``s``), with ``error.type`` on failure;

both with ``gen_ai.operation.name`` (``chat``, or ``embeddings``), ``gen_ai.provider.name``
(``openai``), ``gen_ai.request.model`` and ``gen_ai.response.model``, and the conventions'
advised bucket boundaries. costmeter adds what the conventions have no instrument for:

- ``costmeter.cost`` (counter, ``USD``): the call's exact cost (unpriced calls add nothing);
- ``costmeter.tokens`` (counter, ``{token}``) by ``kind``: ``input``, ``cached``,
  ``cache_write``, ``output``, ``reasoning`` (cached and cache-write tokens are part of input,
  reasoning tokens part of output, as in the events);
- ``costmeter.budget.refusals`` (counter): calls a budget refused before sending;

with the attributes ``model``, ``api``, ``budget`` and the tags whose keys were allowed with
``tag_keys``. Attribute values come from bounded sets only (never response or request ids, never
arbitrary tags), so the number of time series stays bounded.

Metrics are recorded by a listener on costmeter's event path (`costmeter._events.add_listener`)
on the calling thread; recording is an in-memory aggregation, and a failure in it is counted by
the event path, never raised into the call.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from costmeter import _events as _log

__all__ = ["enable_metrics"]

METER_NAME = "costmeter"

# Bucket boundaries advised by the OpenTelemetry GenAI metrics semantic conventions.
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

# costmeter.call token fields → the `kind` attribute of costmeter.tokens
_TOKEN_KINDS = (
    ("input_tokens", "input"),
    ("cached_input_tokens", "cached"),
    ("cache_write_input_tokens", "cache_write"),
    ("output_tokens", "output"),
    ("reasoning_tokens", "reasoning"),
)

# gen_ai.client.token.usage per operation: embeddings produce no output tokens.
_USAGE_TYPES = {
    "chat": (("input_tokens", "input"), ("output_tokens", "output")),
    "embeddings": (("input_tokens", "input"),),
}

_lock = threading.RLock()  # disable() may run while enable_metrics() holds it
_active: Callable[[], None] | None = None
_missing_warned = False


class _Recorder:
    """The instruments, and the event listener that records into them."""

    def __init__(self, meter_provider: Any, tag_keys: tuple[str, ...]) -> None:
        from opentelemetry import metrics  # noqa: PLC0415 - optional dependency

        from costmeter import __version__  # noqa: PLC0415

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, __version__)
        self._tag_keys = tag_keys
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._cost = meter.create_counter(
            "costmeter.cost", unit="USD", description="Cost of the calls, priced by costmeter"
        )
        self._tokens = meter.create_counter(
            "costmeter.tokens", unit="{token}", description="Tokens of the calls, by kind"
        )
        self._refusals = meter.create_counter(
            "costmeter.budget.refusals",
            unit="{call}",
            description="Calls a budget refused before sending",
        )

    def __call__(self, event: str, fields: Mapping[str, Any]) -> None:
        if event == _log.CALL:
            self._call(fields)
        elif event == _log.BUDGET_EXCEEDED and fields.get("refused") is True:
            self._refusals.add(1, self._costmeter_attributes(fields))

    def _costmeter_attributes(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        attributes = {
            key: fields[key] for key in ("model", "api", "budget") if fields.get(key) is not None
        }
        tags = fields.get("tags")
        if self._tag_keys and isinstance(tags, Mapping):
            for key in self._tag_keys:
                value = tags.get(key)
                if value is not None:
                    attributes[key] = str(value)
        return attributes

    def _call(self, fields: Mapping[str, Any]) -> None:
        genai = {
            "gen_ai.operation.name": "embeddings" if fields.get("api") == "embeddings" else "chat",
            "gen_ai.provider.name": "openai",
        }
        if fields.get("model") is not None:
            genai["gen_ai.request.model"] = fields["model"]
        if fields.get("response_model") is not None:
            genai["gen_ai.response.model"] = fields["response_model"]
        error_type = fields.get("error_type")
        for key, token_type in _USAGE_TYPES[genai["gen_ai.operation.name"]]:
            count = fields.get(key)
            # A failed call reports usage only if it used tokens (a cut stream); a refused or
            # rejected one has none to report, and a zero would skew the distribution.
            if isinstance(count, int) and (count or error_type is None):
                self._token_usage.record(count, {**genai, "gen_ai.token.type": token_type})
        duration_ms = fields.get("duration_ms")
        if isinstance(duration_ms, (int, float)):
            attributes = genai if error_type is None else {**genai, "error.type": error_type}
            self._duration.record(duration_ms / 1000, attributes)

        own = self._costmeter_attributes(fields)
        cost = fields.get("cost_usd")
        if cost is not None:
            self._cost.add(float(cost), own)
        for key, kind in _TOKEN_KINDS:
            count = fields.get(key)
            if isinstance(count, int) and count:
                self._tokens.add(count, {**own, "kind": kind})


def enable_metrics(
    meter_provider: Any = None, *, tag_keys: Iterable[str] = ()
) -> Callable[[], None]:
    """
    Record OpenTelemetry metrics for every metered call (see the module docs for the names).

    Args:
        meter_provider: The ``MeterProvider`` to create the instruments with; ``None`` uses the
            global one (``opentelemetry.metrics.get_meter_provider()``), a no-op until the
            application sets one.
        tag_keys: The `costmeter.tags` keys to copy onto costmeter's own metrics as attributes
            (e.g. ``("team",)``). Only these: every distinct value makes a new time series.

    Returns:
        A function that stops recording. Calling `enable_metrics` again replaces the previous
        recorder (no call is counted twice).

    Without ``opentelemetry-api`` installed (``pip install "costmeter[otel]"``) this records
    nothing and says so once, as a `RuntimeWarning` and a ``costmeter.warning`` event.
    """
    global _active  # noqa: PLW0603
    keys = tuple(str(key) for key in tag_keys)
    try:
        recorder = _Recorder(meter_provider, keys)
    except ImportError:
        _warn_missing_once()
        return _noop
    with _lock:
        if _active is not None:
            _active()
        remove = _log.add_listener(recorder)

        def disable() -> None:
            global _active  # noqa: PLW0603
            remove()
            with _lock:
                if _active is disable:
                    _active = None

        _active = disable
    return disable


def _noop() -> None:
    """What `enable_metrics` returns when there is nothing to stop."""


def _warn_missing_once() -> None:
    global _missing_warned  # noqa: PLW0603
    with _lock:
        if _missing_warned:
            return
        _missing_warned = True
    detail = (
        "costmeter.enable_metrics() needs opentelemetry-api "
        '(pip install "costmeter[otel]"); no metrics are recorded'
    )
    warnings.warn(detail, RuntimeWarning, stacklevel=3)
    _log.emit(_log.WARNING, {"warning": "metrics_unavailable", "detail": detail})
