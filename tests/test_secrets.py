"""
No event leaks an API key, an Authorization value or prompt text unless content logging is on.

How the whole suite is covered: ``tests/conftest.py`` wraps costmeter's structlog logger at import
time (before any test runs), so *every* event any test emits — through ``emit()`` or a sink's
failure report, whatever structlog configuration or ``capture_logs`` the test uses — is recorded
with the id of the test that emitted it. It also records the API keys every SDK client was built
with and the prompt text of every metered request. ``pytest_sessionfinish`` scans all of them with
`secrets_in` and fails the run, listing the offending test and event. Events emitted in
subprocesses (CLI tests that spawn ``python -m costmeter``) are not seen by this scan.

The tests here prove the scan is live and can fail, and drive the paths most likely to leak
(errors, faults, refusals, streams, sinks) with a distinctive key and prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter.testing import FakeOpenAI
from tests.conftest import EMITTED, PROMPTS, secrets_in

KEY = "sk-secrets-scan-0123456789abcdef"
PROMPT = "The launch code for the secrets scan is ZEBRA-42-ORCHID, do not repeat it."
INSTRUCTIONS = "You are a vault. Never reveal PLATYPUS-SEVEN to anyone."


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fresh loopback server."""
    with FakeOpenAI() as fake:
        yield fake


def _this_test(request: pytest.FixtureRequest) -> list[tuple[str, str, str]]:
    return [entry for entry in EMITTED if entry[0] == request.node.nodeid]


def test_recorder_sees_every_event(server: FakeOpenAI, request: pytest.FixtureRequest) -> None:
    """Events reach the session recorder under this test's id, even inside capture_logs."""
    client = costmeter.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)

    with capture_logs() as logs:
        client.responses.create(model="gpt-5-mini", input=PROMPT)

    assert [e["event"] for e in logs] == [event for _, event, _ in _this_test(request)]
    assert PROMPT[:40] in PROMPTS


def test_scan_finds_planted_secrets() -> None:
    """The scan flags keys, sk- patterns, Authorization values and prompts (it can fail)."""
    costmeter.OpenAI(api_key="k3y-without-prefix", base_url="http://127.0.0.1:9/v1")
    PROMPTS.add(PROMPT[:40])
    planted = {
        "known key": json.dumps({"error": "bad key k3y-without-prefix"}),
        "sk- pattern": json.dumps({"tags": {"t": "sk-live-abcdef"}}),
        "bearer": json.dumps({"error": "header Bearer xyz rejected"}),
        "authorization": json.dumps({"headers": {"Authorization": "x"}}),
        "prompt": json.dumps({"error": f"could not parse {PROMPT}"}),
    }

    findings = secrets_in([(name, "costmeter.call", text) for name, text in planted.items()])

    assert sorted(planted) == sorted(line.split(":")[0] for line in findings)


def test_prompt_allowed_only_with_content_opt_in() -> None:
    """Prompt text passes only in events carrying request_content; keys never pass."""
    PROMPTS.add(PROMPT[:40])
    opted_in = json.dumps({"request_content": {"input": PROMPT}})
    with_key = json.dumps({"request_content": {"input": PROMPT}, "error": KEY})

    assert [] == secrets_in([("t", "costmeter.call", opted_in)])
    assert 1 == len(secrets_in([("t", "costmeter.call", with_key)]))


def test_metered_paths_leak_nothing(
    server: FakeOpenAI, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Success, stream, chat, HTTP errors, resets, cut streams and refusals: no secret in events."""
    costmeter.set_strict(False)
    sink_path = tmp_path / "events.jsonl"
    sink = costmeter.log_to(sink_path)
    client = costmeter.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0, timeout=5)
    body: dict[str, Any] = {"model": "gpt-5-mini", "input": PROMPT, "instructions": INSTRUCTIONS}
    try:
        client.responses.create(**body)
        for _ in client.responses.create(**body, stream=True):
            pass
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": PROMPT},
            ],
        )
        for status in (400, 401, 429, 500):
            server.fail_next(status, message=f"echo: {PROMPT}")
            with pytest.raises(openai.APIStatusError):
                client.responses.create(**body)
        server.reset_next(before_headers=True)
        with pytest.raises(openai.APIConnectionError):
            client.responses.create(**body)
        server.cut_stream_next(after_events=4)
        with pytest.raises(openai.APIConnectionError):  # the SDK wraps the cut
            for _ in client.responses.create(**body, stream=True):
                pass
        with costmeter.budget("0"), pytest.raises(costmeter.BudgetExceededError):
            client.responses.create(**body)
    finally:
        sink.close()

    events = _this_test(request)
    lines = [("sink", "line", line) for line in sink_path.read_text().splitlines()]
    assert (10, 10) == (len(events), len(lines))
    assert {PROMPT[:40], INSTRUCTIONS[:40]} <= PROMPTS
    assert [] == secrets_in(events + lines)


def test_log_content_opt_in_shows_prompt_not_key(
    server: FakeOpenAI, request: pytest.FixtureRequest
) -> None:
    """With log_content=True the prompt is logged (the scan would see it) and the key is not."""
    client = costmeter.OpenAI(
        api_key=KEY, base_url=server.base_url, max_retries=0, log_content=True
    )

    client.responses.create(model="gpt-5-mini", input=PROMPT)

    [(_, event, rendered)] = _this_test(request)
    assert "costmeter.call" == event
    assert PROMPT in rendered
    assert KEY not in rendered
    assert [] == secrets_in([("t", event, rendered)])
    unflagged = rendered.replace('"request_content"', '"content"')
    assert 1 == len(secrets_in([("t", event, unflagged)]))
