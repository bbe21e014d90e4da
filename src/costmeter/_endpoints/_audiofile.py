"""
How long an uploaded audio file plays, read from its container headers, before it is sent.

Transcriptions are billed by audio duration (whisper-1 per second, gpt-4o-transcribe per audio
token, about a fixed number per second), so the worst case of a request is a function of the
file's duration. The formats the API accepts whose duration sits in a small header are read
exactly, with the standard library only:

* WAV (RIFF/RIFX, any codec): the ``data`` chunk's size over the ``fmt `` chunk's byte rate.
  The stdlib ``wave`` module is not used: before Python 3.12 it rejects float and
  ``WAVE_FORMAT_EXTENSIBLE`` files, which the API accepts.
* FLAC: total samples over the sample rate, from ``STREAMINFO``.
* MP3: every frame header is walked (ID3v2 tags skipped), so VBR files without a Xing header
  are timed exactly too.
* Ogg (Opus, Vorbis): the last page's granule position over the stream's sample rate.
* MP4/M4A: the movie header's (``moov/mvhd``) duration over its timescale.
* WebM/Matroska: the Segment Info's ``Duration`` times its ``TimecodeScale`` (nanoseconds per
  tick, 1,000,000 by default), EBML elements walked up to the first Cluster.

Anything else (a WebM recorded live, e.g. by a browser's MediaRecorder, which writes no
``Duration``; a truncated or unrecognised file) has no readable duration: `worst_seconds` then
bounds it from the byte count at `MIN_BYTES_PER_SECOND`, the lowest bitrate an accepted codec can
encode at, so the bound is the longest audio those bytes can hold.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MIN_BYTES_PER_SECOND",
    "audio_seconds",
    "worst_seconds",
]

#: The API's upload limit for audio files (25 MB), the bound when the file cannot be read.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
#: 6 kbit/s: Opus's lowest bitrate (RFC 6716 §2.1.1), below MP3's 8 kbit/s minimum and every
#: other accepted codec's, so ``bytes / 750`` is the longest audio any accepted file can hold.
MIN_BYTES_PER_SECOND = 750


def audio_seconds(data: bytes) -> Fraction | None:
    """The exact playing time of *data*, or ``None`` when its format or header is not readable."""
    for reader in (_wav, _flac, _ogg, _mp4, _webm, _mp3):
        try:
            seconds = reader(data)
        except (struct.error, IndexError, ValueError, ZeroDivisionError):
            seconds = None
        if seconds is not None and seconds >= 0:
            return seconds
    return None


def worst_seconds(data: bytes | None) -> tuple[Fraction, bool]:
    """
    The longest *data* can play, and whether it was read from the file's own header.

    Unreadable files are bounded from their size at `MIN_BYTES_PER_SECOND`; a file whose bytes
    are not available (an open stream) by the API's upload limit, `MAX_UPLOAD_BYTES`.
    """
    if data is None:
        return Fraction(MAX_UPLOAD_BYTES, MIN_BYTES_PER_SECOND), False
    seconds = audio_seconds(data)
    if seconds is not None:
        return seconds, True
    return Fraction(len(data), MIN_BYTES_PER_SECOND), False


# -- WAV -----------------------------------------------------------------------------------------

_PCM_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})  # PCM, float, A-law, mu-law, ext


def _wav(data: bytes) -> Fraction | None:
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX"):
        return None
    order = "<" if data[:4] == b"RIFF" else ">"
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk = data[pos : pos + 4]
        (size,) = struct.unpack_from(order + "I", data, pos + 4)
        body = pos + 8
        if chunk == b"fmt " and size >= 16:
            tag, _channels, rate, avg_rate, align, _bits = struct.unpack_from(
                order + "HHIIHH", data, body
            )
            # Uncompressed frames are exactly `align` bytes; the average rate is for codecs.
            byte_rate = rate * align if tag in _PCM_TAGS and rate and align else avg_rate
        elif chunk == b"data":
            available = len(data) - body
            # Streamed WAVs write 0 or 0xFFFFFFFF before the length is known: play what is there.
            length = available if size in (0, 0xFFFFFFFF) or size > available else size
            return Fraction(length, byte_rate) if byte_rate else None
        pos = body + size + (size & 1)
    return None


# -- FLAC ----------------------------------------------------------------------------------------


def _flac(data: bytes) -> Fraction | None:
    if data[:4] != b"fLaC" or data[4] & 0x7F != 0:  # the first block must be STREAMINFO
        return None
    packed = int.from_bytes(data[18:26], "big")
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    return Fraction(total, rate) if rate and total else None


# -- Ogg -----------------------------------------------------------------------------------------


def _ogg(data: bytes) -> Fraction | None:
    if data[:4] != b"OggS":
        return None
    first = data[28:]  # the first page's first packet (one-segment header page)
    if first[:8] == b"OpusHead":
        (pre_skip,) = struct.unpack_from("<H", first, 10)
        rate = 48_000  # Opus granule positions always count 48 kHz samples (RFC 7845 §4)
    elif first[:7] == b"\x01vorbis":
        (rate,) = struct.unpack_from("<I", first, 12)
        pre_skip = 0
    else:
        return None
    last = data.rfind(b"OggS")
    (granule,) = struct.unpack_from("<q", data, last + 6)
    if granule < 0 or not rate:
        return None
    return Fraction(max(granule - pre_skip, 0), rate)


# -- MP4 / M4A -----------------------------------------------------------------------------------


def _boxes(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """The boxes between *start* and *end*: type -> (payload start, payload end)."""
    found: dict[bytes, tuple[int, int]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            break
        found.setdefault(kind, (pos + header, min(pos + size, end)))
        pos += size
    return found


def _mp4(data: bytes) -> Fraction | None:
    if data[4:8] != b"ftyp":
        return None
    moov = _boxes(data, 0, len(data)).get(b"moov")
    if moov is None:
        return None
    mvhd = _boxes(data, *moov).get(b"mvhd")
    if mvhd is None:
        return None
    at = mvhd[0]
    if data[at] == 1:  # version 1: 64-bit times
        timescale, duration = struct.unpack_from(">IQ", data, at + 20)
    else:
        timescale, duration = struct.unpack_from(">II", data, at + 12)
    return Fraction(duration, timescale) if timescale else None


# -- WebM / Matroska ------------------------------------------------------------------------------

_EBML, _SEGMENT, _INFO, _CLUSTER = 0x1A45DFA3, 0x18538067, 0x1549A966, 0x1F43B675
_DOC_TYPE, _TIMECODE_SCALE, _DURATION = 0x4282, 0x2AD7B1, 0x4489
_NANOSECONDS = 1_000_000_000


def _vint(data: bytes, pos: int, *, marker: bool) -> tuple[int, int, bool]:
    """
    The EBML variable-length integer at *pos*: (value, next position, all value bits set). An
    element ID keeps its length *marker* bit; a size drops it, and all ones means "unknown".
    """
    first = data[pos]
    if first == 0:
        raise ValueError("not an EBML variable-length integer")
    length = 9 - first.bit_length()  # the count of leading zero bits, plus one
    if pos + length > len(data):
        raise IndexError("truncated EBML integer")
    raw = int.from_bytes(data[pos : pos + length], "big")
    value = raw & ((1 << (7 * length)) - 1)
    return (raw if marker else value), pos + length, value == (1 << (7 * length)) - 1


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """
    The EBML elements between *start* and *end* as (id, payload start, payload end). Stops at a
    Cluster, an element of unknown size (nothing after it is a header) or a cut one (only the
    Segment, which holds the media, may run past the bytes there are).
    """
    found: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        element, pos, _ = _vint(data, pos, marker=True)
        size, pos, unknown = _vint(data, pos, marker=False)
        if element != _SEGMENT and (element == _CLUSTER or unknown or pos + size > end):
            break
        stop = end if unknown else min(pos + size, end)
        found.append((element, pos, stop))
        pos = stop
    return found


def _webm(data: bytes) -> Fraction | None:
    if data[:4] != b"\x1a\x45\xdf\xa3":
        return None
    top = _elements(data, 0, len(data))
    header = next(((a, b) for e, a, b in top if e == _EBML), None)
    segment = next(((a, b) for e, a, b in top if e == _SEGMENT), None)
    if header is None or segment is None:
        return None
    doc_type = next((data[a:b] for e, a, b in _elements(data, *header) if e == _DOC_TYPE), b"")
    if doc_type.rstrip(b"\0") not in (b"webm", b"matroska"):
        return None
    info = next(((a, b) for e, a, b in _elements(data, *segment) if e == _INFO), None)
    if info is None:
        return None
    scale, duration = 1_000_000, None
    for element, a, b in _elements(data, *info):
        if element == _TIMECODE_SCALE and b > a:
            scale = int.from_bytes(data[a:b], "big")
        elif element == _DURATION and b - a in (4, 8):
            (duration,) = struct.unpack(">f" if b - a == 4 else ">d", data[a:b])
    if duration is None or not math.isfinite(duration) or not scale:
        return None
    return Fraction(duration) * scale / _NANOSECONDS


# -- MP3 -----------------------------------------------------------------------------------------

# kbit/s by [MPEG-1?][layer 1..3][index 1..14]
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(frame length, samples, sample rate) of the MPEG audio frame header at *pos*."""
    if pos + 4 > len(data) or data[pos] != 0xFF:
        return None
    header = int.from_bytes(data[pos : pos + 4], "big")
    if (header >> 21) & 0x7FF != 0x7FF:
        return None
    version, layer_bits = (header >> 19) & 3, (header >> 17) & 3
    index, rate_index = (header >> 12) & 0xF, (header >> 10) & 3
    if version == 1 or layer_bits == 0 or index in (0, 15) or rate_index == 3:
        return None  # reserved values, or free-format frames (no length in the header)
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][index - 1] * 1000
    rate = _RATES[version][rate_index]
    padding = (header >> 9) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384, rate
    samples = 1152 if layer == 2 or mpeg1 else 576
    return samples // 8 * bitrate // rate + padding, samples, rate


def _mp3(data: bytes) -> Fraction | None:
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        pos = 10 + size + (10 if data[5] & 0x10 else 0)
    first = _mp3_frame(data, pos)
    if first is None or _mp3_frame(data, pos + first[0]) is None:
        return None  # not MPEG audio: two chained frame headers are required to say it is
    samples_at: dict[int, int] = {}  # sample rate -> samples (summed as ints: Fractions are slow)
    headers: dict[bytes, tuple[int, int, int] | None] = {}  # a file repeats a few headers
    end = len(data)
    while pos < end:
        header = data[pos : pos + 4]
        if header in headers:
            frame = headers[header]
        else:
            frame = headers[header] = _mp3_frame(data, pos)
        if frame is None:
            # A trailing tag (ID3v1, APE) or garbage: resynchronise on the next frame header.
            found = data.find(b"\xff", pos + 1)
            while found != -1 and _mp3_frame(data, found) is None:
                found = data.find(b"\xff", found + 1)
            if found == -1:
                break
            pos = found
            continue
        length, samples, rate = frame
        samples_at[rate] = samples_at.get(rate, 0) + samples
        pos += length
    return sum((Fraction(n, rate) for rate, n in samples_at.items()), Fraction(0))
