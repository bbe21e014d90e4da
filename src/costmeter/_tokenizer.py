"""
Offline, exact token counting with tiktoken.

The two vocabularies ship inside the package (``_data/*.tiktoken.gz``, byte-identical to the files
OpenAI publishes for tiktoken). They are loaded lazily, once per process, under a lock, and their
sha256 is checked against the hash tiktoken itself expects; nothing is downloaded and no
environment variable is read or changed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from importlib import resources
from typing import TYPE_CHECKING

from costmeter._errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_tokens", "encoding_for", "encoding_name_for"]

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14); tests/test_tokenizer.py checks that
# they still equal what tiktoken builds, so an upgrade that changes them fails loudly.
_SPECS: dict[str, tuple[str, str, dict[str, int]]] = {
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_name_cache: dict[str, str] = {}


def _load(name: str) -> tiktoken.Encoding:
    """Build the tiktoken ``Encoding`` from the bundled, hash-checked vocabulary file."""
    import tiktoken  # noqa: PLC0415  (lazy: keeps ``import costmeter`` cheap)

    expected_hash, pat_str, special_tokens = _SPECS[name]
    raw = gzip.decompress(
        resources.files("costmeter").joinpath(f"_data/{name}.tiktoken.gz").read_bytes()
    )
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_hash:  # pragma: no cover - only on a corrupted install
        raise RuntimeError(
            f"bundled {name} vocabulary is corrupted: sha256 {actual}, expected {expected_hash}"
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    return tiktoken.Encoding(
        name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens
    )


def encoding_name_for(model: str) -> str:
    """
    tiktoken's own model → encoding mapping; ``o200k_base`` for models it does not know.

    Every current OpenAI model (gpt-4o and later, the o-series, gpt-5/6) uses ``o200k_base``;
    only gpt-4, gpt-3.5 and the old embedding models use ``cl100k_base``. ``o200k_harmony``
    (gpt-oss) shares ``o200k_base``'s ordinary tokens, so plain text counts are identical.
    """
    cached = _name_cache.get(model)
    if cached is not None:
        return cached
    from tiktoken.model import (  # noqa: PLC0415
        MODEL_PREFIX_TO_ENCODING,
        MODEL_TO_ENCODING,
    )

    key = model.lower().rsplit("/", 1)[-1]
    name = MODEL_TO_ENCODING.get(key)
    if name is None:
        name = next(
            (enc for prefix, enc in MODEL_PREFIX_TO_ENCODING.items() if key.startswith(prefix)),
            "o200k_base",
        )
    if name not in _SPECS:
        name = "o200k_base"
    _name_cache[model] = name
    return name


def encoding_for(model: str) -> tiktoken.Encoding:
    """The (cached) tiktoken ``Encoding`` used for *model*; loads the vocabulary on first use."""
    name = encoding_name_for(model)
    enc = _encodings.get(name)
    if enc is None:
        with _lock:
            enc = _encodings.get(name)
            if enc is None:
                enc = _encodings[name] = _load(name)
    return enc


def count_tokens(text: str, *, model: str) -> int:
    """
    Count the tokens of *text* exactly as *model*'s tokenizer splits it.

    Special-token strings such as ``<|endoftext|>`` in user text are counted as ordinary text,
    which is how the API treats text sent to it.

    Raises:
        ConfigurationError: *text* or *model* is not a string.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"count_tokens() needs text as str, got {type(text).__name__}")
    if not isinstance(model, str):
        raise ConfigurationError(f"count_tokens() needs model as str, got {type(model).__name__}")
    if not text:
        return 0
    return len(encoding_for(model).encode_ordinary(text))
