"""Per-key requests-per-minute limits, shared by every instance through Redis.

A key's ``rpm_limit`` counts calls per calendar minute (UTC) in one counter all instances
increment (:class:`~tracking.proxy.shared_counters.Counters`); a call over the limit is refused
with 429 and a ``Retry-After`` up to the next minute, before its body reaches the upstream. A
calendar window admits at most ``2 x rpm_limit`` calls in any 60 s that straddle a minute
boundary; that is the price of one atomic counter per minute instead of a log of timestamps.
"""

from __future__ import annotations

from .auth import Principal
from .errors import ProxyError
from .shared_counters import Counters, seconds_text

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    async def admit(self, principal: Principal) -> None:
        limit = principal.rpm_limit
        key = principal.budget_key  # its first hash: the minute's count survives a regeneration
        if limit is None or key is None:
            return
        wait = await self.counters.hit_rpm(f"key:{key}", limit)
        if wait is not None:
            raise ProxyError(
                429,
                f"rate limit reached for this key: {limit} requests per minute",
                type="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": seconds_text(wait)},
                reason="rate",
                retry=True,
            )
