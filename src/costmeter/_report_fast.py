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
_OTEL_MARK_FIELD = "input_tokens"  # OTEL_MARK is its otel key


def _type_of(name: str) -> Any:
    if name in INT_FIELDS:
        return int | None
    if name in MONEY_FIELDS:
        return Decimal | None  # JSON numbers (and numeric strings) as exact Decimals
    return str | None


def decoder(
    tag_key: str | None, wanted: frozenset[str] | None = None
) -> tuple[Callable[[bytes], Any], Callable[[bytes], Fields], Any]:
    """
    ``(decode, from_otel, UNSET)``: ``decode(line)`` gives a struct with the attributes of
    `Fields` (raising ``msgspec.DecodeError``, ``ValidationError`` included, for anything the
    standard-library path must look at); when its ``otel_input_tokens`` is not ``UNSET`` the line
    was written with ``otel_genai_keys`` and ``from_otel(line)`` gives its `Fields` (raising the
    same errors).

    The struct holds only the keys a report reads in the default style, in the order costmeter
    writes them, plus the otel marker: msgspec matches each key of a line against the struct's
    fields (in order first, then all of them for a key it skips), so each field more costs every
    line (a struct with both styles' keys decoded a line ~40 % slower). Only the *wanted*
    attributes among `OPTIONAL_FIELDS` (default: all) are fields; the others are ``None`` class
    attributes, their keys skipped like any unknown key (building a ``tags`` dict or a timestamp
    string per line costs as much as the rest of a line).
    """
    unset = msgspec.UNSET
    skip = OPTIONAL_FIELDS - (OPTIONAL_FIELDS if wanted is None else wanted)
    plain: list[tuple[str, Any, Any]] = [
        (name, kind, None)
        for name, kind in (
            ("timestamp", str | int | float | None),
            ("event", str | None),
            *((name, _type_of(name)) for name, _ in FIELD_KEYS),
            ("tags", dict[str, _TagValue] | None),
            ("refused", bool | None),
        )
        if name not in skip
    ]
    otel: list[tuple[str, Any, Any]] = [
        (name, kind, default) for name, kind, default in plain if name in ("timestamp", "event")
    ]
    otel += [
        (name, _type_of(name), msgspec.field(name=otel_key, default=None))
        for name, otel_key in FIELD_KEYS
        if name not in skip
    ]
    if "refused" not in skip:
        otel.append(("refused", bool | None, None))
    # its presence, even as null, marks the otel style
    mark_kind = _type_of(_OTEL_MARK_FIELD) | msgspec.UnsetType
    plain.append(("otel_input_tokens", mark_kind, msgspec.field(name=OTEL_MARK, default=unset)))
    if tag_key is not None:
        tag_field = msgspec.field(name=OTEL_TAG_PREFIX + tag_key, default=unset)
        otel.append(("otel_tag", _TagValue | msgspec.UnsetType, tag_field))
    absent = dict.fromkeys(Fields.__slots__)
    decode = msgspec.json.Decoder(_struct("Line", plain, absent)).decode
    otel_decode = msgspec.json.Decoder(_struct("OtelLine", otel, absent)).decode

    def from_otel(line: bytes) -> Fields:
        row = otel_decode(line)
        fields = Fields()
        for name in Fields.__slots__:
            setattr(fields, name, getattr(row, name))
        tag = getattr(row, "otel_tag", unset)
        fields.tags = None if tag is unset or tag_key is None else {tag_key: tag}
        return fields

    return decode, from_otel, unset


def _struct(name: str, fields: list[tuple[str, Any, Any]], absent: dict[str, None]) -> Any:
    """A struct of *fields*; the other `Fields` attributes read ``None`` (class attributes)."""
    names = {field[0] for field in fields}
    namespace = {key: value for key, value in absent.items() if key not in names}
    return msgspec.defstruct(name, fields, namespace=namespace, gc=False)
