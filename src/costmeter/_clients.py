"""
``costmeter.OpenAI`` & co.: subclasses of the SDK's clients that meter every billed call.

Same constructor (plus costmeter's keyword options), same methods, same return types, same
exceptions: they *are* ``openai.OpenAI`` / ``openai.AsyncOpenAI`` (and the Azure clients).
Only ``request()`` — the SDK's single choke point — is overridden; ``copy()``/``with_options()``
carry the metering options over to the new client.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import openai

from costmeter import _logging as _log
from costmeter._budget import Budget
from costmeter._flow import (
    process_response_failed,
    request_async,
    request_sync,
    send_request_async,
    send_request_sync,
)
from costmeter._meter import MeterConfig

__all__ = ["AsyncAzureOpenAI", "AsyncOpenAI", "AzureOpenAI", "OpenAI"]


def _config(
    budget: Budget | str | int | float | Decimal | None,
    include_stream_usage: bool,
    exact_input_tokens: bool,
    log_content: bool,
    deployments: Mapping[str, str] | None,
    azure: bool = False,
) -> MeterConfig:
    if budget is not None and not isinstance(budget, Budget):
        budget = Budget(budget, name="client")
    return MeterConfig(
        budget=budget,
        include_stream_usage=include_stream_usage,
        exact_input_tokens=exact_input_tokens,
        deployments=dict(deployments or {}),
        log_content=log_content,
        azure=azure,
    )


_connect_warned = False
_connect_lock = threading.Lock()


def _warn_websocket_once() -> None:
    """
    One ``costmeter.warning`` per process the first time ``responses.connect()`` is used.

    The WebSocket path sends no HTTP request, so ``request()`` never sees it: its responses are
    not metered, not priced and not held against budgets. Saying so once beats silence.
    """
    global _connect_warned  # noqa: PLW0603
    with _connect_lock:
        if _connect_warned:
            return
        _connect_warned = True
    _log.emit(
        _log.WARNING,
        {
            "warning": "websocket_not_metered",
            "api": "responses.connect",
            "detail": "responses sent over responses.connect() are not metered, priced or "
            "held against budgets; use responses.create(stream=True) to meter them",
        },
    )


def _warn_on_connect(resource: Any) -> Any:
    """Make *resource*'s ``connect()`` (this client's own resource object) warn once when used."""
    connect = getattr(resource, "connect", None)
    if connect is None or getattr(connect, "_costmeter_warns", False):
        return resource

    @functools.wraps(connect)
    def warning_connect(*args: Any, **kwargs: Any) -> Any:
        _warn_websocket_once()
        return connect(*args, **kwargs)

    warning_connect._costmeter_warns = True  # type: ignore[attr-defined]
    resource.connect = warning_connect
    return resource


class _Options:
    """Keyword options every metered client accepts on top of the SDK's own."""

    _costmeter: MeterConfig

    def _set_meter(
        self,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        deployments: Mapping[str, str] | None = None,
        azure: bool = False,
    ) -> None:
        self._costmeter = _config(
            budget, include_stream_usage, exact_input_tokens, log_content, deployments, azure
        )

    if not TYPE_CHECKING:  # type checkers keep seeing the SDK's own typed resources

        @functools.cached_property
        def responses(self):
            """The SDK's ``responses``; its WebSocket ``connect()`` warns it is unmetered."""
            return _warn_on_connect(super().responses)

        @functools.cached_property
        def beta(self):
            """The SDK's ``beta``; ``beta.responses.connect()`` warns like ``connect()``."""
            beta = super().beta
            _warn_on_connect(beta.responses)
            return beta

    @property
    def budget(self) -> Budget | None:
        """The client-wide cap given as ``budget=``, shared with ``with_options()`` copies."""
        return self._costmeter.budget

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        new = super().copy(*args, **kwargs)  # type: ignore[misc]
        new._costmeter = self._costmeter
        return new

    with_options = copy


class _Sync(_Options):
    """
    The sync clients' interception points: ``request()`` (once per call), and, while a metered
    request is being sent, ``_send_request()`` (each attempt) and ``_process_response()``.
    """

    def request(
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        send = super().request  # type: ignore[misc]
        return request_sync(self._costmeter, send, cast_to, options, stream, stream_cls)

    def _send_request(self, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        return send_request_sync(super()._send_request, request, stream, kwargs)  # type: ignore[misc]

    def _process_response(self, **kwargs: Any) -> Any:
        try:
            return super()._process_response(**kwargs)  # type: ignore[misc]
        except BaseException:
            process_response_failed(kwargs.get("response"))
            raise


class _Async(_Options):
    """The async clients' interception points (as for the sync clients)."""

    async def request(
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        send = super().request  # type: ignore[misc]
        return await request_async(self._costmeter, send, cast_to, options, stream, stream_cls)

    async def _send_request(self, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        send = super()._send_request  # type: ignore[misc]
        return await send_request_async(send, request, stream, kwargs)

    async def _process_response(self, **kwargs: Any) -> Any:
        try:
            return await super()._process_response(**kwargs)  # type: ignore[misc]
        except BaseException:
            process_response_failed(kwargs.get("response"))
            raise


class OpenAI(_Sync, openai.OpenAI):
    """
    ``openai.OpenAI``, metered.

    Args:
        budget: A client-wide cap (a `Budget` or an amount in USD) applied to every call of this
            client and its ``with_options()`` copies.
        include_stream_usage: For Chat streams, ask for usage and hide the extra usage-only chunk.
        exact_input_tokens: Use the free input-token count endpoint before Responses calls.
        log_content: Opt in to prompts and outputs in events (never logged otherwise).
        *args, **kwargs: Everything ``openai.OpenAI`` accepts.
    """

    def __init__(
        self,
        *args: Any,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_meter(budget, include_stream_usage, exact_input_tokens, log_content)


class AsyncOpenAI(_Async, openai.AsyncOpenAI):
    """``openai.AsyncOpenAI``, metered; options as for `OpenAI`."""

    def __init__(
        self,
        *args: Any,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_meter(budget, include_stream_usage, exact_input_tokens, log_content)


class AzureOpenAI(_Sync, openai.AzureOpenAI):
    """
    ``openai.AzureOpenAI``, metered.

    Args:
        deployments: Deployment name → model (``{"prod-chat": "gpt-4o-2024-08-06"}``). Azure's
            request ``model`` is a deployment name and its responses may name an undated family
            (``gpt-4``); a mapped deployment is always priced as the mapped model.
    """

    def __init__(
        self,
        *args: Any,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        deployments: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_meter(
            budget, include_stream_usage, exact_input_tokens, log_content, deployments, azure=True
        )


class AsyncAzureOpenAI(_Async, openai.AsyncAzureOpenAI):
    """``openai.AsyncAzureOpenAI``, metered; options as for `AzureOpenAI`."""

    def __init__(
        self,
        *args: Any,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        deployments: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_meter(
            budget, include_stream_usage, exact_input_tokens, log_content, deployments, azure=True
        )
