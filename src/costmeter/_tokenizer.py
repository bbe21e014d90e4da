"""
Offline, exact token counting with tiktoken.

The two vocabularies ship inside the package (``_data/*.tiktoken.gz``, byte-identical to the files
OpenAI publishes for tiktoken). They are loaded lazily, once per process, under a lock, and their
sha256 is checked against the hash tiktoken itself expects; nothing is downloaded, nothing is
written anywhere, and no environment variable is read or changed.

Loading o200k_base costs ~0.25 s (decompress and hash ~35 ms, ranks ~80 ms, tiktoken's encoder
~140 ms). `preload` starts it on a daemon thread, for callers that know a count before sending is
coming (a SQLite/Redis budget, ``always_estimate``); the first count then waits only for what is
left of the load.
"""

from __future__ import annotations

import binascii
import contextlib
import gzip
import hashlib
import os
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from costmeter._errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_tokens", "encoding_for", "encoding_name_for", "preload"]

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

_encodings: dict[str, tiktoken.Encoding] = {}
_name_cache: dict[str, str] = {}
# One lock per vocabulary (loading cl100k_base never makes an o200k_base count wait), and the
# vocabularies a preload thread was started for in this process.
_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in _SPECS}
_preloads_lock = threading.Lock()
_preloads: set[str] = set()
# tiktoken imports itself circularly (tiktoken.core <-> tiktoken): two threads importing it at
# once can see a partially initialised module, so every import of it here goes through a lock.
_import_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """
    A forked child has none of its parent's threads: a lock a preload thread held at the fork
    would stay held forever, and a preload in flight would never finish. Start afresh (loaded
    vocabularies are inherited and stay valid).
    """
    global _locks, _preloads_lock, _import_lock  # noqa: PLW0603
    _locks = {name: threading.Lock() for name in _SPECS}
    _preloads_lock = threading.Lock()
    _import_lock = threading.Lock()
    _preloads.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ranks(raw: bytes) -> dict[bytes, int]:
    """
    The mergeable ranks of a verified ``.tiktoken`` file: ``<base64 token> <rank>`` per line.

    Both bundled files list ranks as 0, 1, 2, ... in order (their sha256 pins that, and
    tests/test_tokenizer.py checks it against a line-by-line parse), so the rank column need not
    be parsed: tokens are zipped with ``range``, ~2x faster than tiktoken's own loader.
    """
    fields = raw.split()
    tokens = fields[::2]
    if len(fields) != 2 * len(tokens) or fields[-1] != str(len(tokens) - 1).encode():
        raise RuntimeError("bundled vocabulary does not list its ranks in order")
    return dict(zip(map(binascii.a2b_base64, tokens), range(len(tokens)), strict=True))


def _import_tiktoken() -> Any:
    """``tiktoken`` with its ``model`` module, imported one thread at a time."""
    with _import_lock:
        import tiktoken.model  # noqa: PLC0415  (lazy: keeps ``import costmeter`` cheap)

    return tiktoken


def _load(name: str) -> tiktoken.Encoding:
    """Build the tiktoken ``Encoding`` from the bundled, hash-checked vocabulary file."""
    tk = _import_tiktoken()
    expected_hash, pat_str, special_tokens = _SPECS[name]
    raw = gzip.decompress(
        resources.files("costmeter").joinpath(f"_data/{name}.tiktoken.gz").read_bytes()
    )
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_hash:  # pragma: no cover - only on a corrupted install
        raise RuntimeError(
            f"bundled {name} vocabulary is corrupted: sha256 {actual}, expected {expected_hash}"
        )
    return tk.Encoding(  # type: ignore[no-any-return]
        name=name, pat_str=pat_str, mergeable_ranks=_ranks(raw), special_tokens=special_tokens
    )


def _encoding(name: str) -> tiktoken.Encoding:
    """The loaded vocabulary *name*; loads it, or waits for a load in progress, on first use."""
    enc = _encodings.get(name)
    if enc is None:
        with _locks[name]:
            enc = _encodings.get(name)
            if enc is None:
                enc = _encodings[name] = _load(name)
    return enc


def _preload_quietly(name: str) -> None:
    # A failure here is reported where it matters: the next count loads again and raises.
    with contextlib.suppress(Exception):
        _encoding(name)


def preload(encoding_name: str = "o200k_base") -> None:
    """
    Start loading *encoding_name* on a daemon thread, so the first count does not pay for it.

    Call it where a count before sending is certain to follow (a client with
    ``always_estimate=True``, a SQLite/Redis budget entered; an in-memory budget admits on a
    bound and rarely counts): that count needs the vocabulary anyway. Not
    where the first call needs no count: the load then competes with the SDK's own first-call
    work for the CPU and the GIL (measured: a first call without a count took 240 ms without a
    preload and 540 ms with one started by the constructor, against 204 ms bare). Idempotent
    (one thread per vocabulary per process, none once loaded),
    safe after ``fork`` (the child starts afresh), and never raises: an unknown name, a failure
    to start a thread or to load is silently ignored here (a count then loads synchronously and
    reports the problem). Writes nothing and reads no environment variable.
    """
    with contextlib.suppress(Exception):
        if encoding_name in _encodings or encoding_name not in _SPECS:
            return
        with _preloads_lock:
            if encoding_name in _preloads:
                return
            _preloads.add(encoding_name)
        threading.Thread(
            target=_preload_quietly,
            args=(encoding_name,),
            name=f"costmeter-preload-{encoding_name}",
            daemon=True,
        ).start()


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
    tiktoken_model = _import_tiktoken().model
    key = model.lower().rsplit("/", 1)[-1]
    name: str | None = tiktoken_model.MODEL_TO_ENCODING.get(key)
    if name is None:
        name = next(
            (
                enc
                for prefix, enc in tiktoken_model.MODEL_PREFIX_TO_ENCODING.items()
                if key.startswith(prefix)
            ),
            "o200k_base",
        )
    if name not in _SPECS:
        name = "o200k_base"
    _name_cache[model] = name
    return name


def encoding_for(model: str) -> tiktoken.Encoding:
    """The (cached) tiktoken ``Encoding`` used for *model*; loads the vocabulary on first use."""
    return _encoding(encoding_name_for(model))


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
