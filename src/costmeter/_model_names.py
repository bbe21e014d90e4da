"""
Model-name normalisation: from what a caller or a response says to the keys price tables use.

Rules (research spec §7): prefer the response's model; strip router prefixes (``openai/``,
``azure/``); lower-case; Azure spellings (``gpt-35-turbo`` → ``gpt-3.5-turbo``); fine-tuned names
(``ft:<base>:<org>:<suffix>:<id>`` and Azure's ``<base>.ft-<id>``) are looked up as fine-tuned models
only — never silently priced as their base model.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from costmeter._errors import ConfigurationError

__all__ = ["ModelName", "parse_model"]

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_AZURE_FT = re.compile(r"^(?P<base>.+?)\.ft-[0-9a-z]*$")


@dataclass(frozen=True, slots=True)
class ModelName:
    """
    A model name split into what pricing needs.

    Attributes:
        raw: The name as given.
        key: Normalised lookup key (``ft:<base>`` for fine-tuned models).
        fine_tuned: Whether the name denotes a fine-tuned model.
    """

    raw: str
    key: str
    fine_tuned: bool

    def candidates(self) -> tuple[str, ...]:
        """
        Keys to try in order: the exact key, then the key without a date suffix.

        A date is stripped only after the exact lookup failed, because some snapshots carry their
        own price (``gpt-4o-2024-05-13`` costs more than ``gpt-4o``).
        """
        undated = _DATE_SUFFIX.sub("", self.key)
        return (self.key,) if undated == self.key else (self.key, undated)


def parse_model(model: object) -> ModelName:
    """
    Normalise *model* for price lookup.

    Raises:
        ConfigurationError: *model* is not a non-empty string.
    """
    if not isinstance(model, str):
        raise ConfigurationError(f"model must be a str, got {type(model).__name__}: {model!r}")
    return _parse(model)


@functools.lru_cache(maxsize=1024)  # every call prices its model at least twice
def _parse(model: str) -> ModelName:
    name = model.strip().lower()
    if not name:
        raise ConfigurationError("model must be a non-empty string")
    fine_tuned = name.startswith("ft:")
    if fine_tuned:
        # ft:<base>:<org>:<suffix>:<id> → ft:<base>
        name = "ft:" + name[3:].split(":", 1)[0]
    else:
        name = name.rsplit("/", 1)[-1]
        azure_ft = _AZURE_FT.match(name)
        if azure_ft:
            fine_tuned = True
            name = "ft:" + azure_ft.group("base")
    name = name.replace("gpt-35-", "gpt-3.5-")
    return ModelName(raw=model, key=name, fine_tuned=fine_tuned)
