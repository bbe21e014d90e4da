"""
`costmeter.enable_metrics()`: OpenTelemetry metrics from real metered calls (loopback fake
server), read back with the OTel SDK's InMemoryMetricReader and once as Prometheus text.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
import costmeter._metrics
from costmeter import _events
from costmeter.testing import FakeOpenAI

from .helpers import response_body

pytest.importorskip("opentelemetry.sdk.metrics", reason="pip install -e '.[test]'")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

RESPONSE_ID = "resp_metrics_0001"
# The OpenTelemetry GenAI conventions' advised bucket boundaries, typed from the spec.
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864)  # fmt: skip
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                   40.96, 81.92)  # fmt: skip
GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4.1-mini",
    "gen_ai.response.model": "gpt-4.1-mini-2025-04-14",
}


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[costmeter.OpenAI]:
    server.reset()
    with costmeter.OpenAI(
        base_url=server.base_url, api_key="sk-metrics-test", max_retries=0
    ) as metered:
        yield metered


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """Metrics enabled on a private MeterProvider (team tags allowed); disabled afterwards."""
    memory = InMemoryMetricReader()
    disable = costmeter.enable_metrics(MeterProvider(metric_readers=[memory]), tag_keys=("team",))
    yield memory
    disable()


def _points(reader: InMemoryMetricReader) -> dict[str, tuple[str, list[Any]]]:
    """Metric name → (unit, data points)."""
    data = reader.get_metrics_data()
    found: dict[str, tuple[str, list[Any]]] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert "costmeter" == scope.scope.name
            for metric in scope.metrics:
                found[metric.name] = (metric.unit, list(metric.data.data_points))
    return found


def _call(client: costmeter.OpenAI, server: FakeOpenAI) -> None:
    """A Responses call answered with 2,000 input (1,024 cached) and 300 output (100 reasoning)."""
    server.replay_next(
        response_body(
            response_id=RESPONSE_ID,
            model="gpt-4.1-mini-2025-04-14",
            input_tokens=2000,
            cached=1024,
            output_tokens=300,
            reasoning=100,
        ),
        stream=False,
    )
    with costmeter.tags(team="search", request="r-8812"):
        client.responses.create(model="gpt-4.1-mini", input="Summarise the ticket.")


def test_genai_semantic_convention_metrics(
    client: costmeter.OpenAI, server: FakeOpenAI, reader: InMemoryMetricReader
) -> None:
    """Token usage and duration histograms with the GenAI names, units, attributes and buckets."""
    _call(client, server)

    points = _points(reader)
    unit, usage = points["gen_ai.client.token.usage"]
    assert "{token}" == unit
    assert [({**GENAI, "gen_ai.token.type": "input"}, 1, 2000),
            ({**GENAI, "gen_ai.token.type": "output"}, 1, 300)] == sorted(
        ((dict(p.attributes), p.count, p.sum) for p in usage), key=lambda t: t[2], reverse=True
    )  # fmt: skip
    assert {TOKEN_BOUNDS} == {tuple(p.explicit_bounds) for p in usage}
    unit, [duration] = points["gen_ai.client.operation.duration"]
    assert ("s", GENAI, 1) == (unit, dict(duration.attributes), duration.count)
    assert DURATION_BOUNDS == tuple(duration.explicit_bounds)


def test_costmeter_cost_and_tokens(
    client: costmeter.OpenAI, server: FakeOpenAI, reader: InMemoryMetricReader
) -> None:
    """Cost in USD and tokens by kind, with model, api and allowed tags only."""
    _call(client, server)

    points = _points(reader)
    own = {"model": "gpt-4.1-mini", "api": "responses", "team": "search"}
    unit, [cost] = points["costmeter.cost"]
    # gpt-4.1-mini: $0.40 input, $0.10 cached input, $1.60 output per 1M tokens.
    # (2000 - 1024) x 0.40 + 1024 x 0.10 + 300 x 1.60 = 390.4 + 102.4 + 480 = 972.8 per 1M
    assert ("USD", own) == (unit, dict(cost.attributes))
    assert cost.value == pytest.approx(0.0009728, abs=1e-12)
    unit, tokens = points["costmeter.tokens"]
    assert "{token}" == unit
    assert {"input": 2000, "cached": 1024, "output": 300, "reasoning": 100} == {
        p.attributes["kind"]: p.value for p in tokens
    }
    assert {frozenset(own.items())} == {
        frozenset((k, v) for k, v in p.attributes.items() if k != "kind") for p in tokens
    }


def test_bounded_attributes(
    client: costmeter.OpenAI, server: FakeOpenAI, reader: InMemoryMetricReader
) -> None:
    """No response id, request id or tag outside tag_keys ever becomes an attribute."""
    _call(client, server)

    values = {
        str(value)
        for _, points in _points(reader).values()
        for point in points
        for value in point.attributes.values()
    }
    keys = {key for _, points in _points(reader).values() for p in points for key in p.attributes}
    assert RESPONSE_ID not in values
    assert "r-8812" not in values
    assert not keys & {"request", "response_id", "request_id", "gen_ai.response.id"}


def test_failed_call_has_error_type(
    client: costmeter.OpenAI, server: FakeOpenAI, reader: InMemoryMetricReader
) -> None:
    """A failed call records its duration with error.type and no token usage."""
    server.replay_next(
        {"error": {"message": "boom", "type": "server_error"}}, stream=False, status=500
    )
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4.1-mini", input="hi")

    points = _points(reader)
    _, [duration] = points["gen_ai.client.operation.duration"]
    assert "InternalServerError" == duration.attributes["error.type"]
    assert "gen_ai.client.token.usage" not in points or not points["gen_ai.client.token.usage"][1]


def test_budget_refusals(
    client: costmeter.OpenAI, server: FakeOpenAI, reader: InMemoryMetricReader
) -> None:
    """A call a budget refuses before sending counts one refusal, with the budget's name."""
    with costmeter.budget("0.0000001", name="tiny"), pytest.raises(costmeter.BudgetExceededError):
        client.responses.create(model="gpt-5", input="hi")

    _, [refusal] = _points(reader)["costmeter.budget.refusals"]
    assert (1, {"model": "gpt-5", "budget": "tiny"}) == (refusal.value, dict(refusal.attributes))
    assert 0 == server.calls


