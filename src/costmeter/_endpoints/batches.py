"""
The Batch API (``client.batches``): requests from an uploaded JSONL file, billed at Batch rates.

How a batch is billed, and how costmeter follows it without making a single extra API call:

1. ``files.create(purpose="batch")`` (``POST /files``) bills nothing. When the client uploads the
   JSONL itself, costmeter reads the lines it is sending and remembers their summed worst case
   (each line estimated by its own endpoint module, at Batch rates) under the returned file id,
   in a small memo bounded by bytes.
2. ``batches.create`` (``POST /batches``) returns a ``validating`` batch with no usage. It
   reserves that worst case in the active budgets when the input file was uploaded through this
   process; otherwise no worst case is known and the call's reservation is ``None`` (inside a
   budget, refused unless the budget allows unpriced calls). The call then stays pending, like
   a background response, keyed by the batch id.
3. ``batches.retrieve``/``batches.cancel`` (lookups) finish it when they see a terminal status
   (``completed``, ``failed``, ``expired``, ``cancelled``): the batch is priced once per batch
   id from ``Batch.usage`` at Batch rates (half the standard rate for most models), whichever
   client of the process sees it first.
4. A terminal batch without ``usage`` (created before September 2025) stays pending until the
   caller downloads its output file (``files.content(output_file_id)``): the per-line
   ``response.body.usage`` of that file is summed and billed. costmeter never downloads it
   itself.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from costmeter._endpoints import Endpoint, Request, Reserve, endpoint_for
from costmeter._endpoints._common import parts_cost
from costmeter._errors import UnknownModelError
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation, field_of
from costmeter._pricing import Cost, cost_of
from costmeter._usage import Usage, UsageError, usage_from

__all__ = [
    "ENDPOINTS",
    "BATCH_TIER",
    "BatchesEndpoint",
    "FileContentEndpoint",
    "FileWorstCase",
    "FilesUploadEndpoint",
    "worst_case_of_file",
]

#: The service tier batches are billed at.
BATCH_TIER = "batch"
#: Batch states after which nothing more is billed (``openai/types/batch.py``).
BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: The status a terminal batch without usage waits in until its output file is read.
AWAITING_OUTPUT = "awaiting_output_file"
_MEMO_BYTES = 1 << 20  # worst cases of uploaded batch files, and output file -> batch links
_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its strings (objects, dict slots)
_MAX_REASONS = 8
#: Input files up to this size have their lines' input tokens counted exactly (~2.5 s at most).
COUNT_UP_TO = 8 << 20


@dataclass(frozen=True, slots=True)
class FileWorstCase:
    """
    The summed worst case of a batch input file's lines, at Batch rates.

    ``cost_usd`` is ``None`` when a line could not be priced (its endpoint is not metered, its
    model has no price): the batch's worst case is then unknown. ``model`` is the lines' model
    (a batch holds one) for pricing the batch's usage later.
    """

    cost_usd: Decimal | None
    input_tokens: int
    lines: int
    complete: bool
    reasons: tuple[str, ...]
    model: str | None

    def size(self) -> int:
        return _ENTRY_OVERHEAD + len(self.model or "") + sum(len(r) for r in self.reasons)


class _Memo:
    """A thread-safe LRU dict bounded by the bytes its entries take, not by their count."""

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def put(self, key: str, value: Any, size: int) -> None:
        size += len(key)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self._max and self._entries:
                _key, (_value, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def get(self, key: object) -> Any:
        if not isinstance(key, str):
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_input_files = _Memo(_MEMO_BYTES)  # input file id -> FileWorstCase
_output_files = _Memo(_MEMO_BYTES)  # output file id -> (batch id, model) awaiting its usage


def clear_memos() -> None:
    """Forget every remembered batch file (tests)."""
    _input_files.clear()
    _output_files.clear()


# -- worst case of an input file ----------------------------------------------------------------


def _line_worst_case(number: int, raw: bytes, bound_input: bool) -> tuple[Reserve, str | None]:
    """
    One JSONL line's worst case at Batch rates, by the module that meters its endpoint. With
    *bound_input*, the line's input tokens are bounded by its body's byte length instead of
    being counted (every token covers at least one byte of text, and the JSON around the text
    outweighs the message framing tokens): a true worst case, without the tokenizer's cost.
    """
    try:
        line = json.loads(raw)
    except ValueError:
        return Reserve(None, complete=False, reasons=(f"line {number}: not JSON",)), None
    url, body = field_of(line, "url"), field_of(line, "body")
    method = field_of(line, "method") or "POST"
    if not (isinstance(url, str) and isinstance(body, Mapping) and isinstance(method, str)):
        return Reserve(None, complete=False, reasons=(f"line {number}: no url/body",)), None
    path = url.split("?", 1)[0].removeprefix("/v1")
    found = endpoint_for(method, path)
    model = field_of(body, "model")
    model = model if isinstance(model, str) and model else None
    if found is None or found[1] is not None:
        return Reserve(None, complete=False, reasons=(f"line {number}: {url} not metered",)), model
    endpoint = found[0]
    # The line is served at the Batch tier: estimate it there (each endpoint prices the worst
    # case at the requested tier, and at the dearer standard rates if the tier is unpriced).
    request = Request(
        api=endpoint.api,
        method="post",
        path=path,
        body={**body, "service_tier": BATCH_TIER},
        exact_input_tokens=len(raw) if bound_input else None,
    )
    return endpoint.estimate(request), model


def worst_case_of_file(content: bytes, *, count_up_to: int = COUNT_UP_TO) -> FileWorstCase:
    """
    The summed worst case of a batch input file (JSONL, one request per line), at Batch rates.
    Files larger than *count_up_to* bytes have their input bounded by bytes, not counted
    (tokenizing runs at ~3.5 MB/s; a batch file may hold 200 MB). Pure: it reads *content* only.
    """
    total: Decimal | None = ZERO
    tokens = 0
    lines = 0
    complete = True
    reasons: list[str] = []
    model: str | None = None
    bound_input = len(content) > count_up_to
    if bound_input:
        reasons.append("input_bounded_by_bytes")
    with money_math():
        for number, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            lines += 1
            reserve, line_model = _line_worst_case(number, raw, bound_input)
            model = model or line_model
            tokens += reserve.input_tokens or 0
            complete = complete and reserve.complete
            reasons.extend(r for r in reserve.reasons if len(reasons) < _MAX_REASONS)
            if reserve.cost_usd is None or total is None:
                total = None
                if reserve.cost_usd is None and not reserve.reasons and len(reasons) < _MAX_REASONS:
                    reasons.append(f"line {number}: model not priced")
            else:
                total += reserve.cost_usd
    return FileWorstCase(total, tokens, lines, complete, tuple(reasons), model)


# -- files.create: remember what the client uploads ---------------------------------------------


class FilesUploadEndpoint(Endpoint):
    """
    ``POST /files`` bills nothing, but a ``purpose="batch"`` upload is the only place the
    client sees a batch's requests: its lines' worst case is remembered under the file id.
    """

    api = "files.upload"
    billed: ClassVar[bool] = False  # the core emits no event and reserves nothing
    needs_model: ClassVar[bool] = False
    paths = (("post", r"/files"),)

    def estimate(self, request: Request) -> Reserve:
        return Reserve(cost_usd=ZERO, input_tokens=0)

    def observe(self, seen: Observation, obj: Any) -> None:
        seen.received = True
        file_id = field_of(obj, "id")
        if isinstance(file_id, str) and file_id:
            seen.response_id = file_id
        seen.take_status("completed")

    def finished(self, request: Request, seen: Observation) -> None:
        """The upload succeeded: remember its lines' worst case under the new file id."""
        remember_upload(request, seen)

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        remember_upload(request, seen)  # for a core that bills (and logs) unbilled routes
        return Usage()

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        return _free(model)


