"""
Thin sync and async shells around the SDK's single choke point, ``client.request()``.

Every HTTP call the OpenAI clients make — ``create``, ``parse`` (which bypasses ``create``),
``stream()`` managers, ``retrieve``/``cancel``, ``compact``, ``beta.responses``, chat,
embeddings, and the ``with_raw_response``/``with_streaming_response`` variants — goes through
``request()``. Overriding it in a subclass survives ``with_options()``/``copy()`` (they build
``self.__class__``) and needs no global patching. SDK retries happen *inside* it, so a call is
metered once however many attempts it took.

All decisions live in `costmeter._meter.Call`; the two shells differ only in ``await``. Streams
are observed twice over, by design: the SDK's typed events (no re-parsing: cheap) through a
subclass of the SDK's own stream class, and the HTTP body's close, through a tap on the
``httpx2`` response, which is the one thing every exit path (full read, ``break`` + ``close()``,
the stream manager's ``with`` exit, raw ``iter_lines()`` readers) has in common.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx2
from openai._models import FinalRequestOptions
from openai.types.responses.input_token_count_response import InputTokenCountResponse

from costmeter import _logging as _log
from costmeter._errors import CostmeterError
from costmeter._meter import Call, MeterConfig, report_internal_error, route_of

__all__ = ["request_async", "request_sync"]

_RAW_HEADER = "X-Stainless-Raw-Response"
_HELPER_HEADER = "X-Stainless-Helper-Method"


def _start(config: MeterConfig, options: Any, stream: bool) -> tuple[Call | None, bool, Any]:
    """
    Create and begin the `Call` for *options*; ``None`` for requests that bill nothing.

    Returns the options to send: the caller's, untouched, except for the opt-in
    ``include_stream_usage`` on Chat streams (typed streams only: a raw reader would see the
    extra chunk).
    """
    try:
        route = route_of(options.method, options.url)
        if route is None:
            return None, False, options
        headers = options.headers if isinstance(options.headers, dict) else {}
        raw = bool(headers.get(_RAW_HEADER))
        response_id = None
        if route.kind == "lookup":
            response_id = options.url.split("?", 1)[0].split("/")[2]
        body = options.json_data if isinstance(options.json_data, dict) else None
        params = options.params if isinstance(options.params, dict) else {}
        call = Call(
            route,
            body,
            config,
            stream=stream or bool(params.get("stream")),
            response_id=response_id,
        )
    except Exception as exc:
        from costmeter._meter import _strict  # noqa: PLC0415

        if _strict:
            raise
        report_internal_error(exc, "start", None, None)
        return None, False, options
    if (
        config.include_stream_usage
        and call.stream
        and not raw
        and route.api == "chat.completions"
        and body is not None
    ):
        stream_options = body.get("stream_options")
        if not (isinstance(stream_options, dict) and stream_options.get("include_usage")):
            merged = {**(stream_options or {}), "include_usage": True}
            options = options.model_copy(update={"json_data": {**body, "stream_options": merged}})
            # The SDK's stream() helper reads usage chunks itself (its final completion then
            # carries the usage); plain create(stream=True) callers must not see the extra chunk.
            call.hide_usage_chunk = headers.get(_HELPER_HEADER) != "chat.completions.stream"
    return call, raw, options


def _count_options(body: dict[str, Any]) -> FinalRequestOptions:
    """A plain request to the free count endpoint (the client adds auth and its own headers)."""
    return FinalRequestOptions.construct(
        method="post", url="/responses/input_tokens", json_data=body
    )


def _count_failed(call: Call, exc: Exception) -> None:
    """The exact count is a refinement: when it fails, the local estimate stands."""
    _log.emit(
        _log.WARNING,
        {
            "warning": "exact_input_tokens_failed",
            "api": call.route.api,
            "model": call.model,
            "error_type": type(exc).__name__,
        },
    )


def _begin(call: Call, exact: int | None, stream: bool, stream_cls: Any, raw: bool) -> Any:
    """Reserve (may refuse on purpose: a budget); return the stream class to send with."""
    call.begin(exact)
    if stream and stream_cls is not None and not raw:
        return _metered_stream_cls(stream_cls, call)
    return stream_cls


def _failed(call: Call, exc: BaseException) -> None:
    """``request()`` raised: finish the call with the error the caller will see."""
    _received_before(call, exc)
    call.finish(exc)


def _received_before(call: Call, exc: BaseException) -> None:
    """
    Mark *call* as answered when *exc* was raised while the SDK parsed a 2xx response (a body
    cut short, invalid JSON, a validation error): the API billed that request, so it is charged
    as estimated rather than as nothing. The SDK's ``_process_response`` frame holds the
    response; this runs on the error path only.
    """
    try:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name == "_process_response":
                response = tb.tb_frame.f_locals.get("response")
                if isinstance(response, httpx2.Response) and response.is_success:
                    call.received = True
                    call.request_id = call.request_id or response.headers.get("x-request-id")
                return
            tb = tb.tb_next
    except Exception as error:  # a refinement: never worse than not knowing
        report_internal_error(error, "received", call.route.api, call.model)


def _after(call: Call, result: Any, raw: bool) -> Any:
    """Observe what ``request()`` returned; finish unless a stream or unread body remains."""
    http = getattr(result, "http_response", None) if raw else None
    if isinstance(http, httpx2.Response):
        call.request_id = http.headers.get("x-request-id")
        if hasattr(http, "_content"):  # body already read: plain JSON
            _observe_json(call, http.content)
            call.finish()
        else:  # the caller reads it (iter_lines, parse, json...): tap the bytes
            call.received = True  # a 2xx arrived: billed even if the caller never reads it
            _tap(http, call, parse=True)
        return result
    stream_response = getattr(result, "response", None)
    if isinstance(stream_response, httpx2.Response) and call.stream:
        return result  # our stream class taps and observes it
    call.observe(result)
    call.finish()
    return result


def request_sync(
    config: MeterConfig,
    send: Callable[..., Any],
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """The sync shell: ``send`` is the SDK's own ``request``."""
    call, raw, options = _start(config, options, stream)
    if call is None:
        return send(cast_to, options, stream=stream, stream_cls=stream_cls)
    count_body = call.count_body()
    exact = None
    if count_body is not None:
        try:
            exact = send(InputTokenCountResponse, _count_options(count_body)).input_tokens
        except Exception as exc:  # fall back to the local estimate
            _count_failed(call, exc)
    stream_cls = _begin(call, exact, stream, stream_cls, raw)
    try:
        result = send(cast_to, options, stream=stream, stream_cls=stream_cls)
    except BaseException as exc:
        _failed(call, exc)
        raise
    return _after(call, result, raw)


