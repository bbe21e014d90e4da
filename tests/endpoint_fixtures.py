"""
Fixtures shared by the endpoint test modules (``tests/test_endpoint_*.py``): one loopback
`FakeOpenAI` per module, reset before each test and checked for server-side errors after it, and
metered sync/async clients pointed at it. Import them into a test module to use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import costmeter
from costmeter.testing import FakeOpenAI


def client_kwargs(server: FakeOpenAI) -> dict[str, Any]:
    """What the tests build their clients with (bare or metered)."""
    return {"api_key": "test", "base_url": server.base_url, "max_retries": 0}


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    assert server.errors == []


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[costmeter.OpenAI]:
    # always_estimate: these tests check every event's estimate against its bill
    with costmeter.OpenAI(**client_kwargs(server), always_estimate=True) as metered:
        yield metered


@pytest.fixture
async def aclient(server: FakeOpenAI) -> AsyncIterator[costmeter.AsyncOpenAI]:
    async with costmeter.AsyncOpenAI(**client_kwargs(server), always_estimate=True) as metered:
        yield metered