def test_disable_and_replace(client: costmeter.OpenAI, server: FakeOpenAI) -> None:
    """A second enable_metrics() replaces the first (nothing counted twice); disable stops it."""
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    costmeter.enable_metrics(MeterProvider(metric_readers=[first]))
    disable = costmeter.enable_metrics(MeterProvider(metric_readers=[second]))
    _call(client, server)
    disable()
    _call(client, server)

    assert "costmeter.cost" not in _points(first)
    _, [cost] = _points(second)["costmeter.cost"]
    assert cost.value == pytest.approx(0.0009728, abs=1e-12)


def test_recording_failure_never_reaches_the_call(
    client: costmeter.OpenAI, server: FakeOpenAI
) -> None:
    """An instrument that raises costs a counted listener failure, not the call."""

    class Broken:
        def __getattr__(self, _name: str) -> Any:
            def fail(*_args: Any, **_kwargs: Any) -> Any:
                raise RuntimeError("exporter bug")

            return fail

    class Provider:
        def get_meter(self, *_args: Any) -> Any:
            class Meter:
                def __getattr__(self, _name: str) -> Any:
                    return lambda *_a, **_k: Broken()

            return Meter()

    before = _events.listener_failures
    disable = costmeter.enable_metrics(Provider())
    try:
        _call(client, server)
    finally:
        disable()

    assert before + 1 == _events.listener_failures


def test_prometheus_text(client: costmeter.OpenAI, server: FakeOpenAI) -> None:
    """Through the Prometheus exporter: the scrape text carries the histograms and counters."""
    prometheus = pytest.importorskip("opentelemetry.exporter.prometheus")
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    exporter = prometheus.PrometheusMetricReader(registry=registry, disable_target_info=True)
    disable = costmeter.enable_metrics(MeterProvider(metric_readers=[exporter]), tag_keys=("team",))
    try:
        _call(client, server)
    finally:
        disable()

    lines = generate_latest(registry).decode().splitlines()
    samples = {line.split("{", 1)[0]: line for line in lines if not line.startswith("#")}
    usage = [line for line in lines if line.startswith("gen_ai_client_token_usage_sum")]
    assert 2 == len(usage)
    assert any('gen_ai_token_type="input"' in line and line.endswith(" 2000.0") for line in usage)
    assert any(line.startswith("gen_ai_client_operation_duration_seconds_count") for line in lines)
    assert 'le="81.92"' in "\n".join(lines)
    [cost] = [line for line in lines if line.startswith("costmeter_cost_USD_total")]
    assert 'team="search"' in cost
    assert 'model="gpt-4.1-mini"' in cost
    assert float(cost.rsplit(" ", 1)[1]) == pytest.approx(0.0009728, abs=1e-12)
    assert "costmeter_tokens_total" in samples


def test_without_opentelemetry(
    monkeypatch: pytest.MonkeyPatch, client: costmeter.OpenAI, server: FakeOpenAI
) -> None:
    """No opentelemetry-api: a no-op that warns once (RuntimeWarning and costmeter.warning)."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails as if not installed
    monkeypatch.setattr(costmeter._metrics, "_missing_warned", False)

    with capture_logs() as logs:
        with pytest.warns(RuntimeWarning, match=r"costmeter\[otel\]"):
            disable = costmeter.enable_metrics()
        costmeter.enable_metrics()  # warned already: silent
        _call(client, server)
    disable()

    warnings = [e for e in logs if e["event"] == "costmeter.warning"]
    assert ["metrics_unavailable"] == [e["warning"] for e in warnings]
