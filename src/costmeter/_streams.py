"""
Watching responses whose body the caller reads later: SDK streams and raw bodies.

Streams are observed twice over, by design: the SDK's typed events (no re-parsing: cheap)
through a subclass of the SDK's own stream class, and the HTTP body's close, through a tap on the
response's byte stream, which is the one thing every exit path (full read, ``break`` +
``close()``, the stream manager's ``with`` exit, raw ``iter_lines()`` readers) has in common. A
body that is never read nor closed finishes its call when the response is garbage-collected.

Raw readers get the bytes *decoded* (gzip, deflate, brotli, zstd) by a decoder of the response's
own HTTP library before parsing, and both ``httpx2`` and a 0.x ``httpx`` client are supported:
the tap subclasses the byte-stream class of whichever library built the response.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from costmeter._meter import Call, current_call, report_internal_error, strict

__all__ = ["is_response", "metered_stream_cls", "observe_read_body", "tap"]

_HTTP_LIBRARIES = ("httpx2", "httpx")


def _library_of(obj: Any) -> Any:
    """The HTTP library module (``httpx2`` or ``httpx``) that defined *obj*'s class."""
    root = type(obj).__module__.partition(".")[0]
    return sys.modules.get(root) if root in _HTTP_LIBRARIES else None  # defined it: imported


def is_response(obj: Any) -> bool:
    """Whether *obj* is an ``httpx2.Response`` or an ``httpx.Response``."""
    library = _library_of(obj)
    return library is not None and isinstance(obj, library.Response)


def _watch(stream: Any) -> None:
    """Find the stream's call in the context the SDK builds it in, and tap its body."""
    stream._costmeter_call = call = current_call()
    if call is not None:
        tap(stream.response, call, parse=False)


