"""JSON-lines sinks, `emit`, the OpenTelemetry key processor and ``COSTMETER_LOG_FILE``."""

# structlog test style (expected == actual) trips SIM300.

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from costmeter import _events, _sinks
from costmeter._events import emit
from costmeter._otel_names import otel_genai_keys
from costmeter._sinks import configure_from_env, log_to


def call_fields(**overrides: Any) -> dict[str, Any]:
    """A realistic costmeter.call payload."""
    fields: dict[str, Any] = {
        "api": "responses",
        "model": "gpt-5-mini",
        "response_model": "gpt-5-mini-2025-08-07",
        "response_id": "resp_0123",
        "request_id": "req_0456",
        "stream": False,
        "background": False,
        "service_tier": "default",
        "outcome": "ok",
        "error_type": None,
        "input_tokens": 1200,
        "cached_input_tokens": 1024,
        "cache_write_input_tokens": 0,
        "output_tokens": 300,
        "reasoning_tokens": 128,
        "web_search_calls": 0,
        "usage_source": "reported",
        "estimated_input_tokens": 1187,
        "estimated_cost_usd": 0.0023,
        "cost_usd": 0.0006656,
        "input_cost_usd": 0.000044,
        "cached_input_cost_usd": 0.0000256,
        "cache_write_cost_usd": 0.0,
        "output_cost_usd": 0.0006,
        "tool_cost_usd": 0.0,
        "price_source": "genai-prices",
        "priced_as": "gpt-5-mini",
        "price_status": "ok",
        "duration_ms": 812,
        "tags": {"team": "search", "feature": "rerank"},
    }
    fields.update(overrides)
    return fields


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of *path*, parsed (fails on a torn line)."""
    return [json.loads(line, parse_float=Decimal) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _close_sinks() -> Iterator[None]:
    """Sinks a test registers are removed afterwards."""
    before = _events._sinks
    yield
    for sink in _events._sinks:
        if sink not in before:
            sink.close()
    _sinks._env_sink = None


@pytest.fixture
def quiet() -> None:
    """The app's structlog drops everything (no console noise in bulk tests)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def _append_from_process(path: str, worker: int, count: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    log_to(path)
    padding = "x" * 3000  # lines of ~4 KB: tearing would show
    for i in range(count):
        emit("costmeter.call", call_fields(tags={"worker": str(worker), "i": str(i), "p": padding}))


