"""Routing state: cooldowns, failure counts, in-flight calls, rpm/tpm usage and latencies.

:class:`MemoryState` keeps it in this process (the default). :class:`RedisState` keeps it in
Redis so that several processes route as one: every change is an atomic Redis command (INCR,
INCRBY, SET with PX, LPUSH+LTRIM) and every key expires, so a crashed process leaves nothing
behind for long. Reads for one routing decision are one pipelined round trip.

A Redis outage never fails a call: the first error is logged as a warning, the state falls back
to a local :class:`MemoryState` and Redis is tried again after ``retry_interval`` seconds (so a
dead server costs one fast failure per interval, not one per call). What was recorded locally
meanwhile is not copied back.

Usage windows are calendar minutes (``rpm`` / ``tpm`` count the current minute); failure counts
for ``allowed_fails`` expire ``failure_window`` seconds after the first failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..frozen import fast_init
from ..redis_outage import RedisOutage

__all__ = ["MemoryState", "RedisState", "RouterState", "Snapshot"]

log = logging.getLogger("tracking.router")

T = TypeVar("T")

#: In-flight counters expire if nothing touches them for this long (a process died mid-call).
_IN_FLIGHT_TTL = 600
_LATENCY_TTL = 3600
_USAGE_TTL = 120


@fast_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a strategy may look at, for the candidate deployments of one decision."""

    cooling: Mapping[str, float]  #: deployment id -> seconds of cooldown left (only those cooling)
    in_flight: Mapping[str, int]
    rpm: Mapping[str, int]  #: requests started this minute
    tpm: Mapping[str, int]  #: tokens used this minute
    latency_ms: Mapping[str, tuple[float, ...]]  #: recent latencies, newest first


class RouterState(Protocol):
    """Where routing state lives; every method is safe to call from any thread."""

    def snapshot(self, ids: Sequence[str]) -> Snapshot: ...

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        """Count a call starting (in flight, this minute's requests); False, counting nothing,
        when the deployment's rpm limit is already reached."""
        ...

    def end(self, deployment_id: str) -> None: ...

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None: ...

    def record_failure(self, deployment_id: str) -> int:
        """Count a failure; returns the failures within the failure window."""
        ...

    def cool_down(self, deployment_id: str, seconds: float) -> None: ...

    def close(self) -> None: ...


def _minute() -> int:
    return int(time.time() // 60)


class MemoryState:
    """Routing state in this process."""

    def __init__(self, *, latency_window: int = 10, failure_window: float = 60.0) -> None:
        self.latency_window = latency_window
        self.failure_window = failure_window
        self._lock = threading.Lock()
        self._cooling: dict[str, float] = {}  # id -> monotonic deadline
        self._failures: dict[str, tuple[int, float]] = {}  # id -> (count, window deadline)
        self._in_flight: dict[str, int] = {}
        self._usage: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens)
        self._latency: dict[str, deque[float]] = {}

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        now = time.monotonic()
        minute = _minute()
        with self._lock:
            cooling = {i: self._cooling[i] - now for i in ids if self._cooling.get(i, 0) > now}
            usage = {i: u for i in ids if (u := self._usage.get(i)) and u[0] == minute}
            return Snapshot(
                cooling=cooling,
                in_flight={i: self._in_flight.get(i, 0) for i in ids},
                rpm={i: usage[i][1] if i in usage else 0 for i in ids},
                tpm={i: usage[i][2] if i in usage else 0 for i in ids},
                latency_ms={i: tuple(reversed(self._latency.get(i, ()))) for i in ids},
            )

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        minute = _minute()
        with self._lock:
            used_minute, requests, tokens = self._usage.get(deployment_id, (minute, 0, 0))
            if used_minute != minute:
                requests, tokens = 0, 0
            if rpm_limit is not None and requests >= rpm_limit:
                return False
            self._usage[deployment_id] = (minute, requests + 1, tokens)
            self._in_flight[deployment_id] = self._in_flight.get(deployment_id, 0) + 1
            return True

    def end(self, deployment_id: str) -> None:
        with self._lock:
            self._in_flight[deployment_id] = max(0, self._in_flight.get(deployment_id, 0) - 1)

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None:
        minute = _minute()
        with self._lock:
            if latency_ms is not None:
                window = self._latency.get(deployment_id)
                if window is None:
                    window = self._latency[deployment_id] = deque(maxlen=self.latency_window)
                window.append(latency_ms)
            if tokens:
                used_minute, requests, used = self._usage.get(deployment_id, (minute, 0, 0))
                if used_minute != minute:
                    requests, used = 0, 0
                self._usage[deployment_id] = (minute, requests, used + tokens)

    def record_failure(self, deployment_id: str) -> int:
        now = time.monotonic()
        with self._lock:
            count, deadline = self._failures.get(deployment_id, (0, 0.0))
            if deadline <= now:
                count, deadline = 0, now + self.failure_window
            self._failures[deployment_id] = (count + 1, deadline)
            return count + 1

    def cool_down(self, deployment_id: str, seconds: float) -> None:
        with self._lock:
            self._cooling[deployment_id] = time.monotonic() + seconds
            self._failures.pop(deployment_id, None)

    def close(self) -> None:
        pass


