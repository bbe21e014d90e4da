"""
A Redis budget ledger, shared by processes on many hosts: one hash per budget window.

A change is computed in Python (exact `Decimal`s) from the hash as read, then written by a Lua
compare-and-set script that applies it only if the hash's ``version`` is still the one read; on
a conflict it is read and computed again, until the ledger timeout.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from costmeter._admission import WindowState
from costmeter._errors import ConfigurationError, LedgerError
from costmeter._ledger import NEEDS_REDIS, Ledger, diff_fields, redact, scrub
from costmeter._windows import WINDOW_KEY

__all__ = ["RedisLedger"]

T = TypeVar("T")
# Redis keeps a finished window this long after it ends (for `costmeter budget show`).
_KEEP_PAST_WINDOWS_S = 35 * 24 * 3600

# Compare-and-set of one budget window's hash. KEYS[1]: the hash. ARGV: the version the caller
# read, the seconds the hash must live on (0: forever), the number of fields to set, then the
# field/value pairs to set, then the fields to delete. Returns 1 if applied, 0 on a conflict.
_CAS_SCRIPT = """
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] then
  return 0
end
local nset = tonumber(ARGV[3])
local i = 4
for _ = 1, nset do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
"""


class RedisLedger(Ledger):
    """
    A Redis database shared by processes on many hosts: one hash per budget window.

    Reads are plain ``HGETALL``; every write goes through one Lua compare-and-set script, so a
    change computed from a state another process has since changed is never applied (it is
    recomputed). Finished windows expire 35 days after they end.
    """

    persistent = True

    def __init__(self, url: str, timeout: float) -> None:
        try:
            import redis  # noqa: PLC0415  (only needed by Redis-backed budgets)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(NEEDS_REDIS.format(redact(url))) from exc
        from redis.backoff import ExponentialBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        self.url = url
        self.timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # One quick retry of a dropped connection (e.g. after a Redis restart), then give up:
        # a caller waits at most about twice the timeout, not redis-py's default backoff.
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            decode_responses=True,
        )
        self._cas: Any = self._client.register_script(_CAS_SCRIPT)

    @staticmethod
    def _key(budget: str, window: str) -> str:
        return f"costmeter:budget:{budget}:{window}"

    def _fail(self, exc: BaseException, what: str) -> LedgerError:
        detail = scrub(str(exc) or type(exc).__name__, self.url)
        return LedgerError(f"budget ledger {redact(self.url)} unavailable ({what}): {detail}")

    def transact(
        self,
        budget: str,
        window: str,
        change: Callable[[WindowState], T],
        keep_for: float | None = None,
        now: float | None = None,
    ) -> T:
        key = self._key(budget, window)
        # Relative to the caller's clock (not Redis's): the window ends *keep_for* s from now.
        ttl = 0 if keep_for is None else max(1, int(keep_for) + 1 + _KEEP_PAST_WINDOWS_S)
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                before: dict[str, str] = self._client.hgetall(key)
            except self._errors as exc:
                raise self._fail(exc, "read") from exc
            version = before.pop("version", "0")
            state = WindowState.from_fields(before)
            result = change(state)
            changed, removed = diff_fields(before, state.to_fields())
            if not changed and not removed:
                return result
            args: list[str | int] = [version, ttl, len(changed)]
            for name, value in changed.items():
                args += [name, value]
            args += removed
            try:
                applied = self._cas(keys=[key], args=args)
            except self._errors as exc:
                raise self._fail(exc, "write") from exc
            if applied == 1:
                return result
            attempt += 1
            if time.monotonic() > deadline:
                raise LedgerError(
                    f"budget ledger {redact(self.url)} unavailable (write): still contended "
                    f"after {attempt} attempts in {self.timeout:g} s"
                )
            # Back off a little (with jitter) so contending processes stop colliding.
            time.sleep(min(0.02, 0.0005 * attempt) * (0.5 + secrets.randbelow(100) / 100))

    def read(self, budget: str, window: str) -> WindowState:
        try:
            fields: dict[str, str] = self._client.hgetall(self._key(budget, window))
        except self._errors as exc:
            raise self._fail(exc, "read") from exc
        fields.pop("version", None)
        return WindowState.from_fields(fields)

    def windows(self, budget: str) -> list[str]:
        prefix = self._key(budget, "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        try:
            keys = list(self._client.scan_iter(match=pattern, count=500))
        except self._errors as exc:
            raise self._fail(exc, "read") from exc
        # A budget named "a:day" shares the prefix of "a": keep only well-formed window keys.
        found = (str(k)[len(prefix) :] for k in keys)
        return sorted(w for w in found if WINDOW_KEY.fullmatch(w))

    def reset(self, budget: str, window: str | None = None) -> int:
        names = self.windows(budget) if window is None else [window]
        if not names:
            return 0
        try:
            return int(self._client.delete(*(self._key(budget, w) for w in names)))
        except self._errors as exc:
            raise self._fail(exc, "reset") from exc