class TestLogToFile:
    def test_one_json_line_per_event(self, tmp_path: Path, quiet: None) -> None:
        """Each event is one JSON object with timestamp, level and event first, then its fields."""
        path = tmp_path / "costs.jsonl"
        log_to(path)

        emit("costmeter.call", call_fields())

        [line] = path.read_text().splitlines()
        record = json.loads(line, parse_float=Decimal)
        assert ["timestamp", "level", "event"] == list(record)[:3]
        assert "info" == record["level"]
        assert "costmeter.call" == record["event"]
        assert record["timestamp"].endswith("Z")
        assert Decimal("0.0006656") == record["cost_usd"]
        assert {k: v for k, v in record.items() if k not in ("timestamp", "level", "event")} == (
            json.loads(json.dumps(call_fields()), parse_float=Decimal)
        )

    def test_appends_to_existing_file(self, tmp_path: Path, quiet: None) -> None:
        """An existing file is appended to, never truncated."""
        path = tmp_path / "costs.jsonl"
        path.write_text('{"event": "earlier"}\n')
        log_to(str(path))

        emit("costmeter.call", call_fields())

        assert ["earlier", "costmeter.call"] == [r["event"] for r in read_lines(path)]

    def test_warning_level_events(self, tmp_path: Path, quiet: None) -> None:
        """Budget, warning and internal-error events are logged at warning level."""
        path = tmp_path / "costs.jsonl"
        log_to(path)

        for event in (
            "costmeter.budget.exceeded",
            "costmeter.budget.threshold",
            "costmeter.warning",
            "costmeter.internal_error",
        ):
            emit(event, {"budget": "b"})

        assert {"warning"} == {r["level"] for r in read_lines(path)}

    def test_closing_stops_writing(self, tmp_path: Path, quiet: None) -> None:
        """After the handle is called, nothing more is written."""
        path = tmp_path / "costs.jsonl"
        stop = log_to(path)
        emit("costmeter.call", call_fields())

        stop()
        stop()  # idempotent
        emit("costmeter.call", call_fields())

        assert 1 == len(read_lines(path))
        assert stop not in _events._sinks

    def test_processors_run_per_sink(self, tmp_path: Path, quiet: None) -> None:
        """A sink's processors rewrite only that sink's lines."""
        plain, otel = tmp_path / "plain.jsonl", tmp_path / "otel.jsonl"
        log_to(plain)
        log_to(otel, processors=[otel_genai_keys])

        emit("costmeter.call", call_fields())

        assert 1200 == read_lines(plain)[0]["input_tokens"]
        assert 1200 == read_lines(otel)[0]["gen_ai.usage.input_tokens"]

    def test_processor_may_drop_or_render(self, tmp_path: Path, quiet: None) -> None:
        """DropEvent skips the line; a processor returning a str supplies the line itself."""
        dropped, rendered = tmp_path / "dropped.jsonl", tmp_path / "rendered.jsonl"

        def drop(_logger: Any, _method: str, event_dict: Any) -> Any:
            raise structlog.DropEvent

        log_to(dropped, processors=[drop])
        log_to(rendered, processors=[structlog.processors.JSONRenderer(sort_keys=True)])

        emit("costmeter.call", {"model": "gpt-5"})

        assert "" == dropped.read_text()
        assert 0 == _events._sinks[-2].failures
        assert '"model": "gpt-5"' in rendered.read_text()
        assert rendered.read_text().endswith("}\n")

    def test_unopenable_path_raises(self, tmp_path: Path) -> None:
        """A file that cannot be opened is an OSError naming it, at log_to() time."""
        with pytest.raises(OSError, match="missing"):
            log_to(tmp_path / "missing" / "costs.jsonl")


class TestLogToStream:
    def test_stream_receives_lines(self, quiet: None) -> None:
        """A text stream gets the same JSON lines, written once the handle flushes or closes."""
        buffer = io.StringIO()
        stop = log_to(buffer)

        emit("costmeter.call", call_fields())
        emit("costmeter.warning", {"message": "m"})
        stop()

        records = [json.loads(line) for line in buffer.getvalue().splitlines()]
        assert ["costmeter.call", "costmeter.warning"] == [r["event"] for r in records]

    def test_binary_stream(self, quiet: None) -> None:
        """A binary stream gets UTF-8 bytes."""
        buffer = io.BytesIO()
        stop = log_to(buffer)  # type: ignore[arg-type]

        emit("costmeter.call", call_fields(tags={"who": "Zoë"}))
        stop()

        assert "Zoë" == json.loads(buffer.getvalue())["tags"]["who"]

    def test_dash_means_stdout(self, capsys: pytest.CaptureFixture[str], quiet: None) -> None:
        """``-`` writes to standard output (asked for explicitly: nothing goes there otherwise)."""
        stop = log_to("-")

        emit("costmeter.call", call_fields())
        stop()

        captured = capsys.readouterr()
        assert "costmeter.call" == json.loads(captured.out)["event"]
        assert "" == captured.err

    def test_not_a_target(self) -> None:
        """Anything but a path or a writable stream is a TypeError."""
        with pytest.raises(TypeError):
            log_to(42)  # type: ignore[arg-type]


