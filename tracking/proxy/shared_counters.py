"""Counters several proxy instances share through Redis: per-key rpm windows and budget counters.

Every change is one atomic Redis operation (INCR, or a Lua script for check-and-reserve), and
every key expires, so a crashed instance leaves nothing behind for long. Money is counted in
integer units of 1e-8 USD (:data:`UNITS_PER_USD`), rounded up, so a counter never under-states.

Budget counters start from the ledger: when a counter is missing (first use, or idle for
:data:`IDLE_TTL` seconds) the caller supplies what the ledger says was spent and the script seeds
the counter with it, unless another instance seeded it first. A reservation is admitted only if
``counter + amount <= limit``, in the same script, so two instances can never both take the last
of a budget.

Without Redis (no ``redis_url``), or while it is down, the same logic runs on counters in this
process (:class:`LocalCounters`): one instance stays exact, several each enforce the limits alone
(see docs/proxy.md for what that allows). A Redis error never fails a call: the first is logged as a
warning, local counters are used, and Redis is tried again after ``retry_interval`` seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol, TypeVar

from ..redis_outage import RedisOutage

__all__ = [
    "IDLE_TTL",
    "UNITS_PER_USD",
    "Counters",
    "LocalCounters",
    "RedisCounters",
    "to_units",
]

log = logging.getLogger("tracking.proxy")

T = TypeVar("T")

UNITS_PER_USD = 100_000_000
#: A budget counter nobody touched for this long expires, and is seeded again from the ledger.
IDLE_TTL = 3600
_RPM_TTL = 120

#: -1: the counter is missing and needs a seed; 0: refused; 1: reserved. Second value: the
#: counter after the operation (before it, when refused).
_RESERVE = """
local current = redis.call('GET', KEYS[1])
if not current then
  if ARGV[4] == '' then return {-1, 0} end
  current = ARGV[4]
  redis.call('SET', KEYS[1], current, 'EX', ARGV[3])
end
current = tonumber(current)
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if current >= limit or current + amount > limit then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {0, current}
end
local after = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, after}
"""

#: Settling or releasing adjusts only a live counter: a missing one is seeded from the ledger.
_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


def to_units(usd: Decimal) -> int:
    """USD as counter units, rounded up (a counter never under-states)."""
    return int((usd * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


class Counters(Protocol):
    async def hit_rpm(self, name: str, limit: int) -> float | None:
        """Count one request of this minute; None when admitted, else seconds to wait."""
        ...

    async def reserve(self, name: str, amount: int, limit: int, seed: int | None) -> int | None:
        """Reserve ``amount`` if the counter stays within ``limit``: the counter after (admitted)
        or ``-(counter) - 1`` (refused: it would pass the limit, or the limit is reached). None
        means the counter is missing: call again with the ledger's figure as ``seed``."""
        ...

    async def adjust(self, name: str, delta: int) -> None: ...

    async def aclose(self) -> None: ...


def _minute_and_wait() -> tuple[int, float]:
    now = time.time()
    return int(now // 60), 60.0 - (now % 60)


class LocalCounters:
    """The counters in this process: exact for one instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rpm: dict[str, tuple[int, int]] = {}
        self._money: dict[str, tuple[int, float]] = {}  # name -> (units, monotonic expiry)

    async def hit_rpm(self, name: str, limit: int) -> float | None:
        minute, wait = _minute_and_wait()
        with self._lock:
            used_minute, count = self._rpm.get(name, (minute, 0))
            if used_minute != minute:
                count = 0
            if count >= limit:
                return wait
            self._rpm[name] = (minute, count + 1)
            return None

    async def reserve(self, name: str, amount: int, limit: int, seed: int | None) -> int | None:
        now = time.monotonic()
        with self._lock:
            entry = self._money.get(name)
            if entry is None or entry[1] <= now:
                if seed is None:
                    return None
                entry = (seed, 0.0)
            current = entry[0]
            if current >= limit or current + amount > limit:
                self._money[name] = (current, now + IDLE_TTL)
                return -current - 1
            self._money[name] = (current + amount, now + IDLE_TTL)
            return current + amount

    async def adjust(self, name: str, delta: int) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self._money.get(name)
            if entry is not None and entry[1] > now:
                self._money[name] = (entry[0] + delta, now + IDLE_TTL)

    async def aclose(self) -> None:
        pass


class RedisCounters:
    """The counters in Redis under ``prefix``, degrading to :class:`LocalCounters`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tracking:proxy:",
        socket_timeout: float = 1.0,
        retry_interval: float = 5.0,
    ) -> None:
        self.outage = RedisOutage(
            log,
            "proxy counters: Redis unavailable (%s); rate limits and budgets are enforced by "
            "this instance alone, retrying Redis in %.0f s",
            retry_interval,
        )
        import redis.asyncio

        self.prefix = prefix
        self.local = LocalCounters()
        self._client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry_on_timeout=False,
        )
        self._reserve: Any = self._client.register_script(_RESERVE)
        self._adjust: Any = self._client.register_script(_ADJUST)

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and local counters are used."""
        return self.outage.down

    async def _guarded(
        self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        if self.degraded:
            return await local()
        try:
            return await remote()
        except self.outage.errors as exc:
            self.outage.failed(exc)
            return await local()

    async def hit_rpm(self, name: str, limit: int) -> float | None:
        async def remote() -> float | None:
            minute, wait = _minute_and_wait()
            key = f"{self.prefix}rpm:{name}:{minute}"
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, _RPM_TTL)
            count = int((await pipe.execute())[0])
            if count > limit:
                # Counted first and given back when over: two instances can never both pass.
                await self._client.decr(key)
                return wait
            return None

        return await self._guarded(remote, lambda: self.local.hit_rpm(name, limit))

    async def reserve(self, name: str, amount: int, limit: int, seed: int | None) -> int | None:
        async def remote() -> int | None:
            status, value = await self._reserve(
                keys=[f"{self.prefix}budget:{name}"],
                args=[amount, limit, IDLE_TTL, "" if seed is None else seed],
            )
            if int(status) < 0:
                return None
            return int(value) if int(status) == 1 else -int(value) - 1

        return await self._guarded(remote, lambda: self.local.reserve(name, amount, limit, seed))

    async def adjust(self, name: str, delta: int) -> None:
        if delta == 0:
            return

        async def remote() -> None:
            await self._adjust(keys=[f"{self.prefix}budget:{name}"], args=[delta, IDLE_TTL])

        await self._guarded(remote, lambda: self.local.adjust(name, delta))

    async def aclose(self) -> None:
        await self._client.aclose()


def seconds_text(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
