"""
Metering the WebSocket APIs: ``realtime.connect()`` and ``responses.connect()``.

No HTTP request carries their responses, so ``request()`` never sees them. Instead the metered
clients' ``connect()`` hands out the SDK's own connection manager with its ``_connect_ws``
replaced: every WebSocket the SDK opens (the first, and each reconnect) is wrapped in a thin
proxy (`_Socket`/`_AsyncSocket`) through which *every* frame passes — the SDK sends each client
event, queued or not, with ``connection.send(data)`` and reads each server event with
``connection.recv()``.

Per connection a `costmeter._realtime_conversation.Conversation` turns frames into calls.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from costmeter._errors import CostmeterError
from costmeter._meter import MeterConfig, report_internal_error, strict
from costmeter._realtime_conversation import Conversation

__all__ = ["meter_connect"]


def _contained(action: Any, api: str, *args: Any, refusals: bool = False) -> Any:
    """
    Run costmeter's part; a failure in it is reported, never breaks the connection — except,
    with *refusals*, a budget's refusal (a `CostmeterError`): the frame is then not sent.
    """
    try:
        return action(*args)
    except Exception as exc:
        if strict() or (refusals and isinstance(exc, CostmeterError)):
            raise
        report_internal_error(exc, "websocket", api, None)
        return None


class _Socket:
    """A ``websockets`` sync connection whose frames the conversation sees (all else passes)."""

    def __init__(self, inner: Any, conversation: Conversation) -> None:
        self._inner = inner
        self._conversation = conversation

    def send(self, message: Any, *args: Any, **kwargs: Any) -> None:
        conv = self._conversation
        call = _contained(conv.sending, conv.api, message, refusals=True)
        try:
            self._inner.send(message, *args, **kwargs)
        except BaseException as exc:
            _contained(conv.send_failed, conv.api, call, exc)
            raise
        _contained(conv.sent, conv.api, call)

    def recv(self, *args: Any, **kwargs: Any) -> Any:
        conv = self._conversation
        try:
            message = self._inner.recv(*args, **kwargs)
        except BaseException as exc:
            _contained(conv.recv_failed, conv.api, exc)
            raise
        _contained(conv.received, conv.api, message)
        return message

    def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._inner.close(*args, **kwargs)
        finally:
            _contained(self._conversation.closed, self._conversation.api, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AsyncSocket(_Socket):
    """The asyncio counterpart of `_Socket`."""

    async def send(self, message: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        conv = self._conversation
        call = _contained(conv.sending, conv.api, message, refusals=True)
        try:
            await self._inner.send(message, *args, **kwargs)
        except BaseException as exc:
            _contained(conv.send_failed, conv.api, call, exc)
            raise
        _contained(conv.sent, conv.api, call)

    async def recv(self, *args: Any, **kwargs: Any) -> Any:
        conv = self._conversation
        try:
            message = await self._inner.recv(*args, **kwargs)
        except BaseException as exc:
            _contained(conv.recv_failed, conv.api, exc)
            raise
        _contained(conv.received, conv.api, message)
        return message

    async def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._inner.close(*args, **kwargs)
        finally:
            _contained(self._conversation.closed, self._conversation.api, None)


def _metered_manager(manager: Any, conversation: Conversation) -> Any:
    """Route every socket *manager* opens (first and reconnects) through the conversation."""
    open_ws = manager._connect_ws
    if inspect.iscoroutinefunction(open_ws):

        async def connect_async(*args: Any, **kwargs: Any) -> Any:
            conversation.reset()
            return _AsyncSocket(await open_ws(*args, **kwargs), conversation)

        manager._connect_ws = connect_async
    else:

        def connect_sync(*args: Any, **kwargs: Any) -> Any:
            conversation.reset()
            return _Socket(open_ws(*args, **kwargs), conversation)

        manager._connect_ws = connect_sync
    return manager


_ENTRY_CLASSES: dict[type, type] = {}


def _entry_class(cls: type) -> type:
    """
    *cls* (a connection manager with no ``_connect_ws``: ``beta.realtime``) whose entry wraps
    the entered connection's socket; one subclass per manager class, so ``isinstance`` holds.
    """
    found = _ENTRY_CLASSES.get(cls)
    if found is not None:
        return found
    if inspect.iscoroutinefunction(getattr(cls, "__aenter__", None)):

        class MeteredAsync(cls):  # type: ignore[misc]
            async def __aenter__(self) -> Any:
                connection = await super().__aenter__()
                connection._connection = _AsyncSocket(
                    connection._connection, self._costmeter_conversation
                )
                return connection

            enter = __aenter__

        found = MeteredAsync
    else:

        class Metered(cls):  # type: ignore[misc]
            def __enter__(self) -> Any:
                connection = super().__enter__()
                connection._connection = _Socket(
                    connection._connection, self._costmeter_conversation
                )
                return connection

            enter = __enter__

        found = Metered
    found.__name__ = found.__qualname__ = cls.__name__
    _ENTRY_CLASSES[cls] = found
    return found


def meter_connect(resource: Any, api: str, config: MeterConfig) -> Any:
    """
    Meter *resource*'s ``connect()`` (this client's own resource object): each connection it
    returns bills every response it produces (see the module docstring).
    """
    connect = getattr(resource, "connect", None)
    if connect is None or getattr(connect, "_costmeter_meters", False):
        return resource

    @functools.wraps(connect)
    def metered_connect(*args: Any, **kwargs: Any) -> Any:
        manager = connect(*args, **kwargs)
        model = kwargs.get("model")
        conversation = Conversation(api, model if isinstance(model, str) else None, config)
        if hasattr(manager, "_connect_ws"):
            return _metered_manager(manager, conversation)
        manager._costmeter_conversation = conversation  # the older beta.realtime manager
        manager.__class__ = _entry_class(type(manager))
        return manager

    metered_connect._costmeter_meters = True  # type: ignore[attr-defined]
    resource.connect = metered_connect
    return resource