class TestConcurrency:
    @pytest.mark.slow
    def test_many_threads_one_file(self, tmp_path: Path, quiet: None) -> None:
        """16 threads x 500 events land as 8000 whole lines."""
        path = tmp_path / "costs.jsonl"
        log_to(path)
        padding = "y" * 2000

        def work(n: int) -> None:
            for i in range(500):
                emit("costmeter.call", call_fields(tags={"t": str(n), "i": str(i), "p": padding}))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        records = read_lines(path)
        assert 8000 == len(records)
        assert {(str(n), str(i)) for n in range(16) for i in range(500)} == {
            (r["tags"]["t"], r["tags"]["i"]) for r in records
        }

    @pytest.mark.slow
    def test_many_processes_one_file(self, tmp_path: Path) -> None:
        """4 processes x 500 events of ~4 KB appended to one file: every line whole, none lost."""
        path = tmp_path / "costs.jsonl"
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        processes = [
            context.Process(target=_append_from_process, args=(str(path), n, 500)) for n in range(4)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)

        assert [0, 0, 0, 0] == [p.exitcode for p in processes]
        records = read_lines(path)
        assert 2000 == len(records)
        assert {(str(n), str(i)) for n in range(4) for i in range(500)} == {
            (r["tags"]["worker"], r["tags"]["i"]) for r in records
        }


class _RaisingStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk on fire")


class _BlockingStream(io.StringIO):
    """Every write waits, with no timeout, until the test sets ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait()
        return super().write(text)


def _in_thread(work: Any, timeout: float = 30.0) -> bool:
    """Run *work* in a daemon thread; whether it finished within *timeout* (a generous bound)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


class TestSinkFailures:
    def test_raising_stream_does_not_break_emit(self) -> None:
        """A stream that raises loses lines, counts them and reports once; emit never raises."""
        sink = log_to(_RaisingStream())

        with capture_logs() as logs:
            for _ in range(5):
                emit("costmeter.call", call_fields())
            sink.close()

        errors = [e for e in logs if e["event"] == "costmeter.internal_error"]
        assert 5 == len([e for e in logs if e["event"] == "costmeter.call"])
        assert 1 == len(errors)
        assert ("log_sink", "OSError") == (errors[0]["stage"], errors[0]["error_type"])
        assert 5 == sink.failures

    def test_raising_processor_does_not_break_emit(self, tmp_path: Path) -> None:
        """A processor that raises costs its sink the line, nothing else."""

        def boom(_logger: Any, _method: str, _event_dict: Any) -> Any:
            raise ValueError("bad processor")

        broken = log_to(tmp_path / "broken.jsonl", processors=[boom])
        log_to(tmp_path / "fine.jsonl")

        with capture_logs() as logs:
            emit("costmeter.call", call_fields())
            emit("costmeter.call", call_fields())

        assert 2 == broken.failures
        assert 2 == len(read_lines(tmp_path / "fine.jsonl"))
        assert 1 == len([e for e in logs if e["event"] == "costmeter.internal_error"])

    def test_blocking_stream_does_not_block_emit(self, quiet: None) -> None:
        """A stream blocked forever costs emit() nothing: lines queue, then are dropped and counted."""
        stream = _BlockingStream()
        sink = log_to(stream)
        count = _sinks._STREAM_QUEUE_LINES + 2000

        try:
            finished = _in_thread(
                lambda: [emit("costmeter.call", call_fields()) for _ in range(count)]
            )
        finally:
            stream.release.set()
        sink.close()

        assert finished, "emit() waited for a blocked stream"
        assert sink.dropped >= 1000
        assert count == sink.dropped + len(stream.getvalue().splitlines())

    def test_slow_stream_keeps_every_line(self, quiet: None) -> None:
        """A stream that writes only when allowed delays no caller and, later, gets every line."""
        gate = threading.Semaphore(0)

        class Gated(io.StringIO):
            def write(self, text: str) -> int:
                gate.acquire()  # one write per token the test hands out; no timeout
                return super().write(text)

        stream = Gated()
        sink = log_to(stream)

        try:
            finished = _in_thread(
                lambda: [emit("costmeter.call", call_fields()) for _ in range(200)]
            )
        finally:
            for _ in range(200):
                gate.release()
        assert sink.flush(30)
        sink.close()

        assert finished, "emit() waited for a slow stream"
        assert 200 == len(stream.getvalue().splitlines())
        assert (0, 0) == (sink.failures, sink.dropped)

    def test_failing_app_pipeline_does_not_break_emit(self, tmp_path: Path) -> None:
        """If the application's own structlog pipeline raises, emit still writes its sinks."""

        def broken(_logger: Any, _method: str, _event_dict: Any) -> Any:
            raise RuntimeError("app bug")

        structlog.configure(processors=[broken])
        log_to(tmp_path / "costs.jsonl")
        before = _events.structlog_failures

        emit("costmeter.call", call_fields())

        assert before + 1 == _events.structlog_failures
        assert 1 == len(read_lines(tmp_path / "costs.jsonl"))


