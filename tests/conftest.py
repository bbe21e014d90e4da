"""Shared fixtures: strict metering, clean structlog, recorded traffic, and no outside network."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import costmeter

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
