"""The fake OpenAI server (costmeter.testing), exercised through the real openai SDK over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest

from costmeter.testing import OMIT, FakeOpenAI, RecordedRequest, fake_input_tokens, sse
from tests.conftest import TRAFFIC, load_traffic

TIMEOUT = 5.0
MESSAGES: Any = ({"role": "user", "content": "Say this is a test"},)
LONG_PROMPT = "Background facts about the project, repeated for a long shared prefix. " * 120


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fresh fake server per test, stopped afterwards even if the test fails."""
    with FakeOpenAI() as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """A bare openai client with no retries, as the fault suite uses it."""
    with openai.OpenAI(
        base_url=server.base_url, api_key="test", max_retries=0, timeout=TIMEOUT
    ) as sdk:
        yield sdk


def _raw_post(server: FakeOpenAI, path: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(server.url + path, json=body, timeout=TIMEOUT)


def _sse_payloads(raw: bytes) -> tuple[list[str | None], list[Any]]:
    """Split an SSE body into (event names, data payloads), keeping [DONE] as a string."""
    names: list[str | None] = []
    payloads: list[Any] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
                payloads.append(data if data == "[DONE]" else json.loads(data))
                names.append(name)
    return names, payloads


class TestLifecycle:
    """Starting, stopping and addressing the server."""

    def test_binds_loopback_and_exposes_v1_base_url(self, server: FakeOpenAI) -> None:
        """The base URL points at 127.0.0.1 on an ephemeral port, under /v1."""
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.port > 0

    @pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "8.8.8.8", "example.com"])
    def test_refuses_non_loopback_hosts(self, host: str) -> None:
        """Only loopback addresses are accepted, so a test can never expose or reach the network."""
        with pytest.raises(ValueError, match="loopback"):
            FakeOpenAI(host=host)

    def test_stop_is_fast_with_idle_keepalive_connections(self) -> None:
        """stop() returns within a second and leaves no handler thread behind."""
        before = set(threading.enumerate())
        fake = FakeOpenAI().start()
        sdk = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        sdk.responses.create(model="gpt-4o-mini", input="hi")
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 1.0
        assert set(threading.enumerate()) - before == set()
        sdk.close()

    def test_start_and_stop_are_idempotent(self) -> None:
        """A second start() or stop() is a no-op rather than an error."""
        fake = FakeOpenAI()
        assert fake.start() is fake.start()
        fake.stop()
        fake.stop()

    def test_every_response_carries_a_request_id(self, client: openai.OpenAI) -> None:
        """Each answer has an x-request-id, as the SDK exposes it on results and errors."""
        raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input="hi")
        assert raw.headers["x-request-id"].startswith("req_")

    def test_records_requests_with_lowercased_headers_and_json(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """Requests are recorded so tests can assert exactly what the client sent."""
        client.responses.create(model="gpt-4o-mini", input="hi", extra_headers={"X-Custom": "yes"})
        (request,) = server.requests
        assert isinstance(request, RecordedRequest)
        assert (request.method, request.path) == ("POST", "/v1/responses")
        assert request.headers["x-custom"] == "yes"
        assert request.json == {"model": "gpt-4o-mini", "input": "hi"}
        assert server.last_request == request

    def test_calls_counts_only_billed_posts(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """Token counting and retrieval are free, so they do not count as calls."""
        created = client.responses.create(model="gpt-4o-mini", input="hi")
        client.responses.retrieve(created.id)
        client.responses.input_tokens.count(model="gpt-4o-mini", input="hi")
        client.embeddings.create(model="text-embedding-3-small", input="hi")
        assert server.calls == 2
        assert len(server.requests) == 4

    def test_unknown_path_answers_404_in_api_error_shape(self, server: FakeOpenAI) -> None:
        """Unrouted paths return the API's error envelope rather than an HTML page."""
        response = _raw_post(server, "/v1/nope", {})
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"

    def test_reset_forgets_requests_calls_and_faults(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """reset() lets a session-scoped server start each test clean."""
        client.responses.create(model="gpt-4o-mini", input="hi")
        server.fail_next(500)
        server.reset()
        assert (server.calls, server.requests, server.pending_faults) == (0, [], 0)

    def test_concurrent_calls_are_all_recorded_with_unique_ids(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """Recording is thread-safe and ids stay unique under concurrency."""

        def call(_: int) -> str:
            return client.responses.create(model="gpt-4o-mini", input="hi").id

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(call, range(80)))
        assert len(set(ids)) == 80
        assert server.calls == 80
        assert len(server.requests) == 80


class TestResponses:
    """POST /v1/responses, plain and streamed."""

    def test_plain_response_reports_consistent_usage(self, client: openai.OpenAI) -> None:
        """Input tokens follow the documented rule and total = input + output."""
        response = client.responses.create(model="gpt-4.1", input="Say hi")
        usage = response.usage
        assert usage is not None
        expected_input = fake_input_tokens({"model": "gpt-4.1", "input": "Say hi"})
        assert usage.input_tokens == expected_input
        assert usage.output_tokens == 20
        assert usage.output_tokens_details.reasoning_tokens == 0
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        assert response.status == "completed"
        assert response.output_text

    @pytest.mark.parametrize(
        ("alias", "snapshot"),
        [
            ("gpt-5", "gpt-5-2025-08-07"),
            ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
            ("gpt-5-mini", "gpt-5-mini-2025-08-07"),
            ("gpt-4.1", "gpt-4.1-2025-04-14"),
            ("my-fine-tune", "my-fine-tune"),
        ],
    )
    def test_model_is_the_dated_snapshot(
        self, client: openai.OpenAI, alias: str, snapshot: str
    ) -> None:
        """Known aliases resolve to a dated snapshot, unknown names are echoed."""
        assert client.responses.create(model=alias, input="hi").model == snapshot

    def test_reasoning_models_spend_reasoning_tokens_inside_output(
        self, client: openai.OpenAI
    ) -> None:
        """Reasoning tokens are part of output_tokens and scale with effort."""
        medium = client.responses.create(model="gpt-5", input="hi").usage
        low = client.responses.create(model="gpt-5", input="hi", reasoning={"effort": "low"}).usage
        assert medium is not None
        assert low is not None
        assert medium.output_tokens_details.reasoning_tokens == 192
        assert medium.output_tokens == 192 + 20
        assert low.output_tokens_details.reasoning_tokens == 64

    def test_max_output_tokens_cuts_to_incomplete(self, client: openai.OpenAI) -> None:
        """Output never exceeds the bound, and a cut response says why."""
        response = client.responses.create(model="gpt-5", input="hi", max_output_tokens=100)
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage is not None
        assert response.usage.output_tokens == 100

    @pytest.mark.parametrize(
        ("asked", "served"),
        [("flex", "flex"), ("priority", "priority"), ("auto", "default"), (None, "default")],
    )
    def test_service_tier_is_echoed_for_flex_and_priority(
        self, client: openai.OpenAI, asked: Any, served: str
    ) -> None:
        """The served tier is the requested flex/priority, default otherwise."""
        kwargs = {"service_tier": asked} if asked else {}
        assert client.responses.create(model="gpt-5", input="hi", **kwargs).service_tier == served

    def test_output_tokens_header_overrides_default(self, client: openai.OpenAI) -> None:
        """x-fake-output-tokens sets the visible output length per request."""
        usage = client.responses.create(
            model="gpt-4o-mini", input="hi", extra_headers={"x-fake-output-tokens": "7"}
        ).usage
        assert usage is not None
        assert usage.output_tokens == 7

    def test_repeated_long_prefix_is_cached_in_128_token_steps(self, client: openai.OpenAI) -> None:
        """A second call sharing a >=1024-token prefix reports it cached, like the real API."""
        first = client.responses.create(model="gpt-5", input=LONG_PROMPT + "Question one?")
        second = client.responses.create(model="gpt-5", input=LONG_PROMPT + "Question two?")
        assert first.usage is not None
        assert second.usage is not None
        assert first.usage.input_tokens_details.cached_tokens == 0
        cached = second.usage.input_tokens_details.cached_tokens
        assert cached >= 1024
        assert cached % 128 == 0
        assert cached <= second.usage.input_tokens

    def test_prompt_cache_key_scopes_the_cache(self, client: openai.OpenAI) -> None:
        """The same prefix under a different prompt_cache_key is a cache miss."""
        client.responses.create(model="gpt-5", input=LONG_PROMPT, prompt_cache_key="a")
        same = client.responses.create(model="gpt-5", input=LONG_PROMPT, prompt_cache_key="a")
        other = client.responses.create(model="gpt-5", input=LONG_PROMPT, prompt_cache_key="b")
        assert same.usage is not None
        assert other.usage is not None
        assert same.usage.input_tokens_details.cached_tokens > 0
        assert other.usage.input_tokens_details.cached_tokens == 0

    def test_cached_and_reasoning_headers_force_values(self, client: openai.OpenAI) -> None:
        """x-fake-cached-tokens and x-fake-reasoning-tokens give one-shot control of usage."""
        usage = client.responses.create(
            model="gpt-4o-mini",
            input="hi",
            extra_headers={"x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "30"},
        ).usage
        assert usage is not None
        assert usage.input_tokens_details.cached_tokens == 4
        assert usage.output_tokens_details.reasoning_tokens == 30
        assert usage.output_tokens == 50

    def test_ids_are_unique(self, client: openai.OpenAI) -> None:
        """Every created response gets a fresh resp_ id."""
        ids = {client.responses.create(model="gpt-4o-mini", input="hi").id for _ in range(20)}
        assert len(ids) == 20
        assert all(i.startswith("resp_") for i in ids)

    def test_missing_model_is_a_bad_request(self, client: openai.OpenAI) -> None:
        """A body without model is rejected like the API does."""
        with pytest.raises(openai.BadRequestError):
            client.responses.create(input="hi", extra_body={"model": None})

    def test_stream_has_the_realistic_event_sequence(self, client: openai.OpenAI) -> None:
        """The stream emits the documented lifecycle, with usage only in the terminal event."""
        events = list(
            client.responses.create(
                model="gpt-4o-mini", input="hi", stream=True, extra_headers={"x-fake-deltas": "3"}
            )
        )
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].response.usage is None  # type: ignore[union-attr]
        assert events[1].response.usage is None  # type: ignore[union-attr]
        final = events[-1].response  # type: ignore[union-attr]
        assert final.usage is not None
        assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens

    def test_reasoning_stream_adds_a_reasoning_item_first(self, client: openai.OpenAI) -> None:
        """Reasoning models stream a reasoning item at output_index 0 before the message."""
        events = list(client.responses.create(model="gpt-5", input="hi", stream=True))
        added = [e for e in events if e.type == "response.output_item.added"]
        assert [e.item.type for e in added] == ["reasoning", "message"]

    def test_stream_events_knob_sets_delta_count(self) -> None:
        """FakeOpenAI(stream_events=N) produces N text deltas per stream."""
        with (
            FakeOpenAI(stream_events=500) as fake,
            openai.OpenAI(
                base_url=fake.base_url, api_key="test", max_retries=0, timeout=TIMEOUT
            ) as sdk,
        ):
            events = list(sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True))
        assert sum(e.type == "response.output_text.delta" for e in events) == 500

    def test_event_delay_streams_events_over_time(self) -> None:
        """event_delay spaces SSE events out, so a test can act while a stream is in flight."""
        with (
            FakeOpenAI(event_delay=0.05) as fake,
            httpx2.stream(
                "POST",
                fake.base_url + "/responses",
                json={"model": "gpt-4o-mini", "input": "hi", "stream": True},
                headers={"x-fake-deltas": "2"},
                timeout=TIMEOUT,
            ) as response,
        ):
            arrivals = [time.monotonic() for _ in response.iter_raw()]
        assert arrivals[-1] - arrivals[0] >= 0.05 * 5

    def test_stream_helper_final_response_has_usage(self, client: openai.OpenAI) -> None:
        """client.responses.stream(...).get_final_response() accumulates the stream correctly."""
        with client.responses.stream(model="gpt-5", input="hi") as stream:
            text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            final = stream.get_final_response()
        assert final.output_text == text
        assert final.usage is not None
        assert final.usage.output_tokens_details.reasoning_tokens == 192

    def test_async_client_plain_and_streamed(self, server: FakeOpenAI) -> None:
        """AsyncOpenAI works against the same server, streams included."""

        async def run() -> tuple[int, str]:
            async with openai.AsyncOpenAI(
                base_url=server.base_url, api_key="test", max_retries=0, timeout=TIMEOUT
            ) as sdk:
                plain = await sdk.responses.create(model="gpt-4o-mini", input="hi")
                stream = await sdk.responses.create(model="gpt-4o-mini", input="hi", stream=True)
                types = [event.type async for event in stream]
                assert plain.usage is not None
                return plain.usage.output_tokens, types[-1]

        assert asyncio.run(run()) == (20, "response.completed")


class TestBackgroundAndStoredResponses:
    """Background mode, retrieval, cancel, delete and input items."""

    def test_background_is_queued_then_polls_to_completed(self, client: openai.OpenAI) -> None:
        """A background response has no usage until a later poll finds it completed."""
        created = client.responses.create(model="gpt-5", input="hi", background=True)
        assert (created.status, created.usage) == ("queued", None)
        polled = client.responses.retrieve(created.id)
        assert (polled.status, polled.usage) == ("in_progress", None)
        done = client.responses.retrieve(created.id)
        assert done.status == "completed"
        assert done.usage is not None
        assert done.usage.output_tokens == 212

    def test_cancel_stops_a_background_response(self, client: openai.OpenAI) -> None:
        """Cancelling before completion leaves it cancelled, without usage."""
        created = client.responses.create(model="gpt-5", input="hi", background=True)
        cancelled = client.responses.cancel(created.id)
        assert (cancelled.status, cancelled.usage) == ("cancelled", None)
        assert client.responses.retrieve(created.id).status == "cancelled"
        replayed = [e.type for e in client.responses.retrieve(created.id, stream=True)]
        assert replayed == ["response.created", "response.in_progress"]

    def test_cancel_of_a_foreground_response_is_rejected(self, client: openai.OpenAI) -> None:
        """Only background responses can be cancelled."""
        created = client.responses.create(model="gpt-5", input="hi")
        with pytest.raises(openai.BadRequestError):
            client.responses.cancel(created.id)

    def test_retrieve_stream_replays_events_after_a_cursor(self, client: openai.OpenAI) -> None:
        """GET ?stream=true&starting_after=N resumes the stored event stream."""
        created = client.responses.create(
            model="gpt-4o-mini", input="hi", extra_headers={"x-fake-deltas": "4"}
        )
        events = list(client.responses.retrieve(created.id, stream=True, starting_after=5))
        assert events[0].sequence_number == 6
        assert events[-1].type == "response.completed"
        assert events[-1].response.id == created.id

    def test_input_items_list_the_request_input(self, client: openai.OpenAI) -> None:
        """Stored input is listed back as message items."""
        created = client.responses.create(model="gpt-4o-mini", input="What is 2+2?")
        items = list(client.responses.input_items.list(created.id))
        assert len(items) == 1
        assert items[0].type == "message"

    def test_delete_then_retrieve_is_not_found(self, client: openai.OpenAI) -> None:
        """Deleted responses are gone."""
        created = client.responses.create(model="gpt-4o-mini", input="hi")
        client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(created.id)


class TestAzurePaths:
    """Azure-style deployment paths reach the same routes."""

    def test_azure_client_chat_and_responses(self, server: FakeOpenAI) -> None:
        """AzureOpenAI pointed at server.url is served and its paths are recorded as sent."""
        with openai.AzureOpenAI(
            azure_endpoint=server.url, api_version="2024-10-21", api_key="x", max_retries=0
        ) as azure:
            chat = azure.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
            assert server.requests[-1].path == "/openai/deployments/gpt-4o-mini/chat/completions"
            assert server.requests[-1].query == {"api-version": "2024-10-21"}
            response = azure.responses.create(model="gpt-4o-mini", input="x")
        assert chat.model == response.model == "gpt-4o-mini-2024-07-18"
        assert server.calls == 2


class TestCompactAndInputTokens:
    """POST /v1/responses/compact and /v1/responses/input_tokens."""

    def test_compact_returns_a_compaction_with_usage_and_no_model(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """The compaction object carries usage but, like the API, no model field."""
        compacted = client.responses.compact(
            model="gpt-5", input=[{"role": "user", "content": "hello"}]
        )
        assert compacted.object == "response.compaction"
        assert compacted.output[-1].type == "compaction"
        assert compacted.usage.input_tokens > 0
        raw = _raw_post(server, "/v1/responses/compact", {"model": "gpt-5", "input": "hi"})
        assert "model" not in raw.json()
        assert server.calls == 2

    def test_input_tokens_count_uses_the_same_rule(self, client: openai.OpenAI) -> None:
        """The free counting endpoint agrees with what a create call would bill."""
        counted = client.responses.input_tokens.count(model="gpt-5", input="hello there")
        assert counted.object == "response.input_tokens"
        billed = client.responses.create(model="gpt-5", input="hello there").usage
        assert billed is not None
        assert counted.input_tokens == billed.input_tokens


class TestChatCompletions:
    """POST /v1/chat/completions, plain and streamed."""

    def test_plain_completion_has_usage_and_snapshot(self, client: openai.OpenAI) -> None:
        """A plain completion reports prompt/completion/total tokens and the dated model."""
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert completion.model == "gpt-4o-mini-2024-07-18"
        assert completion.id.startswith("chatcmpl-")
        usage = completion.usage
        assert usage is not None
        assert usage.prompt_tokens == fake_input_tokens({"messages": MESSAGES}, "chat.completions")
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    def test_max_completion_tokens_gives_finish_reason_length(self, client: openai.OpenAI) -> None:
        """The bound caps completion tokens and the choice says it was cut."""
        completion = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_completion_tokens=5
        )
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 5

    def test_stream_with_include_usage_ends_with_a_usage_chunk(self, client: openai.OpenAI) -> None:
        """include_usage adds a final chunk with empty choices and usage; others have null."""
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 20
        assert all(chunk.usage is None for chunk in chunks[:-1])
        assert chunks[-2].choices[0].finish_reason == "stop"

    def test_stream_without_include_usage_has_no_usage_anywhere(self, server: FakeOpenAI) -> None:
        """Without include_usage no chunk carries a usage key at all."""
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        names, payloads = _sse_payloads(_raw_post(server, "/v1/chat/completions", body).content)
        assert payloads[-1] == "[DONE]"
        assert set(names) == {None}
        assert all("usage" not in chunk for chunk in payloads[:-1])


class TestEmbeddings:
    """POST /v1/embeddings."""

    def test_default_base64_vectors_decode_with_usage(self, client: openai.OpenAI) -> None:
        """The SDK's default base64 encoding round-trips to float vectors of the right size."""
        result = client.embeddings.create(
            model="text-embedding-3-small", input=["alpha", "beta"], dimensions=64
        )
        assert [len(d.embedding) for d in result.data] == [64, 64]
        assert result.usage.prompt_tokens == result.usage.total_tokens == 4

    def test_float_encoding_and_raw_shape(self, server: FakeOpenAI) -> None:
        """encoding_format=float returns plain lists and base64 matches them bit for bit."""
        body = {"model": "text-embedding-3-small", "input": "alpha", "dimensions": 8}
        floats = _raw_post(server, "/v1/embeddings", {**body, "encoding_format": "float"}).json()
        packed = _raw_post(server, "/v1/embeddings", {**body, "encoding_format": "base64"}).json()
        decoded = struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))
        assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
        assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


