"""Counters several proxy instances share through Redis: per-key rpm windows and budget counters.

Every change is one atomic Redis operation (INCR, or a Lua script for check-and-reserve), and
every counter expires. Each hold is recorded beside its counter, under its process's worker id,
by the script that places it, and a process whose lease is over (dead) has its holds released
by another's heartbeat within a minute (:mod:`.redis_holds`). Money is counted in
integer units of 1e-8 USD (:data:`UNITS_PER_USD`), rounded up, so a counter never under-states.

Budget counters start from the ledger: when a counter is missing (first use, or idle for
:data:`IDLE_TTL` seconds) the caller supplies what the ledger says was spent and the script seeds
the counter with it, unless another instance seeded it first. A reservation is admitted only if
``counter + amount <= limit``, in the same script, so two instances can never both take the last
of a budget.

Without Redis (no ``redis_url``) the same logic runs on counters in this process
(:class:`LocalCounters`, exact for one instance) or in the machine's file that the workers of
``tracking serve --workers N`` share (:mod:`.machine_counters`).

Every exchange is awaited on the event loop with ``redis.asyncio`` (never a blocking client), and
bounded by ``socket_timeout`` as a whole, so a Redis that stops answering holds a call for at most
that long and never the loop; the client's settings are the router's
(:func:`tracking.redis_outage.async_redis_client`).

Each instance keeps the reservations it holds that are not settled yet (its calls in flight),
whether Redis or the ledger admitted them, so wherever a budget is worked out from the ledger they
are added to it. A counter seeded again (missing: first use, idle, lost, or a dead process's
holds released) starts from the ledger's figure plus the holds recorded on it in Redis (every
instance's calls in flight), since each of them, when it settles, replaces its reservation on
that counter with its real cost. A call's row is written
(acknowledged) before its reservation settles, so the ledger's figure leaves out the calls in
flight (named by their request ids, :meth:`Counters.calls_in_flight`; with Redis, every
instance's), which their holds count:
it counted such a call twice, its row and its hold, when the counter was seeded between the two
(until 2026-12-06). A counter starts from that figure only if the calls in flight are still
those the ledger was read without (``calls``); else the ledger is read again
(:class:`~tracking.proxy.budgets.Budgets`).

A Redis error never fails a call: the first is logged as a warning and Redis is tried again
after ``retry_interval`` seconds. Meanwhile budgets are computed from the durable ledger: every
reservation re-reads what the ledger says was spent and adds this instance's reservations in
flight (those Redis admitted before the outage included), so instances that share the database
stay within a budget (calls in flight on another instance aside), and rpm windows are counted
per instance. Every hold taken and ended during the outage is kept and replayed, in order,
before Redis is used again, so the counters are exact after recovery; then the instance's holds
in flight that another took for dead meanwhile (an outage longer than the lease) are put back.
A Redis that restarted (its ``run_id`` changed) lost its counters and holds: nothing is
replayed; this instance's reservations in flight are recorded again, given to each counter
another instance seeded first (it could not know them), and counted by each seeded after.

A budget's counters reset (:meth:`RedisCounters.drop`, after its budget or its end user changed)
while Redis is away are remembered by the instance and deleted on recovery, restarted or not,
before it counts a call in Redis again: after the outage's changes are replayed (or its holds
put back), so the holds of calls still in flight stay recorded beside the counter and count in
its next seed, while what the old counter was given meanwhile is discarded (the ledger has it).
Until 2026-12-07 such a reset was only logged, and the counter kept from before the change was
trusted until it idled out. A budget counter may also carry the time its budget last changed
(``since``, from the key's or the end user's record, its ``updated_at``): a counter seeded
before it is seeded again, so the change holds on every instance even if the one that took it
dies before reaching Redis (a key's record has had that time since 2026-12-07; None, for a key
made before and not changed since, checks nothing: its counter is trusted until idle).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol, TypeVar

from ..redis_outage import RedisOutage, async_redis_client, is_cluster_url
from .redis_holds import ADD_HOLDS, ADJUST, BEAT, DEFAULT_LEASE_SECONDS, RELEASE, RESERVE

__all__ = [
    "IDLE_TTL",
    "SOCKET_TIMEOUT",
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
#: Seconds an operation with Redis may take as a whole by default
#: (``TRACKING_REDIS_TIMEOUT_SECONDS`` sets another for the proxy's counters).
SOCKET_TIMEOUT = 1.0
_RPM_TTL = 120


def to_units(usd: Decimal) -> int:
    """USD as counter units, rounded up (a counter never under-states)."""
    return int((usd * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


class Counters(Protocol):
    async def hit_rpm(self, name: str, limit: int) -> float | None:
        """Count one request of this minute; None when admitted, else seconds to wait."""
        ...

    async def reserve(
        self,
        name: str,
        amount: int,
        limit: int,
        seed: int | None,
        hold: object = None,
        calls: frozenset[str] | None = None,
        since: int | None = None,
    ) -> int | None:
        """Reserve ``amount`` if the counter stays within ``limit``: the counter after (admitted)
        or ``-(counter) - 1`` (refused: it would pass the limit, or the limit is reached). None
        means the counter is missing: call again with the ledger's figure as ``seed``, read
        without the ``calls`` in flight (:meth:`calls_in_flight`); None again when the calls in
        flight are no longer those (read again). ``hold`` names the reservation (the same object
        is given to :meth:`adjust` when it settles; its ``request_id``, when it has one, names
        its call among the calls in flight). ``since``: when the budget last changed, as its
        account record says (microseconds since 1970): in Redis a counter seeded before that
        counts as missing, should its reset (:meth:`drop`) never have reached Redis; the
        counters of one machine are always reset, and ignore it."""
        ...

    async def calls_in_flight(self, name: str) -> frozenset[str]:
        """The request ids of the calls whose reservations on ``name`` are not settled yet (those
        the counter, seeded, counts by their holds rather than by the ledger)."""
        ...

    async def adjust(self, name: str, delta: int, hold: object = None) -> None: ...

    async def drop(self, names: Sequence[str]) -> None:
        """Forget these budget counters: the next reservation seeds them from the ledger. For a
        budget changed by the management API: calls made while it was off never reached its
        counter, which must not be trusted again. (In Redis and in the workers' file the new
        counter starts with every instance's or worker's calls in flight on it, recorded there
        beside it, as any seeded counter does; in :class:`LocalCounters`, one instance's, the
        calls in flight of other instances sharing its ledger are left out of it: the count can
        stay below the truth by what those calls reserved, until the counter is next idle for
        :data:`IDLE_TTL`. With Redis away, the reset is
        remembered and done before Redis is used again; the holds recorded beside the counter,
        every worker's, are kept.)"""
        ...

    async def aclose(self) -> None: ...


def minute_and_wait() -> tuple[int, float]:
    now = time.time()
    return int(now // 60), 60.0 - (now % 60)


class LocalCounters:
    """The counters in this process: exact for one instance. Expired budget counters (past
    periods' included: one per end user with a daily budget per day) are forgotten, looked for
    once every :data:`IDLE_TTL` seconds, so a long-running proxy does not keep every day's.

    A counter seeded again (dropped when its budget changed, or idle) starts from the ledger's
    figure plus the reservations in flight on it, as Redis's does: each of them replaces its
    hold with its real cost when it settles, on a counter that never had the hold. Before, a
    budget changed while calls were in flight under-counted their holds, and the budget could
    be passed by as much."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rpm: dict[str, tuple[int, int]] = {}
        self._money: dict[str, tuple[int, float]] = {}  # name -> (units, expiry by clock)
        self._in_flight = HoldsInFlight()
        self._clock = clock
        self._swept = clock()

    def _forget_expired(self, now: float) -> None:
        """(Under the lock.) Drop expired budget counters, once every ``IDLE_TTL``."""
        if now - self._swept < IDLE_TTL:
            return
        self._swept = now
        for name in [name for name, (_, expiry) in self._money.items() if expiry <= now]:
            del self._money[name]

    async def hit_rpm(self, name: str, limit: int) -> float | None:
        minute, wait = minute_and_wait()
        with self._lock:
            used_minute, count = self._rpm.get(name, (minute, 0))
            if used_minute != minute:
                count = 0
            if count >= limit:
                return wait
            self._rpm[name] = (minute, count + 1)
            return None

    async def reserve(
        self,
        name: str,
        amount: int,
        limit: int,
        seed: int | None,
        hold: object = None,
        calls: frozenset[str] | None = None,
        since: int | None = None,
    ) -> int | None:
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            entry = self._money.get(name)
            if entry is None or entry[1] <= now:
                if seed is None or not self._in_flight.still(name, calls):
                    return None
                entry = (seed + self._in_flight.in_flight(name), 0.0)
            current = entry[0]
            if current >= limit or current + amount > limit:
                self._money[name] = (current, now + IDLE_TTL)
                return -current - 1
            self._money[name] = (current + amount, now + IDLE_TTL)
            self._in_flight.taken(name, hold, amount)
            return current + amount

    async def calls_in_flight(self, name: str) -> frozenset[str]:
        return self._in_flight.calls(name)

    async def adjust(self, name: str, delta: int, hold: object = None) -> None:
        now = self._clock()
        with self._lock:
            entry = self._money.get(name)
            if entry is not None and entry[1] > now:
                self._money[name] = (entry[0] + delta, now + IDLE_TTL)
            self._in_flight.settled(name, hold)

    async def drop(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                self._money.pop(name, None)

    async def aclose(self) -> None:
        pass


class HoldsInFlight:
    """This instance's reservations not settled yet, by counter: none of them is in the ledger
    yet, so a counter seeded from the ledger adds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: name -> {id(hold): units}
        self._holds: dict[str, dict[int, int]] = {}
        #: id(hold) -> its call's request id (holds that name one)
        self._calls: dict[int, str] = {}
        #: (name, id(hold)) of the holds being settled (never put back meanwhile)
        self._ending: set[tuple[str, int]] = set()

    def taken(self, name: str, hold: object, amount: int) -> None:
        """``amount`` was admitted on ``name`` for ``hold``: in flight until it settles."""
        if hold is None or not amount:
            return  # a reservation without a hold cannot be told apart when it settles
        with self._lock:
            self._take(name, hold, amount)

    def _take(self, name: str, hold: object, amount: int) -> None:
        """(Under the lock.)"""
        holds = self._holds.setdefault(name, {})
        holds[id(hold)] = holds.get(id(hold), 0) + amount
        request_id = getattr(hold, "request_id", None)
        if isinstance(request_id, str):
            self._calls[id(hold)] = request_id

    def in_flight(self, name: str) -> int:
        """What this instance's reservations on ``name`` not settled yet hold."""
        with self._lock:
            return sum(self._holds.get(name, {}).values())

    def calls(self, name: str) -> frozenset[str]:
        """The request ids of the calls holding on ``name``, not settled yet."""
        with self._lock:
            return self._calls_on(name)

    def _calls_on(self, name: str) -> frozenset[str]:
        """(Under the lock.)"""
        holds = self._holds.get(name, {})
        return frozenset(self._calls[h] for h in holds if h in self._calls)

    def still(self, name: str, calls: frozenset[str] | None) -> bool:
        """Whether the calls holding on ``name`` are ``calls`` (None: not asked)."""
        return calls is None or self.calls(name) == calls

    def units(self, name: str, hold: object) -> int:
        """What ``hold`` holds on ``name`` (0: nothing, or not known here)."""
        with self._lock:
            return self._holds.get(name, {}).get(id(hold), 0)

    @staticmethod
    def key(hold: object) -> str:
        """``hold``'s name among this process's holds: ``<its id>|<its call's request id>``."""
        request_id = getattr(hold, "request_id", None)
        return f"{id(hold)}|{request_id if isinstance(request_id, str) else ''}"

    def each_hold(self) -> list[tuple[str, str, int]]:
        """(counter, :meth:`key`, units) of every hold in flight that is not being settled."""
        with self._lock:
            return [
                (name, f"{held}|{self._calls.get(held, '')}", units)
                for name, holds in self._holds.items()
                for held, units in holds.items()
                if (name, held) not in self._ending
            ]

    def ending(self, name: str, hold: object) -> None:
        """``hold`` is being settled on ``name``: :meth:`each_hold` leaves it out."""
        with self._lock:
            self._ending.add((name, id(hold)))

    def settled(self, name: str, hold: object) -> None:
        """The reservation ``hold`` is over (its real cost is in the ledger now)."""
        with self._lock:
            self._ending.discard((name, id(hold)))
            holds = self._holds.get(name)
            if holds is not None and holds.pop(id(hold), None) is not None and not holds:
                del self._holds[name]
            if not any(id(hold) in held for held in self._holds.values()):
                self._calls.pop(id(hold), None)


#: What a budget counter missed while Redis was away, replayed in order on recovery: a hold
#: taken (``took``: counter, hold's key, the units taken, the hold's units then) or ended
#: (``ended``: counter, hold's key, the change while the hold is counted, the change when it is
#: not).
Missed = tuple[str, str, str, int, int | str]


class OutageBudgets(HoldsInFlight):
    """This instance's reservations in flight (admitted by Redis or, while it was away, from the
    ledger's figure), the budgets worked out from them while Redis is away, and the changes Redis
    missed, to replay on recovery."""

    def __init__(self) -> None:
        super().__init__()
        self._missed: list[Missed] = []
        #: Counters reset (:meth:`RedisCounters.drop`) while Redis was away: deleted on recovery.
        self._resets: set[str] = set()

    def reserve(
        self,
        name: str,
        amount: int,
        limit: int,
        seed: int | None,
        hold: object,
        calls: frozenset[str] | None = None,
    ) -> int | None:
        """Reserve from the ledger's figure (``seed``, read without ``calls``) plus this
        instance's reservations in flight on ``name``; kept to replay."""
        if seed is None:
            return None  # always from the ledger while Redis is away
        with self._lock:
            if calls is not None and self._calls_on(name) != calls:
                return None  # a call settled, or began, since the ledger was read: again
            current = seed + sum(self._holds.get(name, {}).values())
            if current >= limit or current + amount > limit:
                return -current - 1
            self._take(name, hold, amount)
            key = self.key(hold) if hold is not None else ""
            total = self._holds.get(name, {}).get(id(hold), amount)  # the hold's, grown or not
            self._missed.append(("took", name, key, amount, total))
            return current + amount

    def ended(self, name: str, hold: object, counted: int, uncounted: str) -> None:
        """``hold`` ended on ``name`` while Redis was away: the counter's change, while the hold is
        counted there and when it is not."""
        key = self.key(hold) if hold is not None and self.units(name, hold) else ""
        with self._lock:
            self._missed.append(("ended", name, key, counted, uncounted))
        self.settled(name, hold)

    def missed(self) -> list[Missed]:
        with self._lock:
            return list(self._missed)

    def forget_missed(self) -> None:
        with self._lock:
            self._missed.clear()

    def reset_missed(self, names: Sequence[str]) -> None:
        """These counters were reset while Redis was away: they are deleted on recovery, after
        what they missed meanwhile is replayed (their holds still in flight stay recorded; the
        counter's figure is discarded: the next seed reads the ledger, which has the rest)."""
        with self._lock:
            self._resets.update(names)

    def resets(self) -> list[str]:
        with self._lock:
            return sorted(self._resets)

    def reset_done(self, names: Sequence[str]) -> None:
        with self._lock:
            self._resets.difference_update(names)

    def replayed(self) -> None:
        """The first change missed is in Redis now."""
        with self._lock:
            del self._missed[0]


class RedisCounters:
    """The counters in Redis under ``prefix``, degrading to :class:`LocalCounters`. Each hold is
    recorded beside its counter under this process's worker id, whose lease the process renews
    every quarter of ``lease`` seconds; the holds of a worker whose lease is over are released
    (:mod:`.redis_holds`)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tracking:proxy:",
        socket_timeout: float = SOCKET_TIMEOUT,
        retry_interval: float = 5.0,
        lease: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.outage = RedisOutage(
            log,
            "proxy counters: Redis unavailable (%s); rate limits are counted by this instance "
            "alone and budgets from the ledger, retrying Redis in %.0f s",
            retry_interval,
        )
        self.prefix = prefix
        #: Whether the Redis is a Redis Cluster (a ``redis+cluster://`` URL).
        self.cluster = is_cluster_url(url)
        #: What each key starts with: on a cluster the prefix is a hash tag, so that every key
        #: (a script may touch a counter's, a worker's and the registry together) is in one slot.
        self.key_prefix = "{" + prefix + "}" if self.cluster else prefix
        self.socket_timeout = socket_timeout
        self.lease = lease
        #: This process's name among the workers sharing the counters.
        self.worker = uuid.uuid4().hex[:16]
        self.local = LocalCounters()  # rpm windows while Redis is away
        self._outage = OutageBudgets()
        self._merging = asyncio.Lock()
        #: The server's run id when first reached; a different one after an outage: restarted.
        self._run_id: str | None = None
        #: ``outage.failures`` when Redis was last found well: more since, and before Redis is
        #: used again the outage's changes are replayed, or (restarted) this instance's
        #: reservations in flight are given to the counters.
        self._checked_failures = 0
        self._beating: asyncio.Task[None] | None = None
        #: Set at a stop: the heartbeat ends.
        self.stopping = False
        #: Whether this worker has had a lease (one found lapsed after it may have been taken
        #: for dead).
        self._leased = False
        self._renewed_at = -math.inf
        self._client: Any = async_redis_client(url, socket_timeout)
        self._reserve: Any = self._client.register_script(RESERVE)
        self._adjust: Any = self._client.register_script(ADJUST)
        self._add_holds: Any = self._client.register_script(ADD_HOLDS)
        self._beat: Any = self._client.register_script(BEAT)
        self._release: Any = self._client.register_script(RELEASE)

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and local counters are used."""
        return self.outage.down

    def _keys(self, name: str) -> list[str]:
        """A counter's key, its holds' and this worker's list of counters it holds on."""
        return [self.key("budget", name), self.key("holds", name), self.key("holder", self.worker)]

    def key(self, kind: str, name: str) -> str:
        """The Redis key of ``kind`` (budget, holds, holder, lease, ...) for ``name``."""
        return f"{self.key_prefix}{kind}:{name}"

    def _field(self, key: str) -> str:
        """A hold's field in its counter's holds ('' for a hold without a key)."""
        return f"{self.worker}|{key}" if key else ""

    async def _guarded(
        self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        if self.degraded:
            return await local()
        try:
            if self._run_id is None:
                async with asyncio.timeout(self.socket_timeout):
                    self._run_id = await self._server_run_id()
            if self.outage.failures != self._checked_failures:  # each exchange bounded
                await self._merge_outage()
            # The socket timeout bounds each step; this bounds the whole operation as well.
            async with asyncio.timeout(self.socket_timeout):
                return await remote()
        except self.outage.errors as exc:  # TimeoutError is an OSError
            self.outage.failed(exc)
            return await local()

    async def hit_rpm(self, name: str, limit: int) -> float | None:
        async def remote() -> float | None:
            minute, wait = minute_and_wait()
            key = self.key("rpm", f"{name}:{minute}")
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

    async def reserve(
        self,
        name: str,
        amount: int,
        limit: int,
        seed: int | None,
        hold: object = None,
        calls: frozenset[str] | None = None,
        since: int | None = None,
    ) -> int | None:
        async def remote() -> int | None:
            # A missing counter starts from the ledger (without the calls in flight) plus every
            # hold recorded on it, all workers' (the script checks the calls are still those).
            self._beat_soon()  # a worker that uses the counters takes part in the heartbeat
            field = self._field(self._outage.key(hold)) if hold is not None and amount else ""
            renew = self._lease_ms if field and self._renew_due() else ""
            status, value, lapsed = await self._reserve(
                keys=[
                    *self._keys(name),
                    self.key("lease", self.worker),
                    self._registry,
                    self.key("budget-changed", name),
                ],
                args=[
                    amount,
                    limit,
                    IDLE_TTL,
                    "" if seed is None else seed,
                    field,
                    name,
                    self.worker,
                    renew,
                    "*" if calls is None else "=" + " ".join(sorted(calls)),
                    "" if since is None else since,
                ],
            )
            if int(status) < 0:
                return None
            if int(status) == 0:
                return -int(value) - 1
            self._outage.taken(name, hold, amount)
            if renew:
                await self._renewed(int(lapsed))
            return int(value)

        async def from_ledger() -> int | None:
            return self._outage.reserve(name, amount, limit, seed, hold, calls)

        return await self._guarded(remote, from_ledger)

    async def calls_in_flight(self, name: str) -> frozenset[str]:
        """Every worker's calls holding on ``name`` (this instance's alone while Redis is
        away)."""

        async def remote() -> frozenset[str]:
            fields = await self._client.hkeys(self.key("holds", name))
            ids = (str(field, "utf-8", "replace").split("|", 2) for field in fields)
            return frozenset(parts[2] for parts in ids if len(parts) == 3 and parts[2])

        async def local() -> frozenset[str]:
            return self._outage.calls(name)

        return await self._guarded(remote, local)

    async def adjust(self, name: str, delta: int, hold: object = None) -> None:
        units = self._outage.units(name, hold) if hold is not None else 0
        key = self._outage.key(hold) if units else ""

        async def remote() -> None:
            if delta or key:
                self._outage.ending(name, hold)  # never put back while settling
                await self._adjust(
                    keys=self._keys(name),
                    args=[delta, _uncounted(delta, units), IDLE_TTL, self._field(key), name],
                )
            self._outage.settled(name, hold)

        async def later() -> None:
            self._outage.ended(name, hold, delta, _uncounted(delta, units))

        await self._guarded(remote, later)

    async def drop(self, names: Sequence[str]) -> None:
        async def remote() -> None:
            await self._client.delete(*(self.key("budget", name) for name in names))

        async def unreachable() -> None:  # the outage's budgets read the ledger anyway
            self._outage.reset_missed(names)
            log.warning(
                "proxy counters: Redis unavailable; budget counters reset when it is back: %s",
                names,
            )

        await self._guarded(remote, unreachable)

    @property
    def _registry(self) -> str:
        return f"{self.key_prefix}workers"

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def _beat_soon(self) -> None:
        """Start the heartbeat (once this worker uses the counters)."""
        if not self.stopping and (self._beating is None or self._beating.done()):
            self._beating = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while not self.stopping:  # (a cancellation can be swallowed by redis-py mid-command)
            try:
                await self.beat()
            except Exception:  # a heartbeat never ends on a fault: the next one tries again
                log.warning("proxy counters: heartbeat failed", exc_info=True)
            # Stopped meanwhile, its cancellation swallowed by the beat: no quarter lease (12 s
            # by default) more before the loop sees it, which held a clean stop that long.
            await asyncio.sleep(0 if self.stopping else self.lease / 4)

    async def beat(self, *, leave: bool = False) -> None:
        """Renew this worker's lease (``leave``: give it up) and release the holds of every
        worker whose lease is over; put this worker's holds back if it was taken for dead."""

        async def remote() -> None:
            workers = sorted(str(w, "utf-8") for w in await self._client.smembers(self._registry))
            lapsed, found = await self._beat(
                keys=[
                    self._registry,
                    self.key("lease", self.worker),
                    *(self.key("lease", w) for w in workers),
                ],
                args=[self.worker, self._lease_ms, "leave" if leave else "beat", *workers],
            )
            dead = dropped = 0
            for worker in found:
                released = await self._release_dead(str(worker, "utf-8"))
                if released is not None:
                    dead += 1
                    dropped += released
            if dead and not leave:
                log.warning(
                    "proxy counters: released the budget holds of %d worker(s) whose lease "
                    "(%g s) was over; %d counter(s) start again from the ledger",
                    dead,
                    self.lease,
                    dropped,
                )
            await self._renewed(int(lapsed) and not leave)

        async def away() -> None:
            return None

        await self._guarded(remote, away)

    async def _release_dead(self, worker: str) -> int | None:
        """Release the holds of ``worker``, found without a lease: how many counters were
        deleted, or None when it had renewed its lease or another worker released it first."""
        holder = self.key("holder", worker)
        while True:  # (again only when the worker placed a hold since its counters were read)
            names = sorted(str(n, "utf-8") for n in await self._client.hkeys(holder))
            keys = [self._registry, self.key("lease", worker), holder]
            for name in names:
                keys += [self.key("holds", name), self.key("budget", name)]
            status, dropped = await self._release(keys=keys, args=[worker, *names])
            if int(status) >= 0:
                return int(dropped) if int(status) else None

    def _renew_due(self) -> bool:
        """Whether a reservation renews the lease: not renewed for half a lease (two commands
        fewer in most reservations' script; the heartbeat renews it every quarter)."""
        return time.monotonic() - self._renewed_at >= self.lease / 2

    async def _renewed(self, lapsed: int) -> None:
        """This worker's lease was renewed; ``lapsed``: it had lapsed (a first lease has not)."""
        self._renewed_at = time.monotonic()
        if lapsed and self._leased:
            await self._put_back()
        self._leased = True

    async def _put_back(self) -> int:
        """Put this worker's holds in flight back where they are gone (it was taken for dead:
        its lease lapsed, it was slow or Redis out of its reach); each call settles once."""
        holds = self._outage.each_hold()
        if not holds:
            return 0
        added = await self._add_held(
            [(name, self._field(key), units) for name, key, units in holds]
        )
        if added:
            log.warning(
                "proxy counters: this worker's lease had lapsed; put back %d hold(s) of its "
                "calls in flight",
                added,
            )
        return added

    async def _add_held(self, holds: Sequence[tuple[str, str, int | str]]) -> int:
        """Put (counter, field, units) holds into Redis (:data:`.redis_holds.ADD_HOLDS`), renewing
        this worker's lease; how many were put back."""
        keys = [self._registry, self.key("lease", self.worker), self.key("holder", self.worker)]
        args: list[Any] = [self.worker, self._lease_ms, IDLE_TTL]
        for name, field, units in holds:
            keys += [self.key("holds", name), self.key("budget", name)]
            args += [name, field, units]
        return int(await self._add_holds(keys=keys, args=args))

    async def _merge_outage(self) -> None:
        """Apply what budget counters missed while Redis was away (before any other use)."""
        merged = 0
        async with self._merging:  # calls arriving together must not merge the same change twice
            failures = self.outage.failures
            if failures == self._checked_failures:
                return  # done by the call before this one
            run_id = await self._server_run_id()
            if run_id != self._run_id:
                # A restarted Redis lost every counter and hold. Each counter is seeded again
                # from the ledger, which has the outage's spend (replaying it too would count it
                # twice), plus the holds recorded (:meth:`reserve`); this instance's are recorded
                # again, and a counter another instance seeded meanwhile is given them.
                await self._put_back()
                self._run_id = run_id
                self._outage.forget_missed()
                await self._apply_resets()
                self._checked_failures = failures
                log.warning(
                    "proxy counters: Redis is back, restarted; counters start from the ledger "
                    "and this instance's calls in flight"
                )
                return
            for kind, name, key, first, second in self._outage.missed():
                field = self._field(key)
                if kind == "took" and field:  # the hold's field brought to its units then
                    await self._add_held([(name, field, second)])
                else:  # an end, or a hold without a key: a plain change
                    args = [first, second, IDLE_TTL, field if kind == "ended" else "", name]
                    await self._adjust(keys=self._keys(name), args=args)
                self._outage.replayed()
                merged += 1
            await self._put_back()  # taken for dead meanwhile: its calls in flight count again
            await self._apply_resets()
            self._checked_failures = failures
        if merged:
            log.warning(
                "proxy counters: Redis is back; merged the outage's spend (%d change(s))",
                merged,
            )

    async def _apply_resets(self) -> None:
        """Delete the counters reset while Redis was away (:meth:`drop`) on recovery, before
        Redis counts a call of this instance again, whether Redis restarted or not: a counter
        seeded before the change (kept through the outage, or by an instance that reached Redis
        while this one could not) must not be trusted again. Done after the outage's changes
        are replayed (or this instance's holds put back): the holds of calls still in flight
        stay recorded beside the counter, every worker's, so the counter seeded again counts
        them; what the deleted counter was given meanwhile is discarded, as the ledger has it.
        Forgotten only once deleted."""
        names = self._outage.resets()
        if not names:
            return
        await self._client.delete(*(self.key("budget", name) for name in names))
        self._outage.reset_done(names)
        log.warning(
            "proxy counters: Redis is back; reset %d budget counter(s) changed while it was "
            "away: %s",
            len(names),
            names,
        )

    async def keys_version(self) -> int | None:
        """How many times keys changed (any instance); None while Redis is away."""

        async def remote() -> int | None:
            value = await self._client.get(self.key("keys", "version"))
            return int(value) if value is not None else 0

        async def unknown() -> int | None:
            return None

        return await self._guarded(remote, unknown)

    async def keys_changed(self) -> None:
        async def remote() -> None:
            await self._client.incr(self.key("keys", "version"))

        async def lost() -> None:  # the other instances fall back to their sets' age
            return None

        await self._guarded(remote, lost)

    async def _server_run_id(self) -> str:
        """The Redis server's run id: it changes when the server restarts."""
        if self.cluster:  # the master of the counters' slot: a failover is taken as a restart
            await self._client.initialize()  # (learns the slots at its first use)
            node = self._client.get_node_from_key(self._registry)
            info = await self._client.info("server", target_nodes=node)
        else:
            info = await self._client.info("server")
        return str(info.get("run_id", ""))

    async def aclose(self) -> None:
        self.stopping = True
        if self._beating is not None:
            self._beating.cancel()
            # Its exchange cut short is over before the last one is sent (the connection it
            # was reading from is closed, and must not be used again meanwhile).
            await asyncio.wait([self._beating], timeout=self.socket_timeout)
            await self.beat(leave=True)  # a clean stop: nothing of this worker's is left held
        await self._client.aclose()


def _uncounted(delta: int, units: int) -> str:
    """A settling's change to a counter that does not count its hold (:data:`.redis_holds.ADJUST`):
    '' (start the counter again from the ledger, which has the call's row), or, for a hold kept
    as the cost (``delta`` 0: no row may say what it cost), the hold."""
    return "" if delta else str(units)


def seconds_text(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
