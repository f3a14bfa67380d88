"""Routing state in Redis (:class:`RedisState`), so that several processes route as one.

Every change is an atomic Redis command (INCR, INCRBY, SET with PX, NX for a cooldown,
LPUSH+LTRIM, ZADD/ZREM) and every key expires, so a crashed process leaves nothing behind for
long. In-flight calls are members of a sorted set, each leased for ``_IN_FLIGHT_TTL`` seconds:
one whose process died before its end drops out on its own while the other processes go on
calling (a shared counter would keep it for as long as traffic flows). Reads for one routing
decision are one pipelined round trip.

A Redis outage never fails a call: the first error is logged as a warning, the state falls back
to a local :class:`MemoryState` and Redis is tried again after ``retry_interval`` seconds (so a
dead server costs one fast failure per interval, not one per call). What was recorded locally
meanwhile is not copied back.

A routed call reaches the state through :func:`stepwise`: Redis exchanges are yielded as
:class:`~tracking.targets.Consult` effects, so a sync call runs them with the blocking client and
an async call awaits them with ``redis.asyncio`` (one client per event loop, closed when that
loop ends) without ever blocking its loop; both bounded by ``socket_timeout``. A call cancelled
while it awaits the exchange that starts it (or ends it) does not cut that exchange short: it
is finished in the background, and a start is then undone, whether it answered or failed; a
sync call interrupted (Ctrl-C) during its start, or just after it, before the call had the
answer (its driver throws the interruption into the start's steps), undoes it before the
interruption goes on (see :meth:`RedisState.exchange`). A start whose exchange failed or timed
out (its commands may have run all the same) is undone, and an end or release whose exchange
failed, or that was not sent while Redis was down, is done again, by the state's next exchange
once Redis is tried again: never by the failing call, which waits for nothing more (see
:meth:`RedisState.undo_later`).
Each begin answers the call's :class:`Place` (its minute, its member), which its end or release
gives back: a place released goes back to the minute it was taken in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..redis_outage import (
    RedisOutage,
    async_redis_client,
    redis_client,
    retry_interval_from_environment,
)
from ..targets import Consult, Steps, run_steps
from .state import Clock, MemoryState, Place, Snapshot, _minute, _window_left

__all__ = ["SOCKET_TIMEOUT", "RedisState"]

log = logging.getLogger("tracking.router")

#: Seconds each exchange with Redis may take by default (``TRACKING_REDIS_TIMEOUT_SECONDS``
#: sets another for the state ``Router(redis_url=)`` builds).
SOCKET_TIMEOUT = 0.25

T = TypeVar("T")
#: One Redis command of a pipeline: (method name, positional arguments, keyword arguments).
Command = tuple[str, tuple[Any, ...], dict[str, Any]]

_IN_FLIGHT_TTL = 600
_LATENCY_TTL = 3600
_USAGE_TTL = 120
#: At most this many calls' places wait to be taken back (see :meth:`RedisState.undo_later`).
_PENDING_UNDOS = 1000


class RedisState:
    """Routing state in Redis under ``prefix``, degrading to a local :class:`MemoryState`.

    ``socket_timeout`` bounds every exchange (connecting, and each answer) on both paths.
    ``retry_interval``: the seconds Redis is left alone after an error; by default
    ``TRACKING_REDIS_RETRY_SECONDS`` (5 s when unset), the proxy's counters' setting too.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tracking:router:",
        latency_window: int = 10,
        failure_window: float = 60.0,
        socket_timeout: float = SOCKET_TIMEOUT,
        retry_interval: float | None = None,
        client: Any = None,
        clock: Clock = time.time,
    ) -> None:
        self.outage = RedisOutage(
            log,
            "router state: Redis unavailable (%s); routing on local state, retrying Redis in "
            "%.3g s",
            retry_interval_from_environment() if retry_interval is None else retry_interval,
        )
        self.url = url
        self.prefix = prefix
        self.latency_window = latency_window
        self.failure_window = failure_window
        self.socket_timeout = socket_timeout
        self.clock = clock
        self.local = MemoryState(
            latency_window=latency_window, failure_window=failure_window, clock=clock
        )
        self._client = client or redis_client(url, socket_timeout)
        #: The async clients, one per event loop (a redis.asyncio client belongs to its loop).
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        #: undos waiting for Redis (see :meth:`undo_later`)
        self._pending: deque[_Undo] = deque()
        self._pending_lock = threading.Lock()
        self.steps = _RedisSteps(self)
        #: deployment id -> the places :meth:`begin` took there, oldest first (the
        #: :class:`RouterState` methods name a deployment, not a place)
        self._places: dict[str, deque[Place]] = {}
        self._places_lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and local state is used."""
        return self.outage.down

    # -- the RouterState protocol, for sync callers (the sync path drives the same steps) ----

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        return run_steps(self.steps.snapshot(ids))

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        place = run_steps(self.steps.begin(deployment_id, rpm_limit))
        if place is None:
            return False
        with self._places_lock:
            self._places.setdefault(deployment_id, deque()).append(place)
        return True

    def _taken(self, deployment_id: str, *, last: bool) -> Place:
        """A place :meth:`begin` took there (one on the local state when there is none)."""
        with self._places_lock:
            places = self._places.get(deployment_id)
            place = (places.pop() if last else places.popleft()) if places else None
            if places is not None and not places:
                del self._places[deployment_id]
        return place or Place(deployment_id, None)

    def end(self, deployment_id: str) -> None:
        run_steps(self.steps.end(self._taken(deployment_id, last=False)))

    def release(self, deployment_id: str) -> None:
        """End the call begun last there, never sent (a routed call releases its own place)."""
        run_steps(self.steps.release(self._taken(deployment_id, last=True)))

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None:
        run_steps(self.steps.record_success(deployment_id, latency_ms, tokens))

    def record_failure(self, deployment_id: str) -> int:
        return run_steps(self.steps.record_failure(deployment_id))

    def cool_down(self, deployment_id: str, seconds: float) -> bool:
        return run_steps(self.steps.cool_down(deployment_id, seconds))

    def close(self) -> None:
        self._client.close()

    # -- one pipelined exchange, blocking or awaited --------------------------------------------

    def exchange(
        self, commands: Sequence[Command], *, finish: bool = False, undo: _Undo | None = None
    ) -> Consult:
        """The effect that sends ``commands`` as one pipeline and answers their replies.

        An async call cancelled while it waits cuts its exchange short, unless ``finish`` or
        ``undo`` is given: that exchange is finished in the background. ``undo`` takes back the
        place the exchange takes or gives back (see :class:`_Undo`): a begin's (no ``finish``)
        once it is finished, whether it answered or failed, since its call never learns it
        began; an end's or a release's (``finish``) only when it failed. An undo that cannot be
        done waits for the next exchange (see :meth:`undo_later`)."""
        if finish or undo is not None:
            return Consult(
                lambda: self._execute(commands), lambda: self._afinish(commands, undo, finish)
            )
        return Consult(lambda: self._execute(commands), lambda: self._aexecute(commands))

    def _execute(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for name, args, kwargs in commands:
            getattr(pipe, name)(*args, **kwargs)
        replies: list[Any] = pipe.execute()
        return replies

    async def _aexecute(self, commands: Sequence[Command]) -> list[Any]:
        client = await self._async_client()
        # The socket timeouts bound each step; this bounds the whole exchange as well.
        async with asyncio.timeout(self.socket_timeout):
            pipe = client.pipeline(transaction=False)
            for name, args, kwargs in commands:
                getattr(pipe, name)(*args, **kwargs)
            replies: list[Any] = await pipe.execute()
        return replies

    async def _afinish(
        self, commands: Sequence[Command], undo: _Undo | None, finish: bool
    ) -> list[Any]:
        exchange = asyncio.ensure_future(self._aexecute(commands))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:  # the exchange goes on; undone once done if need be
            if undo is not None and undo.claim():
                exchange.add_done_callback(functools.partial(self._after_cancel, undo, finish))
            raise

    def _after_cancel(self, undo: _Undo, finish: bool, exchange: asyncio.Future[Any]) -> None:
        if exchange.cancelled():  # its loop is going away: the next exchange undoes it
            self.undo_later([undo])
            return
        if exchange.exception() is None and finish:  # an end or a release, done
            return
        # a begin (answered or failed), or an end or release that failed: its commands may
        # have run, or not (the undo is idempotent); undone by the blocking client, off the loop
        undoing = exchange.get_loop().run_in_executor(None, run_steps, self.steps.undo([undo]))
        undoing.add_done_callback(_undone)

    def undo_later(self, undos: Sequence[_Undo]) -> None:
        """Keep ``undos`` (their exchanges failed, or were cut short) for the next exchange of
        this state once Redis is tried again, which does them first: a failing call never waits
        for them. At most ``_PENDING_UNDOS`` wait; beyond, the oldest is left to its lease."""
        dropped: list[_Undo] = []
        with self._pending_lock:
            for undo in undos:
                if len(self._pending) >= _PENDING_UNDOS:
                    dropped.append(self._pending.popleft())
                self._pending.append(undo)
        for undo in dropped:
            log.warning(
                "router state: too many calls' places wait to be taken back; %s stays in "
                "flight on %s until its %d s lease ends",
                undo.member,
                undo.calls_key,
                _IN_FLIGHT_TTL,
            )

    def pending_undos(self) -> list[_Undo]:
        """The undos :meth:`undo_later` kept, taken (the one exchange that gets them does them)."""
        if not self._pending:  # nearly always: no lock taken
            return []
        with self._pending_lock:
            undos = list(self._pending)
            self._pending.clear()
        return undos

    async def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            client = async_redis_client(self.url, self.socket_timeout)
            closer = _close_at_loop_end(client)
            await closer.__anext__()
            entry = self._async[loop] = (client, closer)
        return entry[0]


@dataclass(slots=True, eq=False)
class _Undo:
    """How a call's place is taken back: its in-flight member removed (:meth:`remove`) and,
    for a begin or a release (``rpm_key``), its request taken off its minute's count
    (:meth:`give_back`). Done by :meth:`_RedisSteps.undo`, it is idempotent: the member is
    removed by its id, and the request given back only when the member was there (its begin
    ran), so an undo done twice, or for a begin whose commands never ran, takes nothing it did
    not add. A begin refused over the rpm limit and a place released unsent give both back at
    once."""

    calls_key: str
    member: str
    #: the rpm key of the minute its request was counted in; None for an end (the request
    #: stays counted)
    rpm_key: str | None
    #: whether the exchange's failure or interruption has been seen (see :meth:`claim`)
    claimed: bool = field(default=False, init=False)

    def claim(self) -> bool:
        """True the first time only: one undo per exchange, by the first path to see its
        failure or interruption (the async side's, or the steps'; one call's, on one thread)."""
        first = not self.claimed
        self.claimed = True
        return first

    def remove(self) -> list[Command]:
        return [("zrem", (self.calls_key, self.member), {})]

    def give_back(self) -> list[Command]:
        if self.rpm_key is None:
            return []
        return [("decr", (self.rpm_key,), {}), ("expire", (self.rpm_key, _USAGE_TTL), {})]


def _undone(undoing: asyncio.Future[bool]) -> None:
    if not undoing.cancelled() and (error := undoing.exception()) is not None:
        log.warning("router state: taking back a cancelled call's place failed: %r", error)


async def _close_at_loop_end(client: Any) -> AsyncGenerator[None, None]:
    """Suspended until its loop finalises its async generators (the end of ``asyncio.run``)."""
    try:
        yield
    finally:
        await client.aclose()


class _RedisSteps:
    """:class:`RedisState`'s operations as steps: each exchange is yielded, its reply read here.

    A failed exchange (Redis down, or not answering within ``socket_timeout``) marks the outage
    and the operation is done on the local state instead.
    """

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.local = state.local

    def _key(self, kind: str, deployment_id: str, *suffix: object) -> str:
        tail = "".join(f":{part}" for part in suffix)
        return f"{self.state.prefix}{kind}:{deployment_id}{tail}"

    def _replies(
        self, commands: Sequence[Command], *, finish: bool = False, undo: _Undo | None = None
    ) -> Steps[list[Any] | None]:
        """The commands' replies, or None when Redis is (or just went) down (``finish`` and
        ``undo``: see :meth:`RedisState.exchange`). The undos kept for later are done first, but
        not before an end or a release (a call cancelled during them would never end)."""
        state = self.state
        if state.outage.down:
            if finish and undo is not None:  # an end or a release begun in Redis: later
                state.undo_later([undo])
            return None
        if not finish and (undos := state.pending_undos()) and not (yield from self.undo(undos)):
            return None
        try:
            replies = yield state.exchange(commands, finish=finish, undo=undo)
        except BaseException as exc:
            # interrupted (Ctrl-C) during the exchange or just after it, before its replies
            # reached the call (its driver throws the interruption in here): what it did is
            # taken back before the interruption goes on
            if undo is not None and undo.claim():  # not already by a cancelled async exchange
                if isinstance(exc, GeneratorExit):  # closed: nothing can be yielded any more
                    state.undo_later([undo])
                else:
                    yield from self.undo([undo])
            raise
        if isinstance(replies, BaseException):
            if undo is not None and undo.claim():
                # failed, or timed out, its commands may have run all the same: undone by the
                # next exchange once Redis is tried again (this call waits for nothing more)
                state.undo_later([undo])
            self._failed(replies)
            return None
        result: list[Any] = replies
        return result

    def _failed(self, error: BaseException) -> None:
        """An exchange failed: Redis is down (an error that is not Redis's is raised)."""
        if not isinstance(error, (*self.state.outage.errors, TimeoutError)):
            raise error
        self.state.outage.failed(error)

    def undo(self, undos: Sequence[_Undo]) -> Steps[bool]:
        """Take back the places of ``undos`` (see :class:`_Undo`): each member removed, then
        the requests of those that were there given back; False when Redis failed. A removal
        that failed or was interrupted may have run, or not: since an undo is idempotent, they
        all wait for the next exchange (see :meth:`RedisState.undo_later`)."""
        state = self.state
        try:
            removed = yield state.exchange([c for u in undos for c in u.remove()])
        except BaseException:
            state.undo_later(undos)
            raise
        if isinstance(removed, BaseException):
            state.undo_later(undos)
            self._failed(removed)
            return False
        back = [
            c for undo, was in zip(undos, removed, strict=True) if was for c in undo.give_back()
        ]
        if back:  # lost, these requests stay counted until their minutes end
            given = yield state.exchange(back)
            if isinstance(given, BaseException):
                self._failed(given)
                return False
        return True

    def snapshot(self, ids: Sequence[str]) -> Steps[Snapshot]:
        minute = _minute(self.state.clock)
        now_ms = self.state.clock() * 1000
        commands: list[Command] = []
        for i in ids:
            commands += [
                ("pttl", (self._key("cooldown", i),), {}),
                ("zcount", (self._key("inflight-calls", i), now_ms, "+inf"), {}),
                ("get", (self._key("rpm", i, minute),), {}),
                ("get", (self._key("tpm", i, minute),), {}),
                ("lrange", (self._key("latency", i), 0, self.state.latency_window - 1), {}),
                ("get", (self._key("fails", i),), {}),
            ]
        values = yield from self._replies(commands)
        if values is None:
            return self.local.snapshot(ids)
        cooling: dict[str, float] = {}
        in_flight: dict[str, int] = {}
        rpm: dict[str, int] = {}
        tpm: dict[str, int] = {}
        latency: dict[str, tuple[float, ...]] = {}
        failures: dict[str, int] = {}
        for index, i in enumerate(ids):
            ttl, flying, requests, tokens, recent, failed = values[index * 6 : index * 6 + 6]
            if ttl is not None and ttl > 0:
                cooling[i] = ttl / 1000
            in_flight[i] = max(0, int(flying or 0))
            rpm[i] = int(requests or 0)
            tpm[i] = int(tokens or 0)
            latency[i] = tuple(float(v) for v in recent)
            if int(failed or 0) > 0:
                failures[i] = int(failed)
        window_left = _window_left(self.state.clock)
        return Snapshot(cooling, in_flight, rpm, tpm, latency, window_left, failures)

    def begin(self, deployment_id: str, rpm_limit: int | None) -> Steps[Place | None]:
        minute = _minute(self.state.clock)
        rpm_key = self._key("rpm", deployment_id, minute)
        calls_key = self._key("inflight-calls", deployment_id)
        now_ms = self.state.clock() * 1000
        call = uuid.uuid4().hex
        undo = _Undo(calls_key, call, rpm_key)
        replies = yield from self._replies(
            [
                ("incr", (rpm_key,), {}),
                ("expire", (rpm_key, _USAGE_TTL), {}),
                # each call is a member leased for _IN_FLIGHT_TTL: one whose process died (or
                # lost Redis) before its end drops out alone, however busy the deployment is
                ("zremrangebyscore", (calls_key, "-inf", now_ms), {}),
                ("zadd", (calls_key, {call: now_ms + _IN_FLIGHT_TTL * 1000}), {}),
                ("expire", (calls_key, _IN_FLIGHT_TTL), {}),
            ],
            # cancelled, interrupted or failed meanwhile (its commands may have run all the
            # same), the call never learns it began: what it took is given back
            undo=undo,
        )
        if replies is None:
            local = self.local.take(deployment_id, rpm_limit)
            return None if local is None else Place(deployment_id, local)
        if rpm_limit is not None and int(replies[0]) > rpm_limit:
            # INCR first and give back when over: two processes can never both pass the
            # limit; at worst a borderline call is refused.
            yield from self._replies([*undo.remove(), *undo.give_back()], finish=True, undo=undo)
            return None
        return Place(deployment_id, minute, call)

    def end(self, place: Place) -> Steps[None]:
        if place.member is None:  # begun on the local state, while Redis was down
            self.local.end(place.deployment_id)
            return
        undo = _Undo(self._key("inflight-calls", place.deployment_id), place.member, None)
        replies = yield from self._replies(undo.remove(), finish=True, undo=undo)
        if replies is None:
            self.local.end(place.deployment_id)

    def release(self, place: Place) -> Steps[None]:
        if place.member is None or place.minute is None:
            self.local.release(place.deployment_id, place.minute)
            return
        # the request goes back to the minute it was counted in, not the current one
        undo = _Undo(
            self._key("inflight-calls", place.deployment_id),
            place.member,
            self._key("rpm", place.deployment_id, place.minute),
        )
        yield from self._replies([*undo.remove(), *undo.give_back()], finish=True, undo=undo)

    def record_success(
        self, deployment_id: str, latency_ms: float | None, tokens: int
    ) -> Steps[None]:
        commands: list[Command] = []
        if latency_ms is not None:
            key = self._key("latency", deployment_id)
            commands += [
                ("lpush", (key, f"{latency_ms:.3f}"), {}),
                ("ltrim", (key, 0, self.state.latency_window - 1), {}),
                ("expire", (key, _LATENCY_TTL), {}),
            ]
        if tokens:
            key = self._key("tpm", deployment_id, _minute(self.state.clock))
            commands += [("incrby", (key, tokens), {}), ("expire", (key, _USAGE_TTL), {})]
        if not commands:
            return
        replies = yield from self._replies(commands)
        if replies is None:
            self.local.record_success(deployment_id, latency_ms, tokens)

    def record_failure(self, deployment_id: str) -> Steps[int]:
        key = self._key("fails", deployment_id)
        window = max(1, round(self.state.failure_window))
        # the window starts at the first failure: SET NX EX, then INCR (which keeps the expiry);
        # EXPIRE's NX option would need Redis 7, and on Redis 6 every failure was an outage
        replies = yield from self._replies(
            [("set", (key, 0), {"ex": window, "nx": True}), ("incr", (key,), {})]
        )
        if replies is None:
            return self.local.record_failure(deployment_id)
        return int(replies[1])

    def cool_down(self, deployment_id: str, seconds: float) -> Steps[bool]:
        cooldown = self._key("cooldown", deployment_id)
        # SET NX: of the processes whose calls failed together, one starts the cooldown
        replies = yield from self._replies(
            [
                ("set", (cooldown, "1"), {"px": max(1, round(seconds * 1000)), "nx": True}),
                ("delete", (self._key("fails", deployment_id),), {}),
            ]
        )
        if replies is None:
            return self.local.cool_down(deployment_id, seconds)
        return bool(replies[0])