async def request_async(
    config: MeterConfig,
    send: Callable[..., Awaitable[Any]],
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """The async shell: identical to `request_sync` but for ``await``."""
    call, raw, options = _start(config, options, stream)
    if call is None:
        return await send(cast_to, options, stream=stream, stream_cls=stream_cls)
    count_body = call.count_body()
    exact = None
    if count_body is not None:
        try:
            exact = (await send(InputTokenCountResponse, _count_options(count_body))).input_tokens
        except Exception as exc:  # fall back to the local estimate
            _count_failed(call, exc)
    if not call.ledger_io:
        stream_cls = _begin(call, exact, stream, stream_cls, raw)
    else:  # a SQLite/Redis ledger: keep its I/O off the event loop
        stream_cls = await asyncio.to_thread(_begin, call, exact, stream, stream_cls, raw)
    try:
        result = await send(cast_to, options, stream=stream, stream_cls=stream_cls)
    except BaseException as exc:
        _failed(call, exc)
        raise
    if call.ledger_io and not call.stream:
        return await asyncio.to_thread(_after, call, result, raw)
    return _after(call, result, raw)


# -- streams -------------------------------------------------------------------------------------


def _metered_stream_cls(base: Any, call: Call) -> Any:
    """
    A subclass of the SDK's own stream class (``Stream[...]`` or ``AsyncStream[...]``) that
    observes each typed event and finishes the call when iteration ends or fails.

    The returned object *is* an SDK stream (``isinstance`` holds; ``with``, ``close()``,
    ``.response`` unchanged). While the SDK's generator runs, ``call.in_sdk`` is set so that the
    SDK closing the HTTP body inside its own ``finally`` does not finish the call before we know
    how iteration ended.
    """
    origin = getattr(base, "__origin__", base)
    if getattr(origin, "__aiter__", None) is not None and hasattr(origin, "__anext__"):

        class _AsyncMetered(base):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                _tap(self.response, call, parse=False)
                call.received = True

            async def __stream__(self) -> AsyncIterator[Any]:
                inner = super().__stream__()
                while True:
                    call.in_sdk = True
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        call.stream_ended()
                        return
                    except BaseException as exc:
                        call.stream_ended(exc)
                        raise
                    if call.stream_item(item):
                        yield item

        return _AsyncMetered

    class _Metered(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _tap(self.response, call, parse=False)
            call.received = True

        def __stream__(self) -> Iterator[Any]:
            inner = super().__stream__()
            while True:
                call.in_sdk = True
                try:
                    item = next(inner)
                except StopIteration:
                    call.stream_ended()
                    return
                except BaseException as exc:
                    call.stream_ended(exc)
                    raise
                if call.stream_item(item):
                    yield item

    return _Metered


class _SseParser:
    """Incremental SSE → JSON events, for callers who read raw bytes and never build models."""

    __slots__ = ("buffer", "call", "data", "parse")

    def __init__(self, call: Call, parse: bool) -> None:
        self.call = call
        self.parse = parse
        self.buffer = b""
        self.data: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            self.data.append(line[5:].lstrip(b" "))

    def _dispatch(self) -> None:
        if not self.data:
            return
        payload = b"\n".join(self.data)
        self.data = []
        if payload != b"[DONE]":
            _observe_json(self.call, payload)

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer.rstrip(b"\r"))
            self.buffer = b""
        self._dispatch()


def _observe_json(call: Call, payload: bytes) -> None:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return  # not JSON (malformed body): nothing to bill from it
    call.observe(parsed)


class _Tap:
    """Shared state of the sync/async byte taps: parse raw bodies, finish on close."""

    def __init__(self, call: Call, parse: bool, content_type: str) -> None:
        self.call = call
        self.sse: _SseParser | None = None
        self.body: list[bytes] | None = None
        if parse:
            if "text/event-stream" in content_type:
                self.sse = _SseParser(call, parse)
            else:
                self.body = []

    def feed(self, chunk: bytes) -> None:
        if self.sse is not None:
            self.sse.feed(chunk)
        elif self.body is not None:
            self.body.append(chunk)

    def failed(self, exc: BaseException) -> None:
        # Inside the SDK's stream the SDK wraps this transport error (``APIConnectionError``)
        # and our stream class finishes with what the caller actually sees.
        if not self.call.in_sdk:
            self.call.finish(exc)

    def closed(self) -> None:
        call = self.call
        try:
            if self.sse is not None:
                self.sse.close()
            elif self.body:
                _observe_json(call, b"".join(self.body))
        finally:
            if not call.in_sdk:
                call.finish(abandoned=True)


class _SyncTap(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, tap: _Tap) -> None:
        self.inner = inner
        self.tap = tap

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.inner:
                self.tap.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.tap.failed(exc)
            raise

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.tap.closed()


class _AsyncTap(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, tap: _Tap) -> None:
        self.inner = inner
        self.tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                self.tap.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.tap.failed(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.tap.closed()


def _tap(response: httpx2.Response, call: Call, *, parse: bool) -> None:
    """
    Put a tap on *response*'s body stream; a never-read, never-closed body still finishes the
    call when the response is garbage-collected.
    """
    try:
        tap = _Tap(call, parse, response.headers.get("content-type", ""))
        if call.request_id is None:
            call.request_id = response.headers.get("x-request-id")
        inner = response.stream
        if isinstance(inner, httpx2.AsyncByteStream):
            response.stream = _AsyncTap(inner, tap)
        elif isinstance(inner, httpx2.SyncByteStream):
            response.stream = _SyncTap(inner, tap)
        weakref.finalize(response, call.finish, None, abandoned=True)
    except CostmeterError:
        raise
    except Exception as exc:
        from costmeter._meter import _strict  # noqa: PLC0415

        if _strict:
            raise
        report_internal_error(exc, "tap", call.route.api, call.model)