@functools.cache
def metered_stream_cls(base: Any) -> Any:
    """
    A subclass of the SDK's own stream class (``Stream[...]`` or ``AsyncStream[...]``) that
    observes each typed event and finishes its call when iteration ends or fails. One subclass
    per stream type; each instance finds its call in the context it is created in.

    The returned object *is* an SDK stream (``isinstance`` holds; ``with``, ``close()``,
    ``.response`` unchanged).
    """
    origin = getattr(base, "__origin__", base)
    if getattr(origin, "__aiter__", None) is not None and hasattr(origin, "__anext__"):

        class _AsyncMetered(base):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                _watch(self)

            async def __stream__(self) -> AsyncIterator[Any]:
                call: Call | None = self._costmeter_call
                inner = super().__stream__()
                if call is None:
                    async for item in inner:
                        yield item
                    return
                on_event, hide = call.stream_observer(), call.hide_usage_chunk
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
                    call.in_sdk = False
                    try:
                        on_event(item)
                    except Exception as exc:
                        call.observe_failed(exc)
                    if hide and _usage_only(item):
                        continue
                    yield item

        return _AsyncMetered

    class _Metered(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _watch(self)

        def __stream__(self) -> Iterator[Any]:
            call: Call | None = self._costmeter_call
            inner = super().__stream__()
            if call is None:
                yield from inner
                return
            # Per event: one flag set twice and one call; the callables are looked up per stream.
            on_event, advance, hide = call.stream_observer(), inner.__next__, call.hide_usage_chunk
            while True:
                call.in_sdk = True
                try:
                    item = advance()
                except StopIteration:
                    call.stream_ended()
                    return
                except BaseException as exc:
                    call.stream_ended(exc)
                    raise
                call.in_sdk = False
                try:
                    on_event(item)
                except Exception as exc:
                    call.observe_failed(exc)
                if hide and _usage_only(item):
                    continue
                yield item

    return _Metered


def _usage_only(item: Any) -> bool:
    """The extra Chat chunk costmeter asked for (``include_stream_usage``): only usage, no
    choices; observed, and hidden from a caller who did not ask for it."""
    return getattr(item, "usage", None) is not None and not getattr(item, "choices", True)


class _Reader:
    """What a tap does with the bytes of a body the caller reads raw: decode, parse, observe."""

    __slots__ = ("body", "call", "decoder", "sse")

    def __init__(self, call: Call, library: Any, headers: Any, *, decoded: bool = False) -> None:
        from openai._streaming import SSEDecoder  # noqa: PLC0415

        self.call = call
        encoding = "" if decoded else headers.get("content-encoding", "")
        self.decoder = _content_decoder(library, encoding)
        self.sse: Any = None
        self.body: list[bytes] | None = None
        if "text/event-stream" in headers.get("content-type", ""):
            self.sse = (SSEDecoder(), bytearray())
        else:
            self.body = []

    def feed(self, chunk: bytes) -> None:
        self._take(chunk if self.decoder is None else _joined(self.decoder.decode(chunk)))

    def _take(self, data: bytes) -> None:
        if self.body is not None:
            self.body.append(data)
            return
        decoder, buffer = self.sse
        buffer.extend(data)
        *lines, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        for line in lines:
            event = decoder.decode(line.rstrip(b"\r").decode("utf-8", "replace"))
            if event is not None:
                self._observe(event.data.encode())

    def close(self) -> None:
        if self.decoder is not None:
            self._take(_joined(self.decoder.flush()))
        if self.body is not None:
            self._observe(b"".join(self.body))
        elif self.sse is not None:
            self._take(b"\n\n")  # a last event not followed by its blank line

    def _observe(self, payload: bytes) -> None:
        if not payload or payload == b"[DONE]":
            return
        try:
            parsed = json.loads(payload)
        except ValueError:
            return  # not JSON (a malformed or binary body): nothing to bill from it
        self.call.observe(parsed)


def _joined(decoded: Any) -> bytes:
    """httpx 0.x decoders return bytes; httpx2's yield them."""
    return decoded if isinstance(decoded, bytes) else b"".join(decoded)


def _content_decoder(library: Any, encoding: str) -> Any:
    """A fresh decoder for the body's ``content-encoding``, from the response's own library."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if not codings or codings == ["identity"]:
        return None
    decoders = importlib.import_module(library.__name__ + "._decoders")
    if len(codings) == 1 and codings[0] in decoders.SUPPORTED_DECODERS:
        return decoders.SUPPORTED_DECODERS[codings[0]]()
    return decoders.MultiDecoder(
        [decoders.SUPPORTED_DECODERS[c]() for c in codings if c in decoders.SUPPORTED_DECODERS]
    )


@functools.cache
def _tap_classes(library: Any) -> tuple[type, type]:
    """Byte-stream taps subclassing *library*'s own stream classes (its isinstance checks)."""

    class SyncTap(library.SyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, call: Call, reader: _Reader | None) -> None:
            self.inner = inner
            self.call = call
            self.reader = reader

        def __iter__(self) -> Iterator[bytes]:
            if self.reader is None:  # an SDK stream: its typed events are observed, not bytes,
                return iter(self.inner)  # and its body is only read inside the SDK (`in_sdk`)
            return self._read(self.reader)

        def _read(self, reader: _Reader) -> Iterator[bytes]:
            try:
                for chunk in self.inner:
                    reader.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                self.call.body_failed(exc)
                raise

        def close(self) -> None:
            try:
                self.inner.close()
            finally:
                _closed(self.call, self.reader)

    class AsyncTap(library.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, call: Call, reader: _Reader | None) -> None:
            self.inner = inner
            self.call = call
            self.reader = reader

        def __aiter__(self) -> AsyncIterator[bytes]:
            if self.reader is None:  # as for `SyncTap.__iter__`
                return self.inner.__aiter__()  # type: ignore[no-any-return]
            return self._read(self.reader)

        async def _read(self, reader: _Reader) -> AsyncIterator[bytes]:
            try:
                async for chunk in self.inner:
                    reader.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                self.call.body_failed(exc)
                raise

        async def aclose(self) -> None:
            try:
                await self.inner.aclose()
            finally:
                _closed(self.call, self.reader)

    return SyncTap, AsyncTap


def _closed(call: Call, reader: _Reader | None) -> None:
    try:
        if reader is not None:
            reader.close()
    finally:
        call.body_closed()


def observe_read_body(response: Any, call: Call) -> None:
    """Observe a body the SDK already read (decoded): JSON, or SSE events (speech streams)."""
    reader = _Reader(call, _library_of(response), response.headers, decoded=True)
    reader.feed(response.content)
    reader.close()


def tap(response: Any, call: Call, *, parse: bool) -> None:
    """
    Put a tap on *response*'s body stream (*parse*: also parse what the caller reads raw); a
    never-read, never-closed body still finishes the call when the response is collected.
    """
    try:
        library = _library_of(response)
        if library is None:
            return
        reader = _Reader(call, library, response.headers) if parse else None
        sync_tap, async_tap = _tap_classes(library)
        inner = response.stream
        if isinstance(inner, library.AsyncByteStream):
            response.stream = async_tap(inner, call, reader)
        elif isinstance(inner, library.SyncByteStream):
            response.stream = sync_tap(inner, call, reader)
        weakref.finalize(response, call.finish, None, abandoned=True)
    except Exception as exc:
        if strict():
            raise
        report_internal_error(exc, "tap", call.api, call.model)