class TestFaults:
    """Scripted faults and what the unmodified SDK sees for each."""

    def test_429_raises_rate_limit_error_with_retry_after(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A scripted 429 surfaces as RateLimitError carrying the scripted headers."""
        server.fail_next(status=429, headers={"retry-after": "0"})
        with pytest.raises(openai.RateLimitError) as caught:
            client.responses.create(model="gpt-5", input="hi")
        assert caught.value.response.headers["retry-after"] == "0"
        assert caught.value.code == "rate_limit_exceeded"
        assert server.pending_faults == 0

    def test_500_then_success_is_retried_by_the_sdk(self, server: FakeOpenAI) -> None:
        """With retries on, one 500 costs an extra attempt that calls can count."""
        server.fail_next(status=500, headers={"retry-after-ms": "1"})
        with openai.OpenAI(
            base_url=server.base_url, api_key="test", max_retries=1, timeout=TIMEOUT
        ) as sdk:
            assert sdk.responses.create(model="gpt-5", input="hi").status == "completed"
        assert server.calls == 2

    def test_times_repeats_a_fault(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """times=2 fails two requests, then the server answers normally."""
        server.fail_next(status=500, times=2)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.responses.create(model="gpt-5", input="hi")
        assert client.responses.create(model="gpt-5", input="hi").status == "completed"

    @pytest.mark.parametrize("before_headers", [True, False])
    def test_reset_is_a_connection_error(
        self, server: FakeOpenAI, client: openai.OpenAI, before_headers: bool
    ) -> None:
        """A dropped connection, before or after the headers, is an APIConnectionError."""
        server.reset_next(before_headers=before_headers)
        with pytest.raises(openai.APIConnectionError):
            client.responses.create(model="gpt-5", input="hi")
        assert client.responses.create(model="gpt-5", input="hi").status == "completed"

    def test_cut_stream_raises_without_a_terminal_event(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """An abruptly closed stream yields the sent events, then a connection error."""
        server.cut_stream_next(after_events=3)
        seen: list[str] = []

        def consume() -> None:
            for event in client.responses.create(model="gpt-5", input="hi", stream=True):
                seen.append(event.type)

        with pytest.raises(openai.APIConnectionError):
            consume()
        assert len(seen) == 3
        assert "response.completed" not in seen

    def test_clean_cut_just_ends_the_iteration(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """clean=True closes the body properly, so iteration ends with no completed event."""
        server.cut_stream_next(after_events=2, clean=True)
        types = [e.type for e in client.responses.create(model="gpt-5", input="hi", stream=True)]
        assert types == ["response.created", "response.in_progress"]

    def test_cut_chat_stream_raises(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """Chat streams can be cut the same way, before the usage chunk."""
        server.cut_stream_next(after_events=2)
        with pytest.raises(openai.APIConnectionError):
            list(
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "x"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )

    def test_stream_faults_wait_for_a_stream(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A stream-only fault is not consumed by a non-streaming request."""
        server.cut_stream_next()
        client.responses.create(model="gpt-5", input="hi")
        assert server.pending_faults == 1

    def test_malformed_sse_fails_json_decoding(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A broken data: line reaches the SDK's JSON decoder and raises there."""
        server.malformed_sse_next(after_events=2)
        with pytest.raises(json.JSONDecodeError):
            list(client.responses.create(model="gpt-5", input="hi", stream=True))

    def test_truncated_json_fails_json_decoding(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A 200 with half a JSON body raises while the SDK parses it."""
        server.truncated_json_next()
        with pytest.raises(json.JSONDecodeError):
            client.responses.create(model="gpt-5", input="hi")

    def test_usage_override_null_and_missing(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """usage can be replaced by null or removed entirely."""
        server.usage_override_next(None)
        assert client.responses.create(model="gpt-5", input="hi").usage is None
        server.usage_override_next(OMIT)
        raw = client.responses.with_raw_response.create(model="gpt-5", input="hi")
        assert "usage" not in json.loads(raw.text)

    def test_usage_override_merge_and_drop_model(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """merge=True tampers with single fields; drop_model removes model from the body."""
        server.usage_override_next(
            {"output_tokens": -5, "input_tokens": 10**15, "input_tokens_details": OMIT},
            merge=True,
            drop_model=True,
        )
        body = json.loads(client.responses.with_raw_response.create(model="gpt-5", input="hi").text)
        assert "model" not in body
        assert body["usage"]["output_tokens"] == -5
        assert body["usage"]["input_tokens"] == 10**15
        assert "input_tokens_details" not in body["usage"]
        assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 192}

    def test_usage_override_hits_the_terminal_stream_event(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """On a stream the override lands where usage lives: the terminal event."""
        server.usage_override_next(None)
        events = list(client.responses.create(model="gpt-5", input="hi", stream=True))
        assert events[-1].type == "response.completed"
        assert events[-1].response.usage is None

    @pytest.mark.parametrize("status", ["incomplete", "failed"])
    def test_end_stream_with_non_completed_terminal(
        self, server: FakeOpenAI, client: openai.OpenAI, status: Any
    ) -> None:
        """The stream ends in response.<status>, still reporting usage."""
        server.end_stream_with(status=status)
        events = list(client.responses.create(model="gpt-5", input="hi", stream=True))
        assert events[-1].type == f"response.{status}"
        assert events[-1].response.status == status  # type: ignore[union-attr]
        assert events[-1].response.usage is not None  # type: ignore[union-attr]

    def test_stream_helper_refuses_a_failed_stream(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """The SDK's stream helper has no final response when the stream failed."""
        server.end_stream_with(status="failed")
        with client.responses.stream(model="gpt-5", input="hi") as stream:
            for _ in stream:
                pass
            with pytest.raises(RuntimeError, match=r"response\.completed"):
                stream.get_final_response()

    def test_delay_triggers_a_client_timeout(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A delay longer than the client timeout is an APITimeoutError, then service resumes."""
        server.delay_next(0.5)
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.1).responses.create(model="gpt-5", input="hi")
        assert client.responses.create(model="gpt-5", input="hi").status == "completed"

    def test_path_targets_a_specific_endpoint(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A fault aimed at chat completions leaves Responses calls alone."""
        server.fail_next(status=503, path="/v1/chat/completions")
        client.responses.create(model="gpt-5", input="hi")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )

    def test_faults_of_different_families_combine(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A delay and a usage override apply to the same request."""
        server.delay_next(0.05)
        server.usage_override_next(None)
        started = time.monotonic()
        assert client.responses.create(model="gpt-5", input="hi").usage is None
        assert time.monotonic() - started >= 0.05
        assert server.pending_faults == 0

    def test_stop_interrupts_a_delayed_request(self) -> None:
        """stop() does not wait for a scripted delay to elapse."""
        fake = FakeOpenAI().start()
        fake.delay_next(30)
        sdk = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10)
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                sdk.responses.create(model="gpt-5", input="hi")
            except openai.APIError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        while fake.calls == 0:
            time.sleep(0.01)
        started = time.monotonic()
        fake.stop()
        worker.join(5)
        assert time.monotonic() - started < 1.5
        assert not worker.is_alive()
        assert [type(e) for e in outcome] == [openai.APIConnectionError]
        sdk.close()


class TestReplay:
    """replay_next serves recorded payloads exactly."""

    @pytest.mark.parametrize(
        ("name", "record"), load_traffic(), ids=lambda v: v if isinstance(v, str) else ""
    )
    def test_every_recording_round_trips(
        self, server: FakeOpenAI, name: str, record: dict[str, Any]
    ) -> None:
        """Each of the recorded interactions comes back as exactly its JSON body or events."""
        server.replay_next(record["response"], stream=record["stream"])
        path = "/v1/responses" if record["endpoint"] == "responses" else "/v1/chat/completions"
        response = _raw_post(server, path, record["request"])
        assert response.status_code == 200
        if not record["stream"]:
            assert response.json() == record["response"]
            return
        names, payloads = _sse_payloads(response.content)
        if record["endpoint"] == "responses":
            assert payloads == record["response"]
            assert names == [p["type"] for p in payloads]
        else:
            assert payloads == [*record["response"], "[DONE]"]

    def test_sdk_iterates_a_recorded_stream_to_its_recorded_usage(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """The SDK parses a replayed real stream and sees the recorded terminal usage."""
        record = json.loads((TRAFFIC / "openllmetry-9.json").read_text())
        server.replay_next(record["response"], stream=True)
        events = list(client.responses.create(**record["request"]))
        assert [e.to_dict() for e in events] == record["response"]
        assert events[-1].response.usage.to_dict() == record["usage"]

    def test_replay_does_not_apply_to_free_endpoints(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """By default replays wait for a billed POST, skipping token counting."""
        server.replay_next({"object": "response.input_tokens", "input_tokens": 1}, stream=False)
        assert client.responses.input_tokens.count(model="gpt-5", input="hi").input_tokens > 1
        assert server.pending_faults == 1


class TestHelpers:
    """sse() and fake_input_tokens()."""

    def test_sse_frames_responses_events_with_event_lines(self) -> None:
        """Responses payloads get an event: line named after their type and no [DONE]."""
        body = sse([{"type": "response.created", "sequence_number": 0}])
        assert body == (
            b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
        )

    def test_sse_frames_chat_chunks_as_data_with_done(self) -> None:
        """Chat chunks are data-only and the stream ends with [DONE]."""
        body = sse([{"object": "chat.completion.chunk", "choices": []}])
        assert body.endswith(b"data: [DONE]\n\n")
        assert b"event:" not in body

    def test_fake_input_tokens_rule(self) -> None:
        """The documented rule: compact JSON of the prompt parts, // 4, + 8."""
        body = {"model": "x", "instructions": "Be brief.", "input": "hi"}
        text = json.dumps(["Be brief.", "hi"], separators=(",", ":"))
        assert fake_input_tokens(body) == len(text) // 4 + 8