class RedisState:
    """Routing state in Redis under ``prefix``, degrading to a local :class:`MemoryState`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tracking:router:",
        latency_window: int = 10,
        failure_window: float = 60.0,
        socket_timeout: float = 0.25,
        retry_interval: float = 5.0,
        client: Any = None,
    ) -> None:
        self.outage = RedisOutage(
            log,
            "router state: Redis unavailable (%s); routing on local state, retrying Redis in "
            "%.0f s",
            retry_interval,
        )
        import redis

        self.prefix = prefix
        self.latency_window = latency_window
        self.failure_window = failure_window
        self.local = MemoryState(latency_window=latency_window, failure_window=failure_window)
        self._client = client or redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry_on_timeout=False,
        )

    # -- the outage guard: every operation runs through here ---------------------------------

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and local state is used."""
        return self.outage.down

    def _guarded(self, remote: Callable[[], T], local: Callable[[], T]) -> T:
        if self.degraded:
            return local()
        try:
            return remote()
        except self.outage.errors as exc:
            self.outage.failed(exc)
            return local()

    def _key(self, kind: str, deployment_id: str, *suffix: object) -> str:
        tail = "".join(f":{part}" for part in suffix)
        return f"{self.prefix}{kind}:{deployment_id}{tail}"

    # -- the RouterState protocol ------------------------------------------------------------

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        def remote() -> Snapshot:
            minute = _minute()
            pipe = self._client.pipeline(transaction=False)
            for i in ids:
                pipe.pttl(self._key("cooldown", i))
                pipe.get(self._key("inflight", i))
                pipe.get(self._key("rpm", i, minute))
                pipe.get(self._key("tpm", i, minute))
                pipe.lrange(self._key("latency", i), 0, self.latency_window - 1)
            values = pipe.execute()
            cooling: dict[str, float] = {}
            in_flight: dict[str, int] = {}
            rpm: dict[str, int] = {}
            tpm: dict[str, int] = {}
            latency: dict[str, tuple[float, ...]] = {}
            for index, i in enumerate(ids):
                ttl, flying, requests, tokens, recent = values[index * 5 : index * 5 + 5]
                if ttl is not None and ttl > 0:
                    cooling[i] = ttl / 1000
                in_flight[i] = max(0, int(flying or 0))
                rpm[i] = int(requests or 0)
                tpm[i] = int(tokens or 0)
                latency[i] = tuple(float(v) for v in recent)
            return Snapshot(cooling, in_flight, rpm, tpm, latency)

        return self._guarded(remote, lambda: self.local.snapshot(ids))

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        def remote() -> bool:
            rpm_key = self._key("rpm", deployment_id, _minute())
            flying_key = self._key("inflight", deployment_id)
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(rpm_key)
            pipe.expire(rpm_key, _USAGE_TTL)
            pipe.incr(flying_key)
            pipe.expire(flying_key, _IN_FLIGHT_TTL)
            requests = int(pipe.execute()[0])
            if rpm_limit is not None and requests > rpm_limit:
                # INCR first and give back when over: two processes can never both pass the
                # limit; at worst a borderline call is refused.
                pipe = self._client.pipeline(transaction=False)
                pipe.decr(rpm_key)
                pipe.decr(flying_key)
                pipe.execute()
                return False
            return True

        return self._guarded(remote, lambda: self.local.begin(deployment_id, rpm_limit))

    def end(self, deployment_id: str) -> None:
        def remote() -> None:
            self._client.decr(self._key("inflight", deployment_id))

        self._guarded(remote, lambda: self.local.end(deployment_id))

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None:
        def remote() -> None:
            pipe = self._client.pipeline(transaction=False)
            if latency_ms is not None:
                key = self._key("latency", deployment_id)
                pipe.lpush(key, f"{latency_ms:.3f}")
                pipe.ltrim(key, 0, self.latency_window - 1)
                pipe.expire(key, _LATENCY_TTL)
            if tokens:
                key = self._key("tpm", deployment_id, _minute())
                pipe.incrby(key, tokens)
                pipe.expire(key, _USAGE_TTL)
            pipe.execute()

        self._guarded(remote, lambda: self.local.record_success(deployment_id, latency_ms, tokens))

    def record_failure(self, deployment_id: str) -> int:
        def remote() -> int:
            key = self._key("fails", deployment_id)
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, max(1, round(self.failure_window)), nx=True)
            return int(pipe.execute()[0])

        return self._guarded(remote, lambda: self.local.record_failure(deployment_id))

    def cool_down(self, deployment_id: str, seconds: float) -> None:
        def remote() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._key("cooldown", deployment_id), "1", px=max(1, round(seconds * 1000)))
            pipe.delete(self._key("fails", deployment_id))
            pipe.execute()

        self._guarded(remote, lambda: self.local.cool_down(deployment_id, seconds))

    def close(self) -> None:
        self._client.close()
