"""
The Responses API: ``responses.create``/``parse``/``stream`` (and ``beta.responses``), background
responses billed when a later ``retrieve``/``cancel``/stream replay sees them finish, and
``responses.compact``.
"""

from __future__ import annotations

from costmeter._endpoints._text import TextEndpoint

__all__ = ["ENDPOINTS"]


class Responses(TextEndpoint):
    api = "responses"
    paths = (("post", r"/responses"),)
    lookups = (("get", r"/responses/([^/]+)"), ("post", r"/responses/([^/]+)/cancel"))


class Compact(TextEndpoint):
    api = "responses.compact"
    paths = (("post", r"/responses/compact"),)


ENDPOINTS = (Compact(), Responses())