class TestAppStructlogConfig:
    def test_app_still_receives_events(self, tmp_path: Path) -> None:
        """With a sink registered, the app's structlog pipeline still gets every event."""
        log_to(tmp_path / "costs.jsonl")

        with capture_logs() as logs:
            emit("costmeter.call", call_fields())
            emit("costmeter.budget.exceeded", {"budget": "nightly"})

        assert [("costmeter.call", "info"), ("costmeter.budget.exceeded", "warning")] == [
            (e["event"], e["log_level"]) for e in logs
        ]
        assert 1200 == logs[0]["input_tokens"]
        assert 2 == len(read_lines(tmp_path / "costs.jsonl"))

    def test_log_to_leaves_structlog_config_alone(self, tmp_path: Path) -> None:
        """log_to() does not reconfigure structlog."""
        processors = [structlog.processors.add_log_level, structlog.processors.JSONRenderer()]
        structlog.configure(processors=processors)
        before = structlog.get_config()

        log_to(tmp_path / "costs.jsonl")

        assert before == structlog.get_config()
        assert processors == structlog.get_config()["processors"]


class TestOtelGenaiKeys:
    def test_call_mapping(self) -> None:
        """costmeter.call keys get OpenTelemetry GenAI names; the rest go under costmeter.*."""
        event = {"event": "costmeter.call", "timestamp": "t", "trace_id": "abc", **call_fields()}

        out = otel_genai_keys(None, "info", event)

        assert {
            "event": "costmeter.call",
            "timestamp": "t",
            "trace_id": "abc",
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "openai.api.type": "responses",
            "gen_ai.request.model": "gpt-5-mini",
            "gen_ai.response.model": "gpt-5-mini-2025-08-07",
            "gen_ai.response.id": "resp_0123",
            "openai.response.service_tier": "default",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1024,
            "gen_ai.usage.cache_creation.input_tokens": 0,
            "gen_ai.usage.reasoning.output_tokens": 128,
            "gen_ai.usage.cost.amount": 0.0006656,
            "gen_ai.usage.cost.currency": "USD",
            "gen_ai.usage.cost.source": "local",
            "costmeter.api": "responses",
            "costmeter.request_id": "req_0456",
            "costmeter.stream": False,
            "costmeter.background": False,
            "costmeter.outcome": "ok",
            "costmeter.error_type": None,
            "costmeter.web_search_calls": 0,
            "costmeter.usage_source": "reported",
            "costmeter.estimated_input_tokens": 1187,
            "costmeter.estimated_cost_usd": 0.0023,
            "costmeter.input_cost_usd": 0.000044,
            "costmeter.cached_input_cost_usd": 0.0000256,
            "costmeter.cache_write_cost_usd": 0.0,
            "costmeter.output_cost_usd": 0.0006,
            "costmeter.tool_cost_usd": 0.0,
            "costmeter.price_source": "genai-prices",
            "costmeter.priced_as": "gpt-5-mini",
            "costmeter.price_status": "ok",
            "costmeter.duration_ms": 812,
            "costmeter.tags.team": "search",
            "costmeter.tags.feature": "rerank",
        } == out

    def test_embeddings_and_errors(self) -> None:
        """Embeddings are the embeddings operation; an error type is also error.type."""
        event = {"event": "costmeter.call", **call_fields(api="embeddings", error_type="APIError")}

        out = otel_genai_keys(None, "info", event)

        assert ("embeddings", "embeddings", "APIError") == (
            out["gen_ai.operation.name"],
            out["openai.api.type"],
            out["error.type"],
        )

    def test_chat_completions_api_type(self) -> None:
        """Chat Completions is the chat operation with api type chat_completions."""
        out = otel_genai_keys(None, "info", {"event": "costmeter.call", "api": "chat.completions"})

        assert ("chat", "chat_completions") == (
            out["gen_ai.operation.name"],
            out["openai.api.type"],
        )

    def test_unpriced_call_has_no_cost_triple(self) -> None:
        """A call with no cost key gets no currency or source either."""
        out = otel_genai_keys(None, "info", {"event": "costmeter.call", "api": "responses"})

        assert "gen_ai.usage.cost.currency" not in out

    def test_other_events_untouched(self) -> None:
        """Only costmeter.call events are renamed."""
        event = {"event": "costmeter.budget.exceeded", "model": "gpt-5", "budget": "b"}

        assert {"event": "costmeter.budget.exceeded", "model": "gpt-5", "budget": "b"} == (
            otel_genai_keys(None, "warning", dict(event))
        )

    def test_in_an_app_pipeline(self) -> None:
        """The processor works in an application's own structlog chain."""
        with capture_logs(processors=[otel_genai_keys]) as logs:
            emit("costmeter.call", call_fields())

        assert 300 == logs[0]["gen_ai.usage.output_tokens"]


