"""
One flow per metered request, and two small drivers that run it: sync and async.

The flow (`_flow`) is a generator in the style of httpx's ``auth_flow``: it makes every decision
and *yields* the I/O it needs — `Send` (the SDK's own ``request()``) or `Books` (reserving and
settling budgets, which is blocking I/O on a SQLite/Redis ledger) — and receives the result or
the exception back. `run_sync` performs each step directly; `run_async` awaits `Send` and runs
`Books` on a worker thread when a persistent ledger is involved, so a locked ledger never stalls
the event loop, and a task cancelled mid-reservation gives its hold back.

Interception points in the SDK (pinned by ``tests/test_contract.py``), all on the client class:
``request()`` (once per call: SDK retries happen inside it), ``_send_request()`` (once per
attempt: an attempt that reached the API and lost its response is billed) and
``_process_response()`` (a 2xx body the SDK then fails to parse — ``ValidationError``,
``LengthFinishReasonError`` — is billed from its reported usage). The attempt hooks find the
call through a ``ContextVar`` set only while its request is being sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any

from openai._models import FinalRequestOptions
from openai.types.responses.input_token_count_response import InputTokenCountResponse

from costmeter import _events as _log
from costmeter._endpoints import FilePart, Request, endpoint_for, unmetered_api
from costmeter._errors import UnpricedRequestError
from costmeter._meter import CURRENT, Call, MeterConfig, report_internal_error, strict
from costmeter._streams import is_response, metered_stream_cls, observe_read_body, tap

__all__ = [
    "process_response_failed",
    "request_async",
    "request_sync",
    "send_request_async",
    "send_request_sync",
]

_RAW_HEADER = "X-Stainless-Raw-Response"
_HELPER_HEADER = "X-Stainless-Helper-Method"


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request through the SDK (its retries included); *call* is told of each attempt."""

    cast_to: Any
    options: Any
    stream: bool = False
    stream_cls: Any = None
    call: Call | None = None


@dataclass(frozen=True, slots=True)
class Books:
    """Run *run* (budget bookkeeping); *io*: it touches a persistent ledger. *undo* gives back
    what *run* took, should the task be cancelled while it runs."""

    run: Callable[[], Any]
    io: bool
    undo: Callable[[], None] | None = None


Flow = Generator[Send | Books, Any, Any]


def _flow(config: MeterConfig, cast_to: Any, options: Any, stream: bool, stream_cls: Any) -> Flow:
    call, raw, options = _start(config, options, stream)
    if call is None:
        return (yield Send(cast_to, options, stream, stream_cls))
    exact = None
    count_body = call.count_body()
    if count_body is not None:
        try:
            counted = yield Send(InputTokenCountResponse, _count_options(count_body, options))
            exact = counted.input_tokens
        except Exception as exc:  # a refinement: the local estimate stands
            _warn(call, "exact_input_tokens_failed", exc)
    yield Books(partial(call.begin, exact), call.ledger_io, undo=call.release)
    if stream and stream_cls is not None and not raw:
        stream_cls = metered_stream_cls(stream_cls)
    try:
        result = yield Send(cast_to, options, stream, stream_cls, call)
    except BaseException as exc:
        yield Books(partial(call.finish, exc), call.ledger_io)
        raise
    return (yield Books(partial(_after, call, result, raw), call.ledger_io and not call.stream))


def run_sync(flow: Flow, send: Callable[..., Any]) -> Any:
    """Drive *flow* with blocking I/O: *send* is the SDK's own ``request``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as done:
            return done.value
        try:
            if isinstance(step, Books):
                value, error = step.run(), None
            else:
                token = CURRENT.set(step.call)
                try:
                    value = send(
                        step.cast_to, step.options, stream=step.stream, stream_cls=step.stream_cls
                    )
                finally:
                    CURRENT.reset(token)
                error = None
        except BaseException as exc:
            value, error = None, exc


async def run_async(flow: Flow, send: Callable[..., Awaitable[Any]]) -> Any:
    """Drive *flow* on an event loop; ledger I/O runs on a worker thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as done:
            return done.value
        try:
            if isinstance(step, Books):
                value = await _in_thread(step) if step.io else step.run()
            else:
                token = CURRENT.set(step.call)
                try:
                    value = await send(
                        step.cast_to, step.options, stream=step.stream, stream_cls=step.stream_cls
                    )
                finally:
                    CURRENT.reset(token)
            error = None
        except BaseException as exc:
            value, error = None, exc


