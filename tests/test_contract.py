"""
Contract with the openai SDK's internals that costmeter relies on.

costmeter overrides one private method (``request()``) and reads a few private shapes. An
``openai`` upgrade that moves any of them must fail *here*, loudly, naming what moved and which
costmeter code depends on it — not as a silent loss of metering in production. Each test pins one
dependency; the message says what to update.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any

import httpx2
import openai
import openai._base_client as base_client
import openai._constants as constants
import openai._legacy_response as legacy_response
import openai._models as sdk_models
import openai._response as sdk_response
import openai._streaming as streaming
import pytest
from openai.resources.beta.realtime.realtime import (
    RealtimeConnectionManager as BetaRealtimeConnectionManager,
)
from openai.resources.beta.responses import Responses as BetaResponses
from openai.resources.beta.responses.responses import (
    ResponsesConnectionManager as BetaResponsesConnectionManager,
)
from openai.resources.realtime.realtime import RealtimeConnectionManager
from openai.resources.responses import AsyncResponses, Responses
from openai.resources.responses.responses import (
    AsyncResponsesConnectionManager,
    ResponsesConnectionManager,
)
from structlog.testing import capture_logs

import costmeter
import costmeter._clients
from costmeter import _flow


def _broken(what: str, used_by: str) -> str:
    return (
        f"openai {openai.__version__} changed {what}; costmeter depends on it in {used_by}. "
        "Update costmeter before allowing this openai version."
    )


def _chat(model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-contract",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def _bare(handler: Any) -> openai.OpenAI:
    """A bare SDK client whose HTTP goes to *handler* (no network)."""
    return openai.OpenAI(
        api_key="contract-key",
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


@pytest.mark.parametrize("cls", [base_client.SyncAPIClient, base_client.AsyncAPIClient])
def test_request_signature(cls: type) -> None:
    """``request(cast_to, options, *, stream, stream_cls)`` is the single choke point we override."""
    params = inspect.signature(cls.request).parameters  # type: ignore[attr-defined]
    shape = [(name, p.kind) for name, p in params.items()]
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY

    assert [
        ("self", positional),
        ("cast_to", positional),
        ("options", positional),
        ("stream", keyword),
        ("stream_cls", keyword),
    ] == shape, _broken(f"{cls.__name__}.request's signature", "_clients.py and _instrument.py")
    is_async = inspect.iscoroutinefunction(cls.request)  # type: ignore[attr-defined]
    assert (cls is base_client.AsyncAPIClient) == is_async, _broken(
        f"whether {cls.__name__}.request is a coroutine", "_clients.py request overrides"
    )


def test_public_clients_inherit_request() -> None:
    """The public clients do not override request(): ours sits directly above the SDK's."""
    for cls in (openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, openai.AsyncAzureOpenAI):
        own = [klass.__name__ for klass in cls.__mro__ if "request" in vars(klass)]
        base = "AsyncAPIClient" if "Async" in cls.__name__ else "SyncAPIClient"
        assert [base] == own, _broken(f"which classes define {cls.__name__}.request", "_flow")


def test_final_request_options_fields() -> None:
    """The FinalRequestOptions fields the shell reads, and model_copy(update=) it uses."""
    fields = set(sdk_models.FinalRequestOptions.model_fields)
    needed = {"method", "url", "json_data", "params", "headers"}

    assert needed <= fields, _broken(
        f"FinalRequestOptions fields (missing {sorted(needed - fields)})", "_flow._start"
    )
    options = sdk_models.FinalRequestOptions.construct(  # what _flow._count_options builds
        method="post", url="/chat/completions", json_data={"model": "m"}
    )
    copied = options.model_copy(update={"json_data": {"model": "m", "stream_options": {}}})
    assert {"model": "m", "stream_options": {}} == copied.json_data, _broken(
        "FinalRequestOptions.model_copy(update=...)", "_flow._start (include_stream_usage)"
    )


def test_raw_response_header() -> None:
    """with_raw_response / with_streaming_response are recognised by this header."""
    assert "X-Stainless-Raw-Response" == constants.RAW_RESPONSE_HEADER == _flow._RAW_HEADER, (
        _broken("the raw-response header name", "_flow._RAW_HEADER")
    )


