"""
The fast decoder of `costmeter._report_decode`: msgspec's typed JSON decoding (optional: the ``fast``
extra). It reads only the keys a report needs, skipping the others without building them, and
checks their types on the way (a line it rejects is read again by the standard-library path, which
decides what the line is). The struct's attributes are those of `costmeter._report_decode.Fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from costmeter._report_decode import (
    FIELD_KEYS,
    INT_FIELDS,
    MONEY_FIELDS,
    OPTIONAL_FIELDS,
    OTEL_MARK,
    OTEL_TAG_PREFIX,
    Fields,
)

__all__ = ["decoder"]

_TagValue = str | int | bool | None  # a float tag would print differently as float and Decimal


def _type_of(name: str) -> Any:
    if name in INT_FIELDS:
        return int | None
    if name in MONEY_FIELDS:
        return Decimal | None  # JSON numbers (and numeric strings) as exact Decimals
    return str | None


def decoder(
    tag_key: str | None, wanted: frozenset[str] | None = None
) -> tuple[Callable[[bytes], Any], Callable[[Any], Fields], Any]:
    """
    ``(decode, from_otel, UNSET)``: ``decode(line)`` gives a struct with the attributes of
    `Fields` (raising ``msgspec.DecodeError``, ``ValidationError`` included, for anything the
    standard-library path must look at); when its ``otel_input_tokens`` is not ``UNSET`` the line
    was written with ``otel_genai_keys`` and ``from_otel(struct)`` gives its `Fields`.

    Only the *wanted* attributes among `OPTIONAL_FIELDS` (default: all) are decoded; the others
    stay ``None``, their keys skipped like any unknown key (building a ``tags`` dict or a
    timestamp string per line costs as much as the rest of a line).
    """
    unset = msgspec.UNSET
    skip = OPTIONAL_FIELDS - (OPTIONAL_FIELDS if wanted is None else wanted)

    def key(name: str) -> str:
        return "(unread) " + name if name in skip else name  # no line has it: never decoded

    fields: list[tuple[str, Any, Any]] = [
        ("event", str | None, None),
        ("timestamp", str | int | float | None, msgspec.field(name=key("timestamp"), default=None)),
        ("tags", dict[str, _TagValue] | None, msgspec.field(name=key("tags"), default=None)),
        ("refused", bool | None, msgspec.field(name=key("refused"), default=None)),
    ]
    for name, otel_key in FIELD_KEYS:
        kind = _type_of(name)
        fields.append((name, kind, msgspec.field(name=key(name), default=None)))
        if otel_key == OTEL_MARK:  # its presence, even as null, marks the otel style
            fields.append(
                (
                    "otel_" + name,
                    kind | msgspec.UnsetType,
                    msgspec.field(name=otel_key, default=unset),
                )
            )
        else:
            otel_name = "(unread) " + otel_key if name in skip else otel_key
            fields.append(("otel_" + name, kind, msgspec.field(name=otel_name, default=None)))
    if tag_key is not None:
        tag_field = msgspec.field(name=OTEL_TAG_PREFIX + tag_key, default=unset)
        fields.append(("otel_tag", _TagValue | msgspec.UnsetType, tag_field))
    decode = msgspec.json.Decoder(msgspec.defstruct("Line", fields, gc=False)).decode
    names = [name for name, _ in FIELD_KEYS]

    def from_otel(row: Any) -> Fields:
        plain = Fields()
        plain.event = row.event
        plain.timestamp = row.timestamp
        plain.refused = row.refused
        for name in names:
            setattr(plain, name, getattr(row, "otel_" + name))
        tag = getattr(row, "otel_tag", unset)
        plain.tags = None if tag is unset or tag_key is None else {tag_key: tag}
        return plain

    return decode, from_otel, unset