def remember_upload(request: Request, seen: Observation) -> None:
    """
    Remember the worst case of a batch input file the client uploaded (its content is in
    *request*, the id the API gave it in *seen*). Files of other purposes are not read.
    """
    if request.body.get("purpose") != "batch" or not seen.response_id:
        return
    content = next((f.content for f in request.files if f.content is not None), None)
    if content is None:
        return
    worst = worst_case_of_file(content)
    _input_files.put(seen.response_id, worst, worst.size())


def _free(model: str) -> Cost:
    return parts_cost(source="free", priced_as=model)


# -- batches.create / retrieve / cancel ---------------------------------------------------------


def _batch_model(batch: Any) -> str | None:
    model = field_of(batch, "model")
    if isinstance(model, str) and model:
        return model
    worst = _input_files.get(field_of(batch, "input_file_id"))
    return worst.model if isinstance(worst, FileWorstCase) else None


class BatchesEndpoint(Endpoint):
    """``POST /batches`` creates a pending call; retrieve/cancel finish it (see the module)."""

    api = "batches"
    needs_model: ClassVar[bool] = False  # the model is in the input file's lines
    paths = (("post", r"/batches"),)
    lookups = (("get", r"/batches/([^/]+)"), ("post", r"/batches/([^/]+)/cancel"))

    def estimate(self, request: Request) -> Reserve:
        worst = _input_files.get(request.body.get("input_file_id"))
        if not isinstance(worst, FileWorstCase):
            return Reserve(None, complete=False, reasons=("input_file_not_seen",))
        return Reserve(worst.cost_usd, worst.input_tokens, worst.complete, worst.reasons)

    def observe(self, seen: Observation, obj: Any) -> None:
        seen.received = True
        batch_id = field_of(obj, "id")
        if not isinstance(batch_id, str) or not batch_id:
            return
        seen.response_id = batch_id
        seen.background = True  # billed when a lookup sees it finished, not now
        seen.final_response = obj
        seen.take_model(_batch_model(obj))
        seen.served_tier = BATCH_TIER  # every line is served (and billed) at the Batch tier
        status = field_of(obj, "status")
        if status not in BATCH_TERMINAL:
            seen.take_status(status)
            return
        usage = field_of(obj, "usage")
        output_file = field_of(obj, "output_file_id")
        if usage is not None:
            seen.take_usage(usage)
        elif isinstance(output_file, str) and output_file:
            # No usage on the batch (created before Sept 2025): its output file's lines carry
            # it. Stay pending until the caller reads that file.
            link = (batch_id, seen.response_model)
            _output_files.put(output_file, link, _ENTRY_OVERHEAD + len(batch_id))
            seen.take_status(AWAITING_OUTPUT)
            return
        else:
            seen.take_usage(Usage())  # nothing ran (failed validation, cancelled early)
        seen.take_status(status)

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """A finished batch reporting no usage and no output file ran nothing: nothing billed."""
        return Usage()

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        return batch_cost(model, usage)