def test_raw_responses_expose_http_response() -> None:
    """LegacyAPIResponse and APIResponse hold the httpx2 response as ``.http_response``."""
    client = _bare(lambda request: httpx2.Response(200, json=_chat()))

    legacy = client.chat.completions.with_raw_response.create(model="m", messages=[])
    with client.chat.completions.with_streaming_response.create(model="m", messages=[]) as api:
        streamed_http = api.http_response

    assert isinstance(legacy, legacy_response.LegacyAPIResponse)
    assert isinstance(legacy.http_response, httpx2.Response), _broken(
        "LegacyAPIResponse.http_response", "_flow._after"
    )
    assert isinstance(api, sdk_response.APIResponse)
    assert isinstance(streamed_http, httpx2.Response), _broken(
        "APIResponse.http_response", "_flow._after"
    )


@pytest.mark.parametrize("cls", [streaming.Stream, streaming.AsyncStream])
def test_stream_classes(cls: type) -> None:
    """
    Our stream subclass relies on: keyword ``__init__(cast_to, response, client, ...)`` setting
    ``.response``, and a ``__stream__`` generator method the iterator is built from.
    """
    params = inspect.signature(cls.__init__).parameters
    assert {"cast_to", "response", "client"} <= set(params), _broken(
        f"{cls.__name__}.__init__ parameters", "_streams.metered_stream_cls"
    )
    generator = (
        inspect.isasyncgenfunction if cls is streaming.AsyncStream else inspect.isgeneratorfunction
    )
    assert generator(cls.__stream__), _broken(  # type: ignore[attr-defined]
        f"{cls.__name__}.__stream__", "_streams.metered_stream_cls"
    )