async def _in_thread(step: Books) -> Any:
    """
    Run *step* on a worker thread. If the task is cancelled meanwhile, what the step took is
    given back once it is done — by the worker thread itself, so a hold cannot outlive the
    call even when the event loop is gone by then.
    """
    lock = threading.Lock()
    state = {"cancelled": False, "done": False}

    def run() -> Any:
        try:
            return step.run()
        finally:
            with lock:
                state["done"] = True
                undo = state["cancelled"]
            if undo and step.undo is not None:
                step.undo()

    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with lock:
            state["cancelled"] = True
            finished = state["done"]
        if finished and step.undo is not None:  # done before we knew: undo off the loop
            threading.Thread(target=step.undo, name="costmeter-undo", daemon=True).start()
        raise


def request_sync(
    config: MeterConfig,
    send: Callable[..., Any],
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """A metered ``request()``: *send* is the SDK's own."""
    return run_sync(_flow(config, cast_to, options, stream, stream_cls), send)


async def request_async(
    config: MeterConfig,
    send: Callable[..., Awaitable[Any]],
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """A metered async ``request()``: *send* is the SDK's own."""
    return await run_async(_flow(config, cast_to, options, stream, stream_cls), send)


# -- attempt hooks -----------------------------------------------------------------------------


def send_request_sync(send: Callable[..., Any], request: Any, stream: bool, kwargs: Any) -> Any:
    """One SDK attempt (``_send_request``): the current call learns whether it was billed."""
    call = CURRENT.get()
    if call is None:
        return send(request, stream=stream, **kwargs)
    call.attempt()
    try:
        response = send(request, stream=stream, **kwargs)
    except BaseException as exc:
        call.attempt_failed(exc)
        raise
    call.answered(response.headers.get("x-request-id"), response.is_success)
    return response


async def send_request_async(
    send: Callable[..., Awaitable[Any]], request: Any, stream: bool, kwargs: Any
) -> Any:
    """The async twin of `send_request_sync`."""
    call = CURRENT.get()
    if call is None:
        return await send(request, stream=stream, **kwargs)
    call.attempt()
    try:
        response = await send(request, stream=stream, **kwargs)
    except BaseException as exc:
        call.attempt_failed(exc)
        raise
    call.answered(response.headers.get("x-request-id"), response.is_success)
    return response


def process_response_failed(response: Any) -> None:
    """
    The SDK failed to turn a response into its result (a parse ``ValidationError``, a
    ``LengthFinishReasonError``, a body cut short): a 2xx body that was read still reports what
    the API billed, so the current call takes its usage from it.
    """
    call = CURRENT.get()
    if call is None or not is_response(response) or not response.is_success:
        return
    try:
        if hasattr(response, "_content"):
            _observe_json(call, response.content)
    except Exception as exc:  # a refinement: never worse than not knowing
        report_internal_error(exc, "received", call.api, call.model)


# -- steps -------------------------------------------------------------------------------------


def _start(config: MeterConfig, options: Any, stream: bool) -> tuple[Call | None, bool, Any]:
    """
    Create the `Call` for *options*; ``None`` for requests that bill nothing.

    Returns the options to send: the caller's, untouched, except for the opt-in
    ``include_stream_usage`` on Chat streams (typed streams only: a raw reader would see the
    extra chunk).

    Raises:
        UnpricedRequestError: a billed request no endpoint module meters, inside a budget.
    """
    try:
        path = options.url.split("?", 1)[0].rstrip("/")
        routed = endpoint_for(options.method, path)
        if routed is None:
            _unmetered(options.method, path)
            return None, False, options
        endpoint, lookup_id = routed
        headers = options.headers if isinstance(options.headers, dict) else {}
        raw = bool(headers.get(_RAW_HEADER))
        body = options.json_data if isinstance(options.json_data, dict) else {}
        params = options.params if isinstance(options.params, dict) else {}
        request = Request(
            api=endpoint.api,
            method=options.method.lower(),
            path=path,
            body=body,
            files=_files(options),
            stream=stream or bool(params.get("stream")) or bool(body.get("stream")),
            lookup_id=lookup_id,
            deployments=config.deployments,
        )
        call = Call(endpoint, request, config)
    except UnpricedRequestError:
        raise
    except Exception as exc:
        if strict():
            raise
        report_internal_error(exc, "start", None, None)
        return None, False, options
    if (
        config.include_stream_usage
        and call.stream
        and not raw
        and endpoint.api == "chat.completions"
        and body
    ):
        stream_options = body.get("stream_options")
        if not (isinstance(stream_options, dict) and stream_options.get("include_usage")):
            merged = {**(stream_options or {}), "include_usage": True}
            options = options.model_copy(update={"json_data": {**body, "stream_options": merged}})
            # The SDK's stream() helper reads usage chunks itself (its final completion then
            # carries the usage); plain create(stream=True) callers must not see the extra chunk.
            call.hide_usage_chunk = headers.get(_HELPER_HEADER) != "chat.completions.stream"
    return call, raw, options


def _unmetered(method: str, path: str) -> None:
    """A billed request no endpoint module prices: refused inside a budget, logged outside."""
    api = unmetered_api(method, path)
    if api is None:
        return
    from costmeter._budget import active_budgets  # noqa: PLC0415

    budgets = active_budgets()
    if budgets and not all(b.allow_unpriced for b in budgets):
        raise UnpricedRequestError(api, "costmeter does not meter this endpoint yet")
    _log.emit(_log.WARNING, {"warning": "unmetered_request", "api": api})


def _files(options: Any) -> tuple[FilePart, ...]:
    """The uploaded files of a multipart request, where their bytes can be read without
    consuming what the SDK is about to send (bytes, ``BytesIO``, a seekable open file)."""
    parts: list[FilePart] = []
    for name, value in options.files or ():
        filename, content, content_type = None, value, None
        if isinstance(value, tuple):
            filename = value[0] if len(value) > 0 else None
            content = value[1] if len(value) > 1 else None
            content_type = value[2] if len(value) > 2 else None
        parts.append(FilePart(str(name), filename, _peek(content), content_type))
    return tuple(parts)


def _peek(content: Any) -> bytes | None:
    if isinstance(content, bytes):
        return content
    if hasattr(content, "getvalue"):
        data = content.getvalue()
        return data if isinstance(data, bytes) else None
    try:
        if content.seekable():
            position = content.tell()
            try:
                data = content.read()
            finally:
                content.seek(position)
            return data if isinstance(data, bytes) else None
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _count_options(body: dict[str, Any], options: Any) -> FinalRequestOptions:
    """A request to the free count endpoint with the call's own timeout, retries and headers."""
    headers = options.headers if isinstance(options.headers, dict) else {}
    kept = {k: v for k, v in headers.items() if not k.lower().startswith("x-stainless-")}
    return FinalRequestOptions.construct(
        method="post",
        url="/responses/input_tokens",
        json_data=body,
        headers=kept or {},
        timeout=options.timeout,
        max_retries=options.max_retries,
    )


def _warn(call: Call, warning: str, exc: Exception) -> None:
    _log.emit(
        _log.WARNING,
        {
            "warning": warning,
            "api": call.api,
            "model": call.model,
            "error_type": type(exc).__name__,
        },
    )


def _after(call: Call, result: Any, raw: bool) -> Any:
    """Observe what ``request()`` returned; finish unless a stream or unread body remains."""
    http: Any = getattr(result, "http_response", None) if raw else None
    if is_response(http):
        if hasattr(http, "_content"):  # body already read (decoded): JSON or SSE
            observe_read_body(http, call)
            call.finish()
        else:  # the caller reads it (iter_lines, parse, json...): tap the bytes
            tap(http, call, parse=True)
        return result
    # A stream's or a binary result's HTTP response (an instance attribute); looked up in
    # ``__dict__`` because ``getattr`` on a pydantic result without it raises inside (~2 µs).
    values = getattr(result, "__dict__", None)
    body: Any = values.get("response") if values else None
    if call.stream and is_response(body):
        return result  # our stream class taps and observes it
    call.observe(result)
    if (  # a binary result read whole: a speech stream's events carry its usage
        is_response(body)
        and hasattr(body, "_content")
        and "text/event-stream" in body.headers.get("content-type", "")
    ):
        observe_read_body(body, call)
    call.finish()
    return result


def _observe_json(call: Call, payload: bytes) -> None:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return  # not JSON (a malformed or binary body): nothing to bill from it
    call.observe(parsed)
