"""
Audio durations read from file headers before a transcription is sent (`_audiofile`).

Every file here is built by hand from its format's specification (RIFF/WAVE, FLAC STREAMINFO,
MPEG audio frame headers, Ogg pages with an OpusHead, ISO BMFF ``moov/mvhd``), so the expected
duration is known independently of the reader under test.
"""

from __future__ import annotations

import io
import struct
import wave
from fractions import Fraction

import pytest

from costmeter._endpoints._audiofile import (
    MAX_UPLOAD_BYTES,
    MIN_BYTES_PER_SECOND,
    audio_seconds,
    worst_seconds,
)


def wav_file(seconds: float, *, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    """A silent PCM WAV written by the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\0" * width * channels * round(rate * seconds))
    return out.getvalue()


def _riff(
    fmt_tag: int, rate: int, channels: int, bits: int, data: bytes, *, extra: bytes = b""
) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits) + extra
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\0"  # odd-sized chunk + pad byte
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _mp3_frames(count: int, header: bytes, length: int) -> bytes:
    return (header + b"\0" * (length - 4)) * count


def _ogg_page(granule: int, payload: bytes, sequence: int) -> bytes:
    # capture, version, header type, granule, serial, sequence, crc, 1 segment of len(payload)
    head = b"OggS" + struct.pack("<BBqIII", 0, 0, granule, 1, sequence, 0)
    return head + bytes([1, len(payload)]) + payload


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


class TestExactDurations:
    def test_pcm_wav(self) -> None:
        assert Fraction(3) == audio_seconds(wav_file(3.0))
        assert Fraction(5, 4) == audio_seconds(wav_file(1.25, rate=8_000, channels=2))

    def test_float_wav_with_odd_chunk_before_data(self) -> None:
        """32-bit float (tag 3), which `wave` rejects before 3.12: 2 s at 8 kHz stereo."""
        data = b"\0" * (8_000 * 2 * 4 * 2)
        assert Fraction(2) == audio_seconds(_riff(3, 8_000, 2, 32, data))

    def test_streamed_wav_with_unknown_data_length(self) -> None:
        """A data size of 0xFFFFFFFF (written before the length was known): play what is there."""
        head = _riff(1, 16_000, 1, 16, b"")
        body = head[:-4] + struct.pack("<I", 0xFFFFFFFF) + b"\0" * 16_000  # 0.5 s
        assert Fraction(1, 2) == audio_seconds(body)

    def test_flac_streaminfo(self) -> None:
        rate, channels, bits, total = 44_100, 2, 16, 44_100 * 7 + 22_050  # 7.5 s
        packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
        info = struct.pack(">HH", 4096, 4096) + b"\0" * 6 + packed.to_bytes(8, "big") + b"\0" * 16
        data = b"fLaC" + bytes([0x80, 0, 0, 34]) + info + b"\0" * 100
        assert Fraction(15, 2) == audio_seconds(data)

    def test_mp3_cbr_with_id3_tags(self) -> None:
        """MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417-byte frames of 1,152 samples."""
        frames = _mp3_frames(300, bytes([0xFF, 0xFB, 0x90, 0x00]), 144 * 128_000 // 44_100)
        id3v2 = b"ID3" + bytes([4, 0, 0, 0, 0, 0, 20]) + b"\0" * 20
        id3v1 = b"TAG" + b"\0" * 125
        assert Fraction(300 * 1152, 44_100) == audio_seconds(id3v2 + frames + id3v1)

    def test_mp3_vbr_mixed_bitrates(self) -> None:
        """Frames of 32 and 320 kbit/s: the duration counts frames, not bytes over a bitrate."""
        low = _mp3_frames(50, bytes([0xFF, 0xFB, 0x10, 0x00]), 144 * 32_000 // 44_100)
        high = _mp3_frames(10, bytes([0xFF, 0xFB, 0xE0, 0x00]), 144 * 320_000 // 44_100)
        assert Fraction((50 + 10 + 50) * 1152, 44_100) == audio_seconds(low + high + low)

    def test_mpeg2_layer3_low_rate(self) -> None:
        """MPEG-2 layer III, 8 kbit/s at 16 kHz: 576 samples a frame (72 * 8000 / 16000 bytes)."""
        frames = _mp3_frames(100, bytes([0xFF, 0xF3, 0x18, 0x00]), 72 * 8_000 // 16_000)
        assert Fraction(100 * 576, 16_000) == audio_seconds(frames)

    def test_ogg_opus_last_granule(self) -> None:
        head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48_000, 0, 0)
        data = (
            _ogg_page(0, head, 0)
            + _ogg_page(0, b"OpusTags" + b"\0" * 8, 1)
            + _ogg_page(48_000 * 4 + 312, b"\0" * 50, 2)
        )
        assert Fraction(4) == audio_seconds(data)

    def test_mp4_movie_header(self) -> None:
        mvhd = bytes([0, 0, 0, 0]) + struct.pack(">IIII", 0, 0, 600, 600 * 90 + 300) + b"\0" * 80
        data = _box(b"ftyp", b"M4A \0\0\0\0") + _box(b"moov", _box(b"mvhd", mvhd))
        assert Fraction(181, 2) == audio_seconds(data)


class TestBounds:
    def test_unreadable_file_is_bounded_by_its_size_at_the_lowest_bitrate(self) -> None:
        """A WebM (no header read): bytes / 750 (6 kbit/s, Opus's floor) seconds, not exact."""
        data = b"\x1a\x45\xdf\xa3" + b"\0" * 14_996
        assert (Fraction(20), False) == worst_seconds(data)
        assert audio_seconds(data) is None

    def test_unavailable_file_is_bounded_by_the_upload_limit(self) -> None:
        assert (Fraction(25 * 1024 * 1024, 750), False) == worst_seconds(None)
        assert (MAX_UPLOAD_BYTES, MIN_BYTES_PER_SECOND) == (26_214_400, 750)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"RIFF\0\0\0\0WAVE",  # no fmt/data chunks
            b"RIFF\0\0\0\0WAVEdata\x10\0\0\0" + b"\0" * 16,  # data before fmt: no byte rate
            b"fLaC\x80\0\0\x22" + b"\0" * 34,  # STREAMINFO with 0 samples (unknown)
            bytes([0xFF, 0xFB, 0x90, 0x00]) + b"\0" * 10,  # one frame header, not a chain
            b"OggS" + b"\0" * 60,  # Ogg without a known codec header
        ],
    )
    def test_broken_headers_read_as_unknown(self, data: bytes) -> None:
        assert audio_seconds(data) is None
        assert (Fraction(len(data), 750), False) == worst_seconds(data)


