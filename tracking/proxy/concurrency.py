"""Per-key concurrency: at most ``general_settings.max_parallel_requests_per_key`` edits of one
caller in flight on this instance, so one key cannot take every upstream connection (or every
upload buffer) of the proxy. Over the limit the request is refused with 429 before its body is
read. The count is per instance (several instances each allow that many): it bounds this
process's resources, which is what it is for; budgets and rpm are the shared limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .auth import Principal
from .errors import ProxyError

__all__ = ["ParallelLimit"]


class ParallelLimit:
    """Counts each caller's edits in flight; None means no limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    @contextmanager
    def hold(self, principal: Principal) -> Iterator[None]:
        """Count one edit of ``principal`` while the block runs, or refuse it with 429."""
        if self.limit is None:
            yield
            return
        caller = principal.key_hash or principal.kind  # the master key and an open proxy: one each
        count = self._in_flight.get(caller, 0)
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
        try:
            yield
        finally:  # one event loop per process: no lock needed between check and update
            left = self._in_flight[caller] - 1
            if left:
                self._in_flight[caller] = left
            else:
                del self._in_flight[caller]
