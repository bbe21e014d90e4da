"""Embeddings: input tokens only, no output; usage in the Chat shape (``prompt_tokens``)."""

from __future__ import annotations

from costmeter._endpoints._text import TextEndpoint

__all__ = ["ENDPOINTS"]


class Embeddings(TextEndpoint):
    api = "embeddings"
    paths = (("post", r"/embeddings"),)


ENDPOINTS = (Embeddings(),)
