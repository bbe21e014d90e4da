"""
``costmeter.instrument()``: meter OpenAI clients created by code you do not control.

Frameworks often build ``openai.OpenAI()`` themselves. ``instrument()`` wraps the SDK's
``request()`` on the base client classes (via wrapt, so the method keeps its identity for
``inspect``) and returns a handle that undoes it. It is opt-in: importing costmeter patches
nothing. Calling it twice is harmless (idempotent), and costmeter's own clients are never
metered twice.
"""

from __future__ import annotations

import threading
from typing import Any

import openai
import wrapt

from costmeter._errors import ConfigurationError
from costmeter._flow import request_async, request_sync
from costmeter._meter import MeterConfig

__all__ = ["Instrumentation", "instrument"]

_lock = threading.Lock()
_active: Instrumentation | None = None


class Instrumentation:
    """Handle returned by `instrument`; ``uninstrument()`` (or leaving ``with``) undoes it."""

    def __init__(self, config: MeterConfig) -> None:
        self.config = config
        self._originals: list[tuple[type, Any]] = []

    def _patch(self) -> None:
        config = self.config

        def sync_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return wrapped(*args, **kwargs)  # a costmeter client meters itself

            def bind(
                cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
            ) -> Any:
                return request_sync(config, wrapped, cast_to, options, stream, stream_cls)

            return bind(*args, **kwargs)

        async def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if getattr(instance, "_costmeter", None) is not None:
                return await wrapped(*args, **kwargs)

            async def bind(
                cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
            ) -> Any:
                return await request_async(config, wrapped, cast_to, options, stream, stream_cls)

            return await bind(*args, **kwargs)

        for cls, wrapper in ((openai.OpenAI, sync_wrapper), (openai.AsyncOpenAI, async_wrapper)):
            original = cls.__dict__.get("request")
            self._originals.append((cls, original))
            target = original if original is not None else cls.request
            cls.request = wrapt.FunctionWrapper(target, wrapper)  # type: ignore[method-assign]

    def uninstrument(self) -> None:
        """Restore the SDK's classes exactly as they were."""
        global _active  # noqa: PLW0603
        with _lock:
            for cls, original in reversed(self._originals):
                if original is None:
                    del cls.request
                else:
                    cls.request = original
            self._originals.clear()
            if _active is self:
                _active = None

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstrument()


def instrument(*, budget: Any = None) -> Instrumentation:
    """
    Meter every ``openai.OpenAI``/``openai.AsyncOpenAI`` client in the process (and their
    subclasses, such as the Azure clients), including ones created before this call.

    Args:
        budget: A cap (a `Budget` or an amount in USD) for every instrumented client's calls,
            on top of the budgets active where each call is made.

    Returns the active handle; a second call returns the same handle.

    Raises:
        ConfigurationError: a *budget* is given while an instrumentation with another budget is
            active (silently keeping the old cap would be a surprise); ``uninstrument()`` first.
    """
    global _active  # noqa: PLW0603
    with _lock:
        if _active is None:
            from costmeter._clients import _config  # noqa: PLC0415

            handle = Instrumentation(_config(budget, False, False, False, None))
            handle._patch()
            _active = handle
        elif budget is not None and budget is not _active.config.budget:
            raise ConfigurationError(
                "costmeter.instrument() is already active with another budget; "
                "call uninstrument() on its handle first"
            )
        return _active