def batch_cost(model: str, usage: Usage) -> Cost:
    """
    *usage* at Batch rates; at standard rates (dearer: never an undercharge) for a model
    whose price source publishes no Batch rates (its `Cost.service_tier` then says so).
    """
    try:
        return cost_of(model, usage, service_tier=BATCH_TIER)
    except UnknownModelError:
        return cost_of(model, usage)


# -- files.content: the output file of a batch without usage ------------------------------------


def _file_bytes(obj: Any) -> bytes | None:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    try:
        content = field_of(obj, "content")
    except Exception:  # a streamed body not read yet: nothing to take
        return None
    return content if isinstance(content, bytes) else None


def _sum(usages: Iterable[Usage]) -> Usage:
    """The token counts of several lines' usage added up (each line is billed)."""
    total = Usage()
    for usage in usages:
        total = Usage(
            input_tokens=total.input_tokens + usage.input_tokens,
            cached_input_tokens=total.cached_input_tokens + usage.cached_input_tokens,
            cache_write_input_tokens=total.cache_write_input_tokens
            + usage.cache_write_input_tokens,
            output_tokens=total.output_tokens + usage.output_tokens,
            reasoning_tokens=total.reasoning_tokens + usage.reasoning_tokens,
            audio_input_tokens=total.audio_input_tokens + usage.audio_input_tokens,
            audio_output_tokens=total.audio_output_tokens + usage.audio_output_tokens,
        )
    return total


def output_file_usage(content: bytes) -> tuple[Usage, str | None]:
    """The summed ``response.body.usage`` of a batch output file's successful lines."""
    usages: list[Usage] = []
    model: str | None = None
    for raw in content.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        response = field_of(line, "response")
        if field_of(response, "status_code") != 200:
            continue
        body = field_of(response, "body")
        model = model or field_of(body, "model")
        usage = field_of(body, "usage")
        if usage is None:
            continue
        try:
            usages.append(usage_from(usage))
        except UsageError:
            continue
    return _sum(usages), model if isinstance(model, str) else None


class FileContentEndpoint(Endpoint):
    """
    ``GET /files/{id}/content``: bills nothing itself, but when the file is the output of a
    batch that reported no usage, its lines' usage finishes (and bills) that batch.
    """

    api = "batches"
    lookups = (("get", r"/files/([^/]+)/content"),)

    def observe(self, seen: Observation, obj: Any) -> None:
        seen.received = True
        link = _output_files.get(seen.response_id)
        if link is None:
            return
        content = _file_bytes(obj)
        if content is None:
            return
        batch_id, model = link
        usage, line_model = output_file_usage(content)
        seen.response_id = batch_id  # the pending call is the batch's
        seen.background = True
        seen.served_tier = BATCH_TIER
        seen.take_model(model or line_model)
        seen.take_usage(usage)
        seen.take_status("completed")

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        return batch_cost(model, usage)


ENDPOINTS = (FilesUploadEndpoint(), BatchesEndpoint(), FileContentEndpoint())
