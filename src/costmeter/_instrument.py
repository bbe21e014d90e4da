"""
``costmeter.instrument()``: meter OpenAI clients created by code you do not control.

Frameworks often build ``openai.OpenAI()`` themselves. ``instrument()`` wraps the SDK's
``request()`` on the base client classes (via wrapt, so the method keeps its identity for
``inspect``) and returns a handle that undoes it. It is opt-in: importing costmeter patches
nothing. Calling it twice is harmless (idempotent), and costmeter's own clients are never
metered twice.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import openai
import wrapt

from costmeter._errors import ConfigurationError
from costmeter._flow import (
    process_response_failed,
    request_async,
    request_sync,
    send_request_async,
    send_request_sync,
)
from costmeter._meter import MeterConfig

if TYPE_CHECKING:
    from costmeter._budget import Budget

__all__ = ["Instrumentation", "instrument"]

_lock = threading.Lock()
_active: Instrumentation | None = None


def _send_request_args(hook: Any, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """Call an attempt hook with ``_send_request(request, *, stream, **kwargs)``'s arguments."""
    options = dict(kwargs)
    request = args[0] if args else options.pop("request")
    return hook(wrapped, request, options.pop("stream", False), options)


class Instrumentation:
    """Handle returned by `instrument`; ``uninstrument()`` (or leaving ``with``) undoes it."""

    def __init__(self, config: MeterConfig) -> None:
        self.config = config
        # Azure clients' request ``model`` is a deployment name: priced through ``deployments``.
        self._azure_config = dataclasses.replace(config, azure=True)
        self._originals: list[tuple[type, str, Any]] = []

    def _config_for(self, instance: Any) -> MeterConfig:
        azure = isinstance(instance, (openai.AzureOpenAI, openai.AsyncAzureOpenAI))
        return self._azure_config if azure else self.config

    def _patch(self) -> None:
        config_for = self._config_for

        def sync_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return wrapped(*args, **kwargs)  # a costmeter client meters itself
            config = config_for(instance)

            def bind(
                cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
            ) -> Any:
                return request_sync(config, wrapped, cast_to, options, stream, stream_cls)

            return bind(*args, **kwargs)

        async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return await wrapped(*args, **kwargs)
            config = config_for(instance)

            async def bind(
                cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
            ) -> Any:
                return await request_async(config, wrapped, cast_to, options, stream, stream_cls)

            return await bind(*args, **kwargs)

        def send_sync(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return wrapped(*args, **kwargs)
            return _send_request_args(send_request_sync, wrapped, args, kwargs)

        async def send_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return await wrapped(*args, **kwargs)
            return await _send_request_args(send_request_async, wrapped, args, kwargs)

        def process_sync(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                return wrapped(*args, **kwargs)
            except BaseException:
                if getattr(instance, "_costmeter", None) is None:
                    process_response_failed(kwargs.get("response"))
                raise

        async def process_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                return await wrapped(*args, **kwargs)
            except BaseException:
                if getattr(instance, "_costmeter", None) is None:
                    process_response_failed(kwargs.get("response"))
                raise

        # The same three interception points as costmeter's own clients (see `costmeter._flow`).
        for cls, name, wrapper in (
            (openai.OpenAI, "request", sync_wrapper),
            (openai.OpenAI, "_send_request", send_sync),
            (openai.OpenAI, "_process_response", process_sync),
            (openai.AsyncOpenAI, "request", async_wrapper),
            (openai.AsyncOpenAI, "_send_request", send_async),
            (openai.AsyncOpenAI, "_process_response", process_async),
        ):
            original = cls.__dict__.get(name)
            self._originals.append((cls, name, original))
            target = original if original is not None else getattr(cls, name)
            setattr(cls, name, wrapt.FunctionWrapper(target, wrapper))

    def uninstrument(self) -> None:
        """Restore the SDK's classes exactly as they were."""
        global _active  # noqa: PLW0603
        with _lock:
            for cls, name, original in reversed(self._originals):
                if original is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)
            self._originals.clear()
            if _active is self:
                _active = None

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstrument()


def instrument(
    *,
    budget: Budget | str | int | float | Decimal | None = None,
    include_stream_usage: bool = False,
    exact_input_tokens: bool = False,
    deployments: Mapping[str, str] | None = None,
    log_content: bool = False,
    always_estimate: bool = False,
) -> Instrumentation:
    """
    Meter every ``openai.OpenAI``/``openai.AsyncOpenAI`` client in the process (and their
    subclasses: ``openai.AzureOpenAI``/``AsyncAzureOpenAI``), including ones created before this
    call. Only clients of the ``openai`` package are covered: a framework that sends HTTP itself
    (not through an ``openai`` client) is not seen.

    Takes the same metering options as `costmeter.OpenAI`, applied to every instrumented client.

    Args:
        budget: A cap (a `Budget` or an amount in USD) for every instrumented client's calls,
            on top of the budgets active where each call is made.
        include_stream_usage: For Chat streams, ask for usage and hide the extra usage-only chunk.
        exact_input_tokens: Use the free input-token count endpoint before Responses calls.
        deployments: Azure deployment name → model, for pricing instrumented Azure clients.
        log_content: Opt in to prompts and outputs in events (never logged otherwise).
        always_estimate: Estimate every call before sending, even with no budget active.

    Returns the active handle; a second call with no options, or the same ones, returns the
    same handle.

    Raises:
        ConfigurationError: options are given that differ from those of the active
            instrumentation (silently keeping the old ones would be a surprise);
            ``uninstrument()`` first.
    """
    global _active  # noqa: PLW0603
    from costmeter._clients import _config  # noqa: PLC0415

    asked = _config(
        budget,
        include_stream_usage,
        exact_input_tokens,
        log_content,
        deployments,
        always_estimate=always_estimate,
    )
    with _lock:
        if _active is None:
            handle = Instrumentation(asked)
            handle._patch()
            _active = handle
        elif asked != MeterConfig() and not _same_options(asked, _active.config, budget):
            raise ConfigurationError(
                "costmeter.instrument() is already active with other options "
                f"({_describe(_active.config)}); call uninstrument() on its handle first"
            )
        return _active


def _same_options(asked: MeterConfig, active: MeterConfig, budget: object) -> bool:
    """Equal options; a budget is the same only as the very same `Budget` object."""
    same_budget = budget is None or budget is active.budget
    return same_budget and dataclasses.replace(asked, budget=active.budget) == active


def _describe(config: MeterConfig) -> str:
    return ", ".join(
        f"{field.name}={getattr(config, field.name)!r}"
        for field in dataclasses.fields(config)
        if field.name != "azure"
    )
