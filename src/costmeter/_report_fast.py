"""
The fast decoder of `costmeter._report`: msgspec's typed JSON decoding (optional: the ``fast``
extra). It reads only the keys a report needs, skipping the others without building them, and
checks their types on the way (a line it rejects is read again by the standard-library path, which
decides what the line is). The struct's attributes are those of `costmeter._report.Fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from costmeter._report import _OTEL_MARK, FIELD_KEYS, INT_FIELDS, OTEL_TAG_PREFIX, Fields

__all__ = ["decoder"]

_TagValue = str | int | bool | None  # a float tag would print differently as float and Decimal


def _type_of(name: str) -> Any:
    if name in INT_FIELDS:
        return int | None
    if name == "cost_usd":
        return Decimal | None  # JSON numbers (and numeric strings) as exact Decimals
    return str | None


def decoder(tag_key: str | None) -> tuple[Callable[[bytes], Any], Callable[[Any], Fields], Any]:
    """
    ``(decode, from_otel, UNSET)``: ``decode(line)`` gives a struct with the attributes of
    `Fields` (raising ``msgspec.DecodeError``, ``ValidationError`` included, for anything the
    standard-library path must look at); when its ``otel_input_tokens`` is not ``UNSET`` the line
    was written with ``otel_genai_keys`` and ``from_otel(struct)`` gives its `Fields`.
    """
    unset = msgspec.UNSET
    fields: list[tuple[str, Any, Any]] = [
        ("event", str | None, None),
        ("timestamp", str | int | float | None, None),
        ("tags", dict[str, _TagValue] | None, None),
    ]
    for name, otel_key in FIELD_KEYS:
        fields.append((name, _type_of(name), None))
        marked = otel_key == _OTEL_MARK  # its presence, even as null, marks the otel style
        kind = _type_of(name) | msgspec.UnsetType if marked else _type_of(name)
        fields.append(
            ("otel_" + name, kind, msgspec.field(name=otel_key, default=unset if marked else None))
        )
    if tag_key is not None:
        tag_field = msgspec.field(name=OTEL_TAG_PREFIX + tag_key, default=unset)
        fields.append(("otel_tag", _TagValue | msgspec.UnsetType, tag_field))
    decode = msgspec.json.Decoder(msgspec.defstruct("Line", fields)).decode
    names = [name for name, _ in FIELD_KEYS]

    def from_otel(row: Any) -> Fields:
        plain = Fields()
        plain.event = row.event
        plain.timestamp = row.timestamp
        for name in names:
            setattr(plain, name, getattr(row, "otel_" + name))
        tag = getattr(row, "otel_tag", unset)
        plain.tags = None if tag is unset or tag_key is None else {tag_key: tag}
        return plain

    return decode, from_otel, unset
