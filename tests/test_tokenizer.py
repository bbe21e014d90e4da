"""The bundled tokenizer: exact, offline, lazy, loaded once."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import costmeter
from costmeter import ConfigurationError, count_tokens
from costmeter._tokenizer import _SPECS, encoding_for, encoding_name_for

SAMPLES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. 1234567 numbers; émojis 🎉 and CJK 漢字.",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "<|endoftext|> is ordinary text when a user sends it",
]


@pytest.fixture(name="reference")
def _reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """tiktoken's own encodings, fed from our bundled files through its documented cache dir."""
    import tiktoken
    import tiktoken.registry
    from tiktoken_ext import openai_public

    urls = {
        "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    }
    for name, url in urls.items():
        data = gzip.decompress(
            resources.files("costmeter").joinpath(f"_data/{name}.tiktoken.gz").read_bytes()
        )
        (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return {name: tiktoken.Encoding(**getattr(openai_public, name)()) for name in urls}


class TestExactness:
    @pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
    def test_same_as_tiktoken(self, name: str, reference) -> None:  # type: ignore[no-untyped-def]
        """Our encodings split text exactly as tiktoken's own (pattern, specials, ranks)."""
        model = "gpt-5" if name == "o200k_base" else "gpt-4"
        ours = encoding_for(model)

        assert reference[name]._pat_str == ours._pat_str
        assert reference[name]._special_tokens == ours._special_tokens
        for text in SAMPLES:
            assert len(reference[name].encode_ordinary(text)) == count_tokens(text, model=model)

    def test_hashes_are_tiktokens(self) -> None:
        """The sha256 we verify equals the expected_hash tiktoken itself checks."""
        import inspect

        from tiktoken_ext import openai_public

        for name, (expected_hash, _, _) in _SPECS.items():
            assert expected_hash in inspect.getsource(getattr(openai_public, name))


class TestModelMapping:
    @pytest.mark.parametrize(
        ("model", "encoding"),
        [
            ("gpt-5", "o200k_base"),
            ("gpt-4o-mini-2024-07-18", "o200k_base"),
            ("gpt-4", "cl100k_base"),
            ("gpt-3.5-turbo-0125", "cl100k_base"),
            ("gpt-35-turbo", "cl100k_base"),
            ("gpt-6-astra", "o200k_base"),
            ("some-future-model", "o200k_base"),
            ("openai/gpt-4o", "o200k_base"),
        ],
    )
    def test_mapping(self, model: str, encoding: str) -> None:
        """tiktoken's own mapping; o200k_base for models it does not know."""
        assert encoding == encoding_name_for(model)


class TestOffline:
    def test_no_socket_at_all(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Tokenizing and pricing open no socket, not even to loopback."""

        def refuse(*args: object) -> None:
            raise AssertionError("socket opened")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)

        assert count_tokens("hello there", model="gpt-4") > 0
        assert costmeter.cost_of("gpt-5", {"input_tokens": 1, "output_tokens": 1}).total_usd > 0

    def test_environment_untouched(self) -> None:
        """Loading never sets TIKTOKEN_CACHE_DIR or any other variable."""
        before = dict(os.environ)

        count_tokens("x", model="gpt-5")

        assert before == dict(os.environ)

    def test_import_is_lazy_and_load_happens_once(self) -> None:
        """import costmeter loads no vocabulary; 16 racing threads load each one exactly once."""
        code = """
import sys, threading, costmeter
from costmeter import _tokenizer
assert not _tokenizer._encodings and 'tiktoken' not in sys.modules, 'eager load'
calls = []
real = _tokenizer._load
_tokenizer._load = lambda name: calls.append(name) or real(name)
threads = [threading.Thread(target=costmeter.count_tokens, args=('hi',), kwargs={'model': 'gpt-5'})
           for _ in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
print(calls)
"""
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )

        assert "['o200k_base']" == out.stdout.strip()


class TestBadInput:
    @pytest.mark.parametrize(("text", "model"), [(None, "gpt-5"), (b"x", "gpt-5"), ("x", None)])
    def test_types(self, text: object, model: object) -> None:
        """Non-string text or model raises ConfigurationError."""
        with pytest.raises(ConfigurationError):
            count_tokens(text, model=model)  # type: ignore[arg-type]

    def test_empty(self) -> None:
        """Empty text has zero tokens."""
        assert 0 == count_tokens("", model="gpt-5")


class TestFastLoad:
    @pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
    def test_ranks_equal_a_line_by_line_parse(self, name: str) -> None:
        """The fast loader (ranks taken from line order) equals tiktoken's own line parse."""
        import base64

        from costmeter._tokenizer import _ranks

        raw = gzip.decompress(
            resources.files("costmeter").joinpath(f"_data/{name}.tiktoken.gz").read_bytes()
        )
        expected = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in raw.splitlines() if line)
        }

        assert expected == _ranks(raw)

    def test_out_of_order_ranks_are_refused(self) -> None:
        """A file whose ranks are not 0, 1, 2, ... in order is never zipped with the wrong ranks."""
        from costmeter._tokenizer import _ranks

        with pytest.raises(RuntimeError, match="in order"):
            _ranks(b"YQ== 0\nYg== 2\nYw== 1\n")


_PRELOAD_CHILD = """
import os, sys, threading, time, costmeter
from costmeter import _tokenizer
calls = []
real = _tokenizer._load
_tokenizer._load = lambda name: calls.append(name) or real(name)
{body}
"""


def _child(body: str) -> str:
    code = _PRELOAD_CHILD.format(body=body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class TestPreload:
    def test_loads_in_the_background_once(self) -> None:
        """preload() returns at once; repeated calls and a racing count load the vocabulary once."""
        out = _child(
            """
for _ in range(5):
    _tokenizer.preload()
assert threading.active_count() == 2, threading.enumerate()
assert costmeter.count_tokens("hello world", model="gpt-5") == 2
for t in threading.enumerate():
    if t.name.startswith("costmeter-preload"):
        t.join(60)
_tokenizer.preload()
print(calls, threading.active_count(), sorted(_tokenizer._encodings))
"""
        )

        assert "['o200k_base'] 1 ['o200k_base']" == out

    def test_does_nothing_once_loaded_or_for_unknown_names(self) -> None:
        """No thread once the vocabulary is loaded; an unknown name is ignored, not raised."""
        out = _child(
            """
costmeter.count_tokens("x", model="gpt-5")
_tokenizer.preload()
_tokenizer.preload("no-such-encoding")
_tokenizer.preload(None)
print(calls, threading.active_count())
"""
        )

        assert "['o200k_base'] 1" == out

    def test_a_failing_load_surfaces_on_the_next_count(self) -> None:
        """A background failure is swallowed; the count that needs the vocabulary raises it."""
        out = _child(
            """
def broken(name):
    calls.append(name)
    raise RuntimeError("corrupted")
_tokenizer._load = broken
_tokenizer.preload()
for t in threading.enumerate():
    if t.name.startswith("costmeter-preload"):
        t.join(60)
try:
    costmeter.count_tokens("x", model="gpt-5")
except RuntimeError as exc:
    print(calls, exc)
"""
        )

        assert "['o200k_base', 'o200k_base'] corrupted" == out

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_fork_while_loading(self) -> None:
        """A child forked mid-load does not deadlock: it loads on its own and counts correctly."""
        out = _child(
            """
started = threading.Event()
def slow(name):
    started.set()
    time.sleep(0.5)
    return real(name)
_tokenizer._load = slow
_tokenizer.preload()
started.wait(30)
pid = os.fork()
if pid == 0:
    _tokenizer._load = real
    _tokenizer.preload()
    n = costmeter.count_tokens("hello world", model="gpt-5")
    os._exit(0 if n == 2 else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), costmeter.count_tokens("hello world", model="gpt-5"))
"""
        )

        assert "0 2" == out