class TestConfigureFromEnv:
    def test_unset_does_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without COSTMETER_LOG_FILE nothing is registered."""
        monkeypatch.delenv("COSTMETER_LOG_FILE", raising=False)

        assert configure_from_env() is None

    def test_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: None) -> None:
        """COSTMETER_LOG_FILE=path logs there; calling again does not add a second sink."""
        path = tmp_path / "env.jsonl"
        monkeypatch.setenv("COSTMETER_LOG_FILE", str(path))

        sink = configure_from_env()
        assert sink is configure_from_env()
        emit("costmeter.call", call_fields())

        assert 1 == len(read_lines(path))

    def test_dash(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quiet: None
    ) -> None:
        """COSTMETER_LOG_FILE=- logs to stdout."""
        monkeypatch.setenv("COSTMETER_LOG_FILE", "-")

        sink = configure_from_env()
        emit("costmeter.call", call_fields())
        assert sink is not None
        sink.close()

        assert "costmeter.call" == json.loads(capsys.readouterr().out)["event"]

    def test_read_on_first_event(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: None
    ) -> None:
        """The variable is read when the first event is emitted, not before."""
        path = tmp_path / "lazy.jsonl"
        monkeypatch.setenv("COSTMETER_LOG_FILE", str(path))
        monkeypatch.setattr(_events, "_env_read", False)

        assert not path.exists()
        emit("costmeter.call", call_fields())
        emit("costmeter.call", call_fields())

        assert 2 == len(read_lines(path))

    def test_unopenable_warns(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file that cannot be opened is a RuntimeWarning, not an import error."""
        monkeypatch.setenv("COSTMETER_LOG_FILE", str(tmp_path / "no" / "such.jsonl"))

        with pytest.warns(RuntimeWarning, match="COSTMETER_LOG_FILE"):
            assert configure_from_env() is None


class _BlockingHandler(logging.Handler):
    """A stdlib handler whose emit waits, with no timeout, until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.release.wait()
        self.records.append(record)


class _BlockingOutput:
    """A structlog output logger whose writes wait, with no timeout, until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[str] = []

    def msg(self, line: str) -> None:
        self.release.wait()
        self.lines.append(line)

    info = warning = msg


def _emit_while_blocked(count: int, release: threading.Event) -> bool:
    """
    Emit *count* events while the destination is blocked, then unblock it and wait for it to
    catch up; whether the emitting finished (within the bound) while it was blocked.
    """
    try:
        finished = _in_thread(lambda: [emit("costmeter.call", call_fields()) for _ in range(count)])
    finally:
        release.set()
    assert _events.flush(30)
    return finished


@pytest.fixture
def stdlib_costmeter() -> Iterator[logging.Logger]:
    """The "costmeter" stdlib logger, restored after the test."""
    logger = logging.getLogger("costmeter")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield logger
    assert _events.flush(30)
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


