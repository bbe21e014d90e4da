"""
``costmeter.OpenAI`` & co.: subclasses of the SDK's clients that meter every billed call.

Same constructor (plus costmeter's keyword options), same methods, same return types, same
exceptions: they *are* ``openai.OpenAI`` / ``openai.AsyncOpenAI`` (and the Azure clients).
Only ``request()`` — the SDK's single HTTP choke point — is overridden, plus the WebSocket
``connect()`` of ``responses``/``realtime`` (`costmeter._realtime`); ``copy()``/``with_options()``
carry the metering options over to the new client.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import openai

from costmeter._budget import Budget
from costmeter._flow import (
    process_response_failed,
    request_async,
    request_sync,
    send_request_async,
    send_request_sync,
)
from costmeter._meter import MeterConfig
from costmeter._realtime import meter_connect

__all__ = ["AsyncAzureOpenAI", "AsyncOpenAI", "AzureOpenAI", "OpenAI"]


def _config(
    budget: Budget | str | int | float | Decimal | None,
    include_stream_usage: bool,
    exact_input_tokens: bool,
    log_content: bool,
    deployments: Mapping[str, str] | None,
    azure: bool = False,
    always_estimate: bool = False,
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
        always_estimate=always_estimate,
    )


_REGIONAL_HOST = re.compile(r"([a-z]{2})\.api\.openai\.com")


def region_of(client: Any) -> str | None:
    """
    The data-residency region a client's requests are processed (and billed) in: its host
    ``eu.api.openai.com`` (``data_residency="eu"`` resolves to it) → ``"eu"``; ``None`` for
    the global host or any other (a proxy, Azure).
    """
    base_url = getattr(client, "base_url", None)
    found = _REGIONAL_HOST.fullmatch(str(getattr(base_url, "host", "") or ""))
    return found.group(1) if found else None


class _Options:
    """Keyword options every metered client accepts on top of the SDK's own (one place)."""

    _costmeter: MeterConfig

    def __init__(
        self,
        *args: Any,
        budget: Budget | str | int | float | Decimal | None = None,
        include_stream_usage: bool = False,
        exact_input_tokens: bool = False,
        log_content: bool = False,
        deployments: Mapping[str, str] | None = None,
        always_estimate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        azure = isinstance(self, (openai.AzureOpenAI, openai.AsyncAzureOpenAI))
        config = _config(
            budget,
            include_stream_usage,
            exact_input_tokens,
            log_content,
            deployments,
            azure,
            always_estimate,
        )
        self._costmeter = replace(config, region=region_of(self))
        counts = config.budget is not None and config.budget.persistent  # (see Budget.__enter__)
        if always_estimate or exact_input_tokens or counts:
            from costmeter._tokenizer import preload  # noqa: PLC0415

            preload()  # every call will count its input: load the vocabulary in the background

    if not TYPE_CHECKING:  # type checkers keep seeing the SDK's own typed resources

        @functools.cached_property
        def responses(self):
            """The SDK's ``responses``; its WebSocket ``connect()`` is metered too."""
            return meter_connect(super().responses, "responses.websocket", self._costmeter)

        @functools.cached_property
        def realtime(self):
            """The SDK's ``realtime``; its ``connect()`` is metered (`costmeter._realtime`)."""
            return meter_connect(super().realtime, "realtime", self._costmeter)

        @functools.cached_property
        def beta(self):
            """The SDK's ``beta``; its ``responses``/``realtime`` ``connect()`` are metered."""
            beta = super().beta
            meter_connect(getattr(beta, "responses", None), "responses.websocket", self._costmeter)
            meter_connect(getattr(beta, "realtime", None), "realtime", self._costmeter)
            return beta

    @property
    def budget(self) -> Budget | None:
        """The client-wide cap given as ``budget=``, shared with ``with_options()`` copies."""
        return self._costmeter.budget

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        new = super().copy(*args, **kwargs)  # type: ignore[misc]
        new._costmeter = replace(self._costmeter, region=region_of(new))  # base_url may change
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
        deployments: Model aliases to price by (``{"my-alias": "gpt-4o-2024-08-06"}``); for
            Azure clients, deployment name → model.
        always_estimate: Count every request's input and worst case before sending, even with
            no budget active (by default only a budget's calls are counted: the response
            reports the real usage, so the count would only fill the event's ``estimated_*``
            fields, at the cost of tokenizing every prompt).
        *args, **kwargs: Everything ``openai.OpenAI`` accepts.
    """


class AsyncOpenAI(_Async, openai.AsyncOpenAI):
    """``openai.AsyncOpenAI``, metered; options as for `OpenAI`."""


class AzureOpenAI(_Sync, openai.AzureOpenAI):
    """
    ``openai.AzureOpenAI``, metered; options as for `OpenAI`.

    *deployments* maps deployment names to models (``{"prod-chat": "gpt-4o-2024-08-06"}``):
    Azure's request ``model`` is a deployment name and its responses may name an undated family
    (``gpt-4``); a mapped deployment is always priced as the mapped model.
    """


class AsyncAzureOpenAI(_Async, openai.AsyncAzureOpenAI):
    """``openai.AsyncAzureOpenAI``, metered; options as for `AzureOpenAI`."""