def test_stream_exposes_its_http_response() -> None:
    """A real chat stream is an openai Stream whose ``.response`` is the httpx2 response."""
    chunk = {**_chat(), "object": "chat.completion.chunk", "usage": None}
    chunk["choices"] = [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    client = _bare(
        lambda request: httpx2.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )

    stream = client.chat.completions.create(model="m", messages=[], stream=True)

    assert isinstance(stream, streaming.Stream)
    assert isinstance(stream.response, httpx2.Response), _broken(
        "Stream.response", "_streams.metered_stream_cls"
    )
    assert ["ok"] == [c.choices[0].delta.content for c in stream]


@pytest.mark.parametrize("cls", [base_client.SyncAPIClient, base_client.AsyncAPIClient])
def test_attempt_hooks(cls: type) -> None:
    """
    The clients override ``_send_request(request, *, stream, **kwargs)`` (called once per
    attempt, inside ``request()``'s retry loop) and ``_process_response(*, response, ...)``
    (called with keywords once a response is accepted), with these signatures.
    """
    send = getattr(cls, "_send_request", None)
    assert send is not None, _broken(f"{cls.__name__}._send_request", "_clients (attempts)")
    params = inspect.signature(send).parameters
    assert "request" in params, _broken(f"{cls.__name__}._send_request(request)", "_flow")
    assert params["stream"].kind is inspect.Parameter.KEYWORD_ONLY, _broken(
        f"{cls.__name__}._send_request's parameters", "_flow.send_request_*"
    )
    process = getattr(cls, "_process_response", None)
    assert process is not None, _broken(f"{cls.__name__}._process_response", "_clients")
    params = inspect.signature(process).parameters
    assert params["response"].kind is inspect.Parameter.KEYWORD_ONLY, _broken(
        f"{cls.__name__}._process_response's 'response' parameter", "_flow.process_response_failed"
    )
    source = inspect.getsource(cls.request)  # type: ignore[attr-defined]
    for hook in ("self._send_request(", "self._process_response("):
        assert hook in source, _broken(f"{cls.__name__}.request's call {hook}...)", "_flow")


def test_azure_rewrites_paths_after_request() -> None:
    """
    Azure rewrites deployment paths while building the HTTP request, i.e. after ``request()``
    saw ``/chat/completions``: route_of classifies that un-rewritten path.
    """
    seen: list[str] = []
    sent: list[str] = []

    class Recording(openai.AzureOpenAI):
        def request(self, cast_to: Any, options: Any, **kwargs: Any) -> Any:
            seen.append(options.url)
            return super().request(cast_to, options, **kwargs)

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        return httpx2.Response(200, json=_chat())

    client = Recording(
        api_key="contract-key",
        api_version="2024-10-21",
        azure_endpoint="https://contract.openai.azure.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    client.chat.completions.create(model="prod-chat", messages=[])

    assert ["/openai/deployments/prod-chat/chat/completions"] == sent
    assert ["/chat/completions"] == seen, _broken(
        "the URL Azure clients pass to request()", "_endpoints.endpoint_for"
    )


@pytest.mark.parametrize("client_cls", [openai.OpenAI, openai.AsyncOpenAI])
def test_resource_properties_we_extend(client_cls: type) -> None:
    """
    ``responses``, ``realtime`` and ``beta`` are functools.cached_property on the clients (we wrap
    them to meter ``connect()``), and the resources still have ``connect``.
    """
    for name in ("responses", "realtime", "beta"):
        assert isinstance(vars(client_cls)[name], functools.cached_property), _broken(
            f"{client_cls.__name__}.{name}", "_clients._Options"
        )
    for resource in (Responses, AsyncResponses):
        assert callable(getattr(resource, "connect", None)), _broken(
            f"{resource.__name__}.connect", "_realtime.meter_connect"
        )


class TestWebSocketConnect:
    """
    ``responses.connect()`` and ``realtime.connect()`` speak WebSocket, never ``request()``: the
    metered clients return the SDK's own connection managers with ``_connect_ws`` (every socket
    the SDK opens, reconnects included) wrapped, so each frame passes costmeter's proxy
    (`costmeter._realtime`). No socket opens until the manager is entered.
    """

    @pytest.mark.parametrize(
        ("manager_cls", "factory"),
        [
            (ResponsesConnectionManager, lambda c: c.responses.connect()),
            (BetaResponsesConnectionManager, lambda c: c.beta.responses.connect()),
            (ResponsesConnectionManager, lambda c: c.with_options(timeout=3).responses.connect()),
            (RealtimeConnectionManager, lambda c: c.realtime.connect(model="gpt-realtime")),
        ],
    )
    def test_sdk_manager_with_metered_socket_factory(self, manager_cls: type, factory: Any) -> None:
        client = costmeter.OpenAI(api_key="contract-key", base_url="https://api.openai.test/v1")

        with costmeter.budget("1"), capture_logs() as logs:
            manager = factory(client)

        assert isinstance(manager, manager_cls)
        assert callable(vars(manager_cls).get("_connect_ws")), _broken(
            f"{manager_cls.__name__}._connect_ws", "_realtime._metered_manager"
        )
        assert "_connect_ws" in vars(manager)  # costmeter's wrapper shadows the SDK's method
        assert logs == []

    def test_beta_realtime_manager_meters_on_entry(self) -> None:
        """The older ``beta.realtime`` manager has no ``_connect_ws``: its entry is wrapped."""
        client = costmeter.OpenAI(api_key="contract-key", base_url="https://api.openai.test/v1")

        manager = client.beta.realtime.connect(model="gpt-4o-realtime-preview")

        assert isinstance(manager, BetaRealtimeConnectionManager)
        assert "_connect_ws" not in vars(BetaRealtimeConnectionManager)
        assert type(manager) is not BetaRealtimeConnectionManager  # costmeter's subclass

    async def test_async_manager(self) -> None:
        client = costmeter.AsyncOpenAI(
            api_key="contract-key", base_url="https://api.openai.test/v1"
        )

        manager = client.responses.connect()

        assert isinstance(manager, AsyncResponsesConnectionManager)
        assert inspect.iscoroutinefunction(vars(manager)["_connect_ws"])
        assert inspect.iscoroutinefunction(vars(AsyncResponsesConnectionManager)["_connect_ws"])
        await client.close()

    def test_resources_keep_their_sdk_types(self) -> None:
        """The wrapped resources are the SDK's own objects, created once per client."""
        client = costmeter.OpenAI(api_key="contract-key", base_url="https://api.openai.test/v1")

        assert isinstance(client.responses, Responses)
        assert client.responses is client.responses
        assert isinstance(client.beta.responses, BetaResponses)
