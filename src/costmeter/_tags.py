"""
``costmeter.tags(**values)``: labels that appear under ``tags`` in every event inside the block.

contextvars-based, so values follow asyncio tasks and ``contextvars.copy_context().run(...)``, and
nest: inner values extend (and override) outer ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import TracebackType

from costmeter._errors import ConfigurationError

__all__ = ["current_tags", "tags"]

_EMPTY: Mapping[str, str] = {}
_tags: ContextVar[Mapping[str, str]] = ContextVar("costmeter_tags", default=_EMPTY)


def current_tags() -> Mapping[str, str]:
    """The tags active in the current context (read-only)."""
    return _tags.get()


class tags:
    """
    Context manager (``with`` and ``async with``) adding *values* to every event inside it.

    Values are converted with ``str()`` so that events stay flat and JSON-safe.
    """

    __slots__ = ("_token", "_values")

    def __init__(self, **values: object) -> None:
        for key, value in values.items():
            if value is None:
                raise ConfigurationError(f"tag {key!r} has no value (None)")
        self._values = {key: str(value) for key, value in values.items()}
        self._token: Token[Mapping[str, str]] | None = None

    def __enter__(self) -> tags:
        self._token = _tags.set({**_tags.get(), **self._values})
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _tags.reset(self._token)
            self._token = None

    async def __aenter__(self) -> tags:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