class TestDefaultDestination:
    def test_silent_without_configuration(
        self, capfd: pytest.CaptureFixture[str], stdlib_costmeter: logging.Logger
    ) -> None:
        """No structlog configuration, no logging configuration: nothing on stdout or stderr."""
        assert not structlog.is_configured()

        emit("costmeter.call", call_fields())
        emit("costmeter.budget.exceeded", {"budget": "b", "refused": True})
        assert _events.flush(30)

        assert ("", "") == tuple(capfd.readouterr())

    def test_stdlib_logger_gets_json_records(self, stdlib_costmeter: logging.Logger) -> None:
        """With logging set to show INFO, each event is one record whose message is JSON."""
        handler = _BlockingHandler()
        handler.release.set()
        stdlib_costmeter.addHandler(handler)
        stdlib_costmeter.setLevel(logging.INFO)

        emit("costmeter.call", call_fields())
        emit("costmeter.warning", {"warning": "w"})
        assert _events.flush(30)

        call, warning = handler.records
        assert (logging.INFO, logging.WARNING) == (call.levelno, warning.levelno)
        message = json.loads(call.getMessage(), parse_float=Decimal)
        assert ("costmeter.call", Decimal("0.0006656")) == (message["event"], message["cost_usd"])
        assert "costmeter.warning" == warning.costmeter_event  # type: ignore[attr-defined]
        assert {"warning": "w"} == warning.costmeter_fields  # type: ignore[attr-defined]
        assert threading.current_thread().name == call.threadName

    def test_blocked_stdlib_handler_does_not_block(self, stdlib_costmeter: logging.Logger) -> None:
        """A handler blocked forever: 200 events return at once; all arrive once it unblocks."""
        handler = _BlockingHandler()
        stdlib_costmeter.addHandler(handler)
        stdlib_costmeter.setLevel(logging.INFO)

        finished = _emit_while_blocked(200, handler.release)

        assert finished, "emit() waited for a blocked logging handler"
        assert 200 == len(handler.records)

    def test_blocked_structlog_logger_does_not_block(self) -> None:
        """An app's structlog whose output blocks forever: calls go on, lines arrive later."""
        output = _BlockingOutput()
        structlog.configure(
            processors=[structlog.processors.JSONRenderer()], logger_factory=lambda *_: output
        )

        finished = _emit_while_blocked(200, output.release)

        assert finished, "emit() waited for the application's structlog logger"
        assert 200 == len(output.lines)
        assert "costmeter.call" == json.loads(output.lines[0])["event"]

    def test_structlog_processors_run_on_the_caller(self) -> None:
        """Context variables bound by the caller reach the app's pipeline (processors run inline)."""
        seen: list[tuple[str, Any]] = []

        def record(_logger: Any, _method: str, event_dict: Any) -> Any:
            seen.append((threading.current_thread().name, event_dict.get("request")))
            raise structlog.DropEvent

        structlog.configure(processors=[structlog.contextvars.merge_contextvars, record])
        with structlog.contextvars.bound_contextvars(request="r-1"):
            emit("costmeter.call", call_fields())

        assert [(threading.current_thread().name, "r-1")] == seen


class TestListeners:
    def test_listener_sees_every_event(self, quiet: None) -> None:
        """A listener gets each event's name and fields; removing it stops that."""
        seen: list[tuple[str, Any]] = []
        remove = _events.add_listener(lambda event, fields: seen.append((event, fields["model"])))

        emit("costmeter.call", call_fields())
        remove()
        emit("costmeter.call", call_fields())

        assert [("costmeter.call", "gpt-5-mini")] == seen

    def test_raising_listener_is_counted(self, tmp_path: Path, quiet: None) -> None:
        """A listener that raises costs nothing but a count; sinks still get the event."""

        def boom(_event: str, _fields: Any) -> None:
            raise RuntimeError("listener bug")

        remove = _events.add_listener(boom)
        log_to(tmp_path / "costs.jsonl")
        before = _events.listener_failures
        try:
            emit("costmeter.call", call_fields())
        finally:
            remove()

        assert before + 1 == _events.listener_failures
        assert 1 == len(read_lines(tmp_path / "costs.jsonl"))
