"""
Input-image tokens from what a request carries: OpenAI's tile/patch rules, and the size of a
``data:`` URL image read from its header with the standard library.

Only the pixel size matters for billing, and for PNG, GIF and WEBP it sits in the first bytes
of the file, so a 2 MB image is sized from its first few kilobytes. A JPEG may put its frame
header after a large EXIF block; only then is the whole payload decoded, and that (rare, slow)
result is memoized under a fixed-size digest of the URL, never the URL itself: a cache keyed on
whole data URLs kept every image alive (300 calls with 2 MB images held +681 MB).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
import threading
from collections import OrderedDict

__all__ = ["image_size", "image_tokens"]

# Patch models: ceil(w/32)·ceil(h/32) patches (at most 1536) times a multiplier; detail ignored.
_PATCH_MULTIPLIERS = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "gpt-5-mini": 1.62}
_PATCH_MULTIPLIERS |= {"gpt-5-nano": 2.46, "o4-mini": 1.72}
# Tile models: base + per-tile tokens per 512-px tile (base only for detail "low").
_TILE_TOKENS = {"gpt-4o-mini": (2833, 5667), "computer-use": (65, 129), "gpt-5": (70, 140)}
_TILE_TOKENS |= {"o1": (75, 150), "o3": (75, 150)}  # everything else: gpt-4o's 85 + 170/tile
_HEAD_CHARS = 4096  # base64 characters decoded first: 3 KB of file, past any PNG/GIF/WEBP header
_SLOW_MEMO_ENTRIES = 256  # 16-byte keys and an (int, int) value each: a few tens of KB at most


def image_tokens(name: str, width: int, height: int, *, detail: str) -> int:
    """OpenAI's image rule for model *name* (short, lower-case): 32-px patches or 512-px tiles."""
    for prefix, multiplier in _PATCH_MULTIPLIERS.items():
        if name.startswith(prefix):
            patches = math.ceil(width / 32) * math.ceil(height / 32)
            if patches > 1536:  # shrink to fit 1536 patches, whole patches along one side
                scale = math.sqrt(32 * 32 * 1536 / (width * height))
                w, h = width * scale / 32, height * scale / 32
                scale *= min(math.floor(w) / w, math.floor(h) / h)
                patches = math.ceil(width * scale / 32) * math.ceil(height * scale / 32)
            return math.ceil(patches * multiplier)
    base, per_tile = next((v for p, v in _TILE_TOKENS.items() if name.startswith(p)), (85, 170))
    if detail == "low":
        return base
    for limit, side in ((2048, max), (768, min)):  # fit in a 2048 square, shortest side to 768
        length = side(width, height)
        if length > limit:
            width, height = int(width * limit / length), int(height * limit / length)
    return base + per_tile * math.ceil(width / 512) * math.ceil(height / 512)


_slow_memo: OrderedDict[bytes, tuple[int, int] | None] = OrderedDict()
_slow_lock = threading.Lock()


def image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a ``data:`` URL image (PNG, JPEG, GIF, WEBP), else ``None``."""
    head, sep, _ = url[:200].partition(";base64,")
    if not head.startswith("data:") or not sep:
        return None
    start = len(head) + len(sep)
    try:
        size = _header_size(_decode(url[start : start + _HEAD_CHARS]))
    except (binascii.Error, ValueError):
        return None
    if size is not None or len(url) - start <= _HEAD_CHARS:
        return size
    key = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    with _slow_lock:
        if key in _slow_memo:
            _slow_memo.move_to_end(key)
            return _slow_memo[key]
    try:  # a JPEG frame header may follow a large EXIF block: decode the whole payload
        size = _header_size(_decode(url[start:]))
    except (binascii.Error, ValueError):
        size = None
    with _slow_lock:
        _slow_memo[key] = size
        while len(_slow_memo) > _SLOW_MEMO_ENTRIES:
            _slow_memo.popitem(last=False)
    return size


def _decode(chunk: str) -> bytes:
    return base64.b64decode(chunk[: len(chunk) - len(chunk) % 4])


def _header_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(
                data[27:30], "little"
            )
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data[:2] != b"\xff\xd8":
        return None
    i = 2  # JPEG: walk the segments to the first start-of-frame (SOFn) marker
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None
