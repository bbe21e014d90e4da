"""Chat Completions: ``chat.completions.create``/``parse``/``stream``, usage in the Chat shape."""

from __future__ import annotations

from costmeter._endpoints._text import TextEndpoint

__all__ = ["ENDPOINTS"]


class Chat(TextEndpoint):
    api = "chat.completions"
    paths = (("post", r"/chat/completions"),)


ENDPOINTS = (Chat(),)
