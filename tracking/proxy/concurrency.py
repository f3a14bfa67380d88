"""Per-key concurrency and the upload bytes in flight.

Per-key concurrency: at most ``general_settings.max_parallel_requests_per_key`` edits of one
caller in flight on this instance, so one key cannot take every upstream connection (or every
upload buffer) of the proxy. Over the limit the request is refused with 429 before its body is
read. The count is per instance (several instances each allow that many): it bounds this
process's resources, which is what it is for; budgets and rpm are the shared limits. The
default is 100 (0 in the config: no limit).
"""

from __future__ import annotations

import asyncio
import contextlib

from .auth import Principal
from .errors import ProxyError
from .limits import mebibytes
from .memory import release_free_memory

__all__ = ["ParallelLimit", "UploadBytes", "UploadHold"]

#: Upload bytes seen since memory was last handed back, before it is worth doing again.
_RELEASE_AFTER = 16 * 1024 * 1024
#: Seconds after the last upload left at which memory is handed back again, if no upload has
#: started meanwhile: buffers the connection pool and the sinks drop a little later, and those
#: a busy process frees later still (a slow collection of a failed call's frames).
_LATER_PASSES = (1.0, 5.0)


class ParallelLimit:
    """Counts each caller's edits in flight; None means no limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    def hold(self, principal: Principal) -> _ParallelHold | contextlib.nullcontext[None]:
        """Count one edit of ``principal`` while the block runs, or refuse it with 429."""
        if self.limit is None:
            return _NO_HOLD
        # the master key and an open proxy: one each
        return _ParallelHold(self, principal.key_hash or principal.kind)

    def _enter(self, caller: str) -> None:
        count = self._in_flight.get(caller, 0)
        assert self.limit is not None
        if count >= self.limit:
            raise ProxyError(
                429,
                f"too many requests in flight for this key (at most {self.limit} at once on "
                "this proxy; general_settings.max_parallel_requests_per_key)",
                type="requests",
                code="too_many_parallel_requests",
                reason="rate",
                retry=True,  # refused before the body was read: one of the others will end
            )
        self._in_flight[caller] = count + 1

    def _leave(self, caller: str) -> None:
        # one event loop per process: no lock needed between check and update
        left = self._in_flight[caller] - 1
        if left:
            self._in_flight[caller] = left
        else:
            del self._in_flight[caller]


_NO_HOLD: contextlib.nullcontext[None] = contextlib.nullcontext()


class _ParallelHold:
    """One edit counted by :meth:`ParallelLimit.hold` while its block runs (a class, not a
    generator: it runs around every proxied call)."""

    __slots__ = ("_caller", "_limit")

    def __init__(self, limit: ParallelLimit, caller: str) -> None:
        self._limit, self._caller = limit, caller

    def __enter__(self) -> None:
        self._limit._enter(self._caller)

    def __exit__(self, *exc_info: object) -> None:
        self._limit._leave(self._caller)


class UploadBytes:
    """The request bytes of every edit in flight on this instance, capped at ``limit``.

    Each edit holds what it has received (or declared in Content-Length) until its call has
    finished, since its images live that long. An edit that would pass the cap is refused with
    429 (retry shortly) before more of its body is read; one that could never fit, with 413.
    When the last large upload has gone, freed memory is handed back to the system
    (:func:`~tracking.proxy.memory.release_free_memory`), so the process returns near its
    baseline after a burst of uploads.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.in_flight = 0
        self._since_release = 0

    def hold(self) -> UploadHold:
        """One edit's share, held while its ``with`` block runs (released at its end)."""
        return UploadHold(self)

    def _release(self, held: int) -> None:
        self.in_flight -= held
        if self.in_flight == 0 and self._since_release >= _RELEASE_AFTER:
            self._since_release = 0
            release_free_memory()
            loop = asyncio.get_running_loop()
            for delay in _LATER_PASSES:
                loop.call_later(delay, self._release_if_idle)

    def _release_if_idle(self) -> None:
        if self.in_flight == 0:
            release_free_memory()

    def _take(self, amount: int) -> None:
        limit = self.limit
        if limit is not None and self.in_flight + amount > limit:
            megabytes = mebibytes(limit)
            if amount > limit:
                raise ProxyError(
                    413,
                    f"request body too large: uploads in flight are capped at {megabytes} "
                    "(general_settings.max_inflight_upload_mb)",
                    code="request_too_large",
                    reason="size",
                )
            raise ProxyError(
                429,
                f"too many upload bytes in flight on this proxy (at most {megabytes} at once; "
                "general_settings.max_inflight_upload_mb); retry shortly",
                type="requests",
                code="upload_capacity_exceeded",
                headers={"retry-after": "1"},
                reason="size",
                retry=True,  # refused before more of the body was read: other uploads will end
            )
        self.in_flight += amount
        self._since_release += amount


class UploadHold:
    """One edit's share of :class:`UploadBytes`; a context manager that gives it back."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: UploadBytes) -> None:
        self._budget = budget
        self.held = 0

    def __enter__(self) -> UploadHold:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._budget._release(self.held)

    def grow_to(self, total: int) -> None:
        """Hold at least ``total`` bytes (refused with 429/413 past the cap)."""
        if total > self.held:
            self._budget._take(total - self.held)  # one event loop: no lock needed
            self.held = total