# -- WebM / Matroska, built from the EBML and Matroska element specifications ---------------------


def _ebml(element: int, payload: bytes, *, unknown_size: bool = False) -> bytes:
    """One EBML element: its ID (length marker kept), a size VINT (8 bytes of ones if unknown)."""
    ident = element.to_bytes((element.bit_length() + 7) // 8, "big")
    if unknown_size:
        return ident + b"\x01\xff\xff\xff\xff\xff\xff\xff" + payload
    if len(payload) < 0x7F:
        return ident + bytes([0x80 | len(payload)]) + payload
    return ident + (0x4000 | len(payload)).to_bytes(2, "big") + payload


def webm_file(
    duration: bytes | None,
    *,
    scale: int | None = None,
    doc_type: bytes = b"webm",
    live: bool = False,
) -> bytes:
    """
    EBML header (DocType), then a Segment: SeekHead, Void, Info (TimecodeScale 0x2AD7B1, Duration
    0x4489, MuxingApp), Tracks and one Cluster of 200 payload bytes. *duration* is the raw float.
    """
    header = _ebml(0x1A45DFA3, _ebml(0x4286, b"\x01") + _ebml(0x4282, doc_type))
    info = b"" if scale is None else _ebml(0x2AD7B1, scale.to_bytes(4, "big"))
    info += b"" if duration is None else _ebml(0x4489, duration)
    info += _ebml(0x4D80, b"costmeter tests")
    cluster = _ebml(0x1F43B675, _ebml(0xE7, b"\0") + _ebml(0xA3, b"\0" * 200), unknown_size=live)
    body = _ebml(0x114D9B74, b"") + _ebml(0xEC, b"\0" * 4) + _ebml(0x1549A966, info)
    body += _ebml(0x1654AE6B, b"\0" * 8) + cluster
    return header + _ebml(0x18538067, body, unknown_size=live)


def _cut_in_duration(data: bytes) -> bytes:
    """*data* cut 4 bytes into the Duration element's 8-byte float."""
    return data[: data.index(b"\x44\x89") + 3 + 4]


class TestWebm:
    def test_default_scale_is_milliseconds(self) -> None:
        """No TimecodeScale: 1,000,000 ns a tick, so Duration 2500.0 is 2.5 s."""
        data = webm_file(struct.pack(">d", 2500.0))
        assert (Fraction(5, 2), True) == worst_seconds(data)

    def test_float32_duration_and_explicit_scale(self) -> None:
        """TimecodeScale 1,000 ns (microsecond ticks), Duration 3,000,000.0 as float32: 3 s."""
        data = webm_file(struct.pack(">f", 3_000_000.0), scale=1_000)
        assert Fraction(3) == audio_seconds(data)

    def test_matroska_recorded_live(self) -> None:
        """A Matroska file whose Segment and Cluster sizes are unknown (live muxing)."""
        data = webm_file(struct.pack(">d", 61_250.0), doc_type=b"matroska", live=True)
        assert Fraction(245, 4) == audio_seconds(data)

    def test_no_duration_falls_back_to_the_size_bound(self) -> None:
        """A browser MediaRecorder WebM carries no Duration: bytes / 750 seconds, not exact."""
        data = webm_file(None, live=True)
        assert audio_seconds(data) is None
        assert (Fraction(len(data), 750), False) == worst_seconds(data)

    @pytest.mark.parametrize(
        "data",
        [
            webm_file(struct.pack(">d", 2500.0), doc_type=b"mkv3d"),  # not WebM/Matroska
            _cut_in_duration(webm_file(struct.pack(">d", 2500.0))),
            webm_file(struct.pack(">d", float("inf"))),
            webm_file(struct.pack(">d", -5.0)),
            webm_file(b"\0\0\0"),  # a 3-byte float is no float
        ],
    )
    def test_broken_webm_reads_as_unknown(self, data: bytes) -> None:
        assert audio_seconds(data) is None
        assert (Fraction(len(data), 750), False) == worst_seconds(data)
