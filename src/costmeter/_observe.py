"""
What a call received, as far as billing goes: ids, model, served tier, status, usage, text.

An `Observation` is fed every object the SDK hands back — a response model, a typed stream event,
a JSON dict parsed from raw bytes — by the call's endpoint (`costmeter._endpoints.Endpoint.observe`).
Its `take` understands the shapes the Responses, Chat, Completions and Embeddings APIs share;
endpoints with other shapes (images, audio, batches) call `take_usage` and the setters directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costmeter._usage import Usage, UsageError, field_of, usage_from

__all__ = [
    "TERMINAL_STATUSES",
    "TEXT_DELTA_EVENTS",
    "Observation",
    "field_of",
    "text_delta_observer",
]

TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled", "expired"})
_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.cancelled"}
)
_STARTED_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
_RESPONSE_OBJECTS = frozenset({"response", "response.compaction"})
# The Responses stream events that carry text in ``delta``: the bulk of a stream's events, which
# `text_delta_observer` takes without dispatching (`Observation.take` does the same with them).
TEXT_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.mcp_call_arguments.delta",
        "response.code_interpreter_call_code.delta",
        "response.audio.transcript.delta",
    }
)


class Observation:
    """Everything received for one call (see the module docstring). Written by one thread."""

    __slots__ = (
        "background",
        "deltas",
        "final_response",
        "keep_text",
        "received",
        "request_id",
        "response_id",
        "response_model",
        "served_tier",
        "status",
        "usage",
        "usage_problem",
        "web_search_calls",
    )

    def __init__(self, *, response_id: str | None = None, keep_text: bool = False) -> None:
        self.received = False  # a 2xx response (or part of one) arrived: the request is billed
        self.response_id = response_id
        self.response_model: str | None = None
        self.request_id: str | None = None
        self.served_tier: str | None = None
        self.status: str | None = None
        self.usage: Usage | None = None
        self.usage_problem: str | None = None
        self.final_response: Any = None
        self.web_search_calls = 0
        self.deltas: list[str] = []
        self.background = False
        self.keep_text = keep_text

    # -- setters endpoints use -------------------------------------------------------------------
    def take_usage(self, usage: object) -> None:
        """Record reported usage (an SDK usage object, a dict, or a `Usage`)."""
        try:
            self.usage = usage_from(usage, web_search_calls=self.web_search_calls)
        except UsageError as exc:
            self.usage_problem = str(exc)

    def take_model(self, model: object) -> None:
        if isinstance(model, str) and model:
            self.response_model = model

    def take_status(self, status: object) -> None:
        if isinstance(status, str):
            self.status = status

    # -- the shared shapes -----------------------------------------------------------------------
    def take(self, obj: Any) -> None:
        """A Responses/Chat/Completions/Embeddings object, stream event or JSON dict."""
        self.received = True
        values = getattr(obj, "__dict__", None)  # an SDK object's fields: one lookup per event
        kind = values["type"] if values and "type" in values else field_of(obj, "type")
        if isinstance(kind, str):
            if kind.endswith(".delta"):
                delta = values["delta"] if values and "delta" in values else field_of(obj, "delta")
                if isinstance(delta, str) and kind != "response.audio.delta":
                    self.deltas.append(delta)
                return
            if kind.startswith("response."):  # the others bill nothing: only these carry one
                if kind in _TERMINAL_EVENTS or kind in _STARTED_EVENTS:
                    self._take_response(field_of(obj, "response"))
                return
            if kind == "error":
                self.status = self.status or "failed"
                return
        obj_kind = field_of(obj, "object")
        if obj_kind == "chat.completion.chunk":
            self._take_chunk(obj)
        elif obj_kind in _RESPONSE_OBJECTS or (
            obj_kind is not None and field_of(obj, "usage") is not None
        ):
            self._take_response(obj)  # responses, chat.completion, text_completion, embeddings
        elif field_of(obj, "choices") is not None:
            self._take_response(obj)  # a completion without usage: its status and text
        if self.request_id is None:
            request_id = getattr(obj, "_request_id", None)
            if isinstance(request_id, str):
                self.request_id = request_id

    def _take_response(self, response: Any) -> None:
        if response is None:
            return
        self.final_response = response
        self.response_id = field_of(response, "id") or self.response_id
        self.take_model(field_of(response, "model"))
        tier = field_of(response, "service_tier")
        if isinstance(tier, str):
            self.served_tier = tier
        self.take_status(field_of(response, "status"))
        for choice in field_of(response, "choices") or ():
            self._take_finish_reason(choice)
        if field_of(response, "background"):
            self.background = True
        searches = field_of(
            field_of(field_of(response, "tool_usage"), "web_search"), "num_requests"
        )
        if isinstance(searches, int) and searches > 0:
            self.web_search_calls = searches
        usage = field_of(response, "usage")
        if usage is not None:
            self.take_usage(usage)

    def _take_chunk(self, chunk: Any) -> None:
        self.response_id = self.response_id or field_of(chunk, "id")
        self.take_model(field_of(chunk, "model"))
        tier = field_of(chunk, "service_tier")
        if isinstance(tier, str):
            self.served_tier = tier
        usage = field_of(chunk, "usage")
        if usage is not None:
            self.take_usage(usage)
        for choice in field_of(chunk, "choices") or ():
            self._take_finish_reason(choice)
            delta = field_of(choice, "delta")
            for text in (field_of(delta, "content"), field_of(delta, "refusal")):
                if isinstance(text, str) and text:
                    self.deltas.append(text)
            for tool_call in field_of(delta, "tool_calls") or ():
                arguments = field_of(field_of(tool_call, "function"), "arguments")
                if isinstance(arguments, str) and arguments:
                    self.deltas.append(arguments)
            text = field_of(choice, "text")  # legacy completions stream text in choices
            if isinstance(text, str) and text:
                self.deltas.append(text)

    def _take_finish_reason(self, choice: Any) -> None:
        """
        A choice's ``finish_reason`` is its end state: ``length`` (cut by the token bound) is
        the Chat form of an incomplete response; any other reason means it completed, so a
        stream read to its end without usage is not mistaken for an abandoned one.
        """
        reason = field_of(choice, "finish_reason")
        if isinstance(reason, str) and self.status != "incomplete":
            self.status = "incomplete" if reason == "length" else "completed"

    def absorb(self, other: Observation) -> None:
        """Take the final state a later lookup saw for this (background) call's object."""
        self.received = True
        self.status = other.status
        self.usage = other.usage
        self.usage_problem = other.usage_problem
        self.final_response = other.final_response or self.final_response
        self.web_search_calls = other.web_search_calls
        self.response_model = other.response_model or self.response_model
        self.served_tier = other.served_tier or self.served_tier
        self.deltas.extend(other.deltas)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def final_text(self) -> str | None:
        """The text the last response produced (Responses output, Chat/Completions choices)."""
        parts: list[str] = []
        response = self.final_response
        for item in field_of(response, "output") or ():
            for content in field_of(item, "content") or ():
                text = field_of(content, "text")
                if isinstance(text, str):
                    parts.append(text)
        for choice in field_of(response, "choices") or ():
            text = field_of(field_of(choice, "message"), "content")
            if not isinstance(text, str):
                text = field_of(choice, "text")
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts) or None


def text_delta_observer(seen: Observation, observe: Callable[[Any], None]) -> Callable[[Any], None]:
    """
    What a typed stream's loop calls per event: a text delta event (`TEXT_DELTA_EVENTS`) is
    taken here, in one call (half the time of going through *observe*: a stream's overhead is
    mostly this per-event work); any other event goes to *observe*.
    """
    append = seen.deltas.append

    def on_event(obj: Any) -> None:
        values = getattr(obj, "__dict__", None)
        if values is not None:
            kind = values.get("type")
            if isinstance(kind, str) and kind in TEXT_DELTA_EVENTS:
                delta = values.get("delta")
                if isinstance(delta, str):
                    append(delta)
                    return
        observe(obj)

    return on_event
