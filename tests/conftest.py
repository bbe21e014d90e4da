"""Shared fixtures: strict metering, clean structlog, recorded traffic, and no outside network."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import structlog

import costmeter
import costmeter._events
import costmeter._meter

TRAFFIC = Path(__file__).parent / "fixtures" / "traffic"
_real_connect = socket.socket.connect


def load_traffic() -> list[tuple[str, dict[str, Any]]]:
    """Every recorded real interaction, as (file name, record)."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(TRAFFIC.glob("*.json"))]


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (
        host.startswith("127.") or host in ("::1", "localhost") or self.family == socket.AF_UNIX
    ):
        raise AssertionError(f"test tried to open a socket to {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_outside_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket to a non-loopback address fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def _strict_and_clean() -> Iterator[None]:
    """Internal errors raise in tests; structlog and price overrides start from defaults."""
    costmeter.set_strict(True)
    structlog.reset_defaults()
    costmeter.clear_price_overrides()
    yield
    costmeter.set_strict(False)
    costmeter.clear_price_overrides()


# -- secrets scan: every event the whole session emits (checked in pytest_sessionfinish) ---------

SECRET_PATTERNS = re.compile(r"sk-[A-Za-z0-9_\-]{4,}|bearer\s+\S|authorization|api[_-]?key", re.I)
EMITTED: list[tuple[str, str, str]] = []  # (test id, event name, event rendered as JSON)
API_KEYS: set[str] = set()  # keys the suite's clients were built with (6+ chars)
PROMPTS: set[str] = set()  # prompt text the suite sent through metered clients (12+ chars)
_state = {"test": "<collection>"}


class _RecordingLogger:
    """Wraps costmeter's structlog logger: records each event, then forwards it unchanged."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, level: str) -> Any:
        method = getattr(self._inner, level)

        def record(event: str, **fields: Any) -> Any:
            EMITTED.append((_state["test"], event, json.dumps(fields, default=repr)))
            return method(event, **fields)

        return record


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _install_recorders() -> None:
    """Observe, never alter: costmeter's logger, metered request bodies, SDK client keys."""
    costmeter._events._logger = _RecordingLogger(costmeter._events._logger)
    call_init = costmeter._meter.Call.__init__

    def recording_init(self: Any, route: Any, body: Any, *args: Any, **kwargs: Any) -> None:
        call_init(self, route, body, *args, **kwargs)
        for key in ("input", "instructions", "messages"):
            PROMPTS.update(s[:40] for s in _strings(self.request.body.get(key)) if len(s) >= 12)

    costmeter._meter.Call.__init__ = recording_init  # type: ignore[method-assign]
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        client_init = cls.__init__

        def recording_client_init(
            self: Any, *args: Any, __init: Any = client_init, **kw: Any
        ) -> None:
            __init(self, *args, **kw)
            if isinstance(self.api_key, str) and len(self.api_key) >= 6:
                API_KEYS.add(self.api_key)

        cls.__init__ = recording_client_init  # type: ignore[method-assign]


def secrets_in(events: list[tuple[str, str, str]]) -> list[str]:
    """
    Findings: API keys, Authorization values or prompt text in events. Prompt text is allowed
    only in events that carry ``request_content`` (the client opted in with ``log_content``).
    """
    findings = []
    for test, event, rendered in events:
        found = [m.group(0) for m in SECRET_PATTERNS.finditer(rendered)]
        found += [key for key in API_KEYS if key in rendered]
        if '"request_content"' not in rendered:
            found += [prompt for prompt in PROMPTS if prompt in rendered]
        if found:
            findings.append(f"{test}: {event} contains {sorted(set(found))!r}")
    return findings


_install_recorders()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Label the events each test emits with its id."""
    _state["test"] = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any event of the whole session leaked a key or prompt."""
    findings = secrets_in(EMITTED)
    if findings:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep(
                "=", f"secrets scan: {len(findings)} event(s) leak secrets", red=True
            )
            for line in findings[:50]:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- a shared loopback API -------------------------------------------------------------------------


@pytest.fixture(scope="module", name="server")
def _server() -> Iterator[Any]:
    """One FakeOpenAI loopback server per test module (modules that need another configuration
    define their own ``server``)."""
    from costmeter.testing import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(name="fake")
def _fake(server: Any) -> Iterator[Any]:
    """The module's server, reset for this test; it must end with no errors and no faults left."""
    server.reset()
    yield server
    assert [] == server.errors
    assert 0 == server.pending_faults
