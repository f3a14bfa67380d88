"""A worker that dies stops holding its budget reservations in Redis within its lease.

Counters of several workers on the machine's Redis, each test under a key prefix of its own: a
worker whose heartbeat stopped (as a killed process's does) is taken for dead once its lease is
over, by another worker's heartbeat; its holds are removed and the counter starts again from the
ledger. A worker whose heartbeat runs keeps its holds however long its calls take; one taken for
dead that comes back puts back its calls in flight and settles each once. Before, a dead worker's
holds stayed counted until the counter had been idle for an hour.

The waits are bounded polls for a lease to lapse (a short one, set per test), never a timing
assertion; the proxies' side is ``tests/test_proxy_budget_dead_worker_proxies.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.services import REDIS_TIMEOUT
from tracking.proxy.shared_counters import RedisCounters
from tracking.redis_outage import is_cluster_url, redis_client

pytestmark = pytest.mark.redis

LIMIT = 1000


@dataclass(slots=True)
class Hold:
    """A reservation's identity, as :class:`tracking.proxy.budgets.Reservation` gives one."""

    request_id: str


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Return once ``check()`` holds; ``timeout`` bounds "never" on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[..., RedisCounters]]:
    made: list[RedisCounters] = []

    def worker(lease: float | None = None) -> RedisCounters:
        leased = {} if lease is None else {"lease": lease}  # (None: the default, 48 s)
        counters = RedisCounters(
            redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT, **leased
        )
        made.append(counters)
        return counters

    yield worker
    for counters in made:
        await counters.aclose()


async def _die(counters: RedisCounters) -> None:
    """As a killed process: its heartbeat stops, nothing is given back."""
    counters.stopping = True
    if counters._beating is not None:
        counters._beating.cancel()
        await asyncio.wait([counters._beating], timeout=60)  # a bound for "never"
    counters.stopping = False  # (its next reservation starts a heartbeat again)


def _keys_start(redis_url: str, prefix: str) -> str:
    """What the counters' keys start with: on a cluster the prefix is a hash tag."""
    return "{" + prefix + "}" if is_cluster_url(redis_url) else prefix


def counter_value(redis_url: str, prefix: str, name: str) -> int | None:
    """The budget counter ``name`` under ``prefix`` in Redis (None: missing); a Redis Cluster's
    too (``tests/test_proxy_budget_redis_cluster.py`` runs these tests on one)."""
    client = redis_client(redis_url, REDIS_TIMEOUT)
    try:
        value = client.get(f"{_keys_start(redis_url, prefix)}budget:{name}")
    finally:
        client.close()
    return int(value) if value is not None else None


def _released(other: RedisCounters, redis_url: str, prefix: str) -> Callable[[], Awaitable[bool]]:
    """Whether ``other``'s heartbeat released the dead worker's holds (their counter is gone)."""

    async def released() -> bool:
        await other.beat()  # the heartbeat's step: the dead worker's lease is over, or not yet
        return counter_value(redis_url, prefix, "b") is None

    return released


async def test_a_dead_workers_holds_are_released_once_its_lease_is_over(
    workers, redis_url, redis_prefix, caplog
):
    dead, alive = workers(lease=1.0), workers()
    assert await dead.reserve("b", 600, LIMIT, 0, Hold("call-1")) == 600
    await _die(dead)
    assert await alive.reserve("b", 600, LIMIT, None, Hold("call-2")) == -601  # held there

    await _until(_released(alive, redis_url, redis_prefix))
    # started again from the ledger: the dead call left no row (it never got that far)
    assert await alive.calls_in_flight("b") == frozenset()
    assert await alive.reserve("b", 600, LIMIT, 0, Hold("call-2"), frozenset()) == 600
    assert counter_value(redis_url, redis_prefix, "b") == 600
    assert "released the budget holds of 1 worker(s)" in caplog.text


async def test_a_slow_worker_keeps_its_holds_past_its_lease(
    workers, redis_url, redis_prefix, caplog
):
    slow, other = workers(lease=2.0), workers(lease=2.0)
    held = Hold("slow-call")
    assert await slow.reserve("b", 600, LIMIT, 0, held) == 600  # its heartbeat runs
    # Three leases go by while its call is in flight: each time the other worker's heartbeat
    # looks, the slow worker's lease has been renewed.
    until = time.monotonic() + 3 * slow.lease
    while time.monotonic() < until:
        await other.beat()
        assert await other.reserve("b", 600, LIMIT, None, Hold("other")) == -601
        await asyncio.sleep(0.2)
    assert counter_value(redis_url, redis_prefix, "b") == 600
    await slow.adjust("b", 450 - 600, held)  # it cost 450
    assert counter_value(redis_url, redis_prefix, "b") == 450
    assert "released the budget holds" not in caplog.text


async def test_a_worker_taken_for_dead_puts_back_its_calls_and_settles_each_once(
    workers, redis_url, redis_prefix, caplog
):
    """Its heartbeat held up past its lease (not dead: slow): the other worker releases its
    holds; it comes back, settles a call that ended meanwhile (the counter starts again from
    the ledger, which has that call's row), and puts back the hold of the call still in flight.
    The counter ends at what the calls cost."""
    late, other = workers(lease=1.0), workers()
    first, second, mine = Hold("late-1"), Hold("late-2"), Hold("o")
    assert await late.reserve("b", 300, LIMIT, 0, first) == 300
    assert await late.reserve("b", 200, LIMIT, None, second) == 500
    await _die(late)  # its heartbeat stops for a while
    await _until(_released(other, redis_url, redis_prefix))
    assert await other.reserve("b", 100, LIMIT, 0, mine, frozenset()) == 100
    await late.adjust("b", 250 - 300, first)  # cost 250, in the ledger now; released already
    assert counter_value(redis_url, redis_prefix, "b") is None  # starts again from the ledger
    await late.beat()  # back: its lease had lapsed, its call in flight is recorded again
    calls = await other.calls_in_flight("b")
    assert calls == {"late-2", "o"}
    # the ledger: the first call's 250; plus both calls in flight
    assert await other.reserve("b", 500, LIMIT, 250, Hold("too-much"), calls) == -551
    await late.adjust("b", 150 - 200, second)  # cost 150
    await other.adjust("b", 100 - 100, mine)
    assert counter_value(redis_url, redis_prefix, "b") == 500  # 250 + 150 + 100
    assert "put back 1 hold(s)" in caplog.text


async def test_an_outage_longer_than_the_lease_is_replayed_without_counting_twice(
    workers, redis_url, redis_prefix
):
    """Redis out of one worker's reach past its lease: the other releases its holds. Back, it
    replays what it missed (a hold grown meanwhile counts whole, a call that ended meanwhile
    starts the counter again from the ledger, which has its row): the counter ends exact."""
    here, other = workers(lease=1.0), workers()
    here.outage.retry_interval = 3600
    first, grown, mine = Hold("first"), Hold("grown"), Hold("o")
    assert await here.reserve("b", 100, LIMIT, 0, first) == 100
    assert await here.reserve("b", 100, LIMIT, None, grown) == 200
    await _die(here)
    here.outage.failed(ConnectionError("gone"))  # Redis is away for this worker
    assert await here.reserve("b", 50, LIMIT, 0, grown) == 250  # the ledger's 0 + its holds
    await here.adjust("b", 80 - 100, first)  # cost 80, in the ledger
    await _until(_released(other, redis_url, redis_prefix))
    assert await other.calls_in_flight("b") == frozenset()
    assert await other.reserve("b", 10, LIMIT, 80, mine, frozenset()) == 90
    here.outage.retry_interval = 0
    here.outage.failed(ConnectionError("over"))  # tried again now
    assert await here.reserve("b", 0, LIMIT, None) is None  # replayed: starts again
    calls = await other.calls_in_flight("b")
    assert calls == {"grown", "o"}
    assert await other.reserve("b", 0, LIMIT, 80, Hold("x"), calls) == 240  # 80 + 150 + 10
    await here.adjust("b", 120 - 150, grown)
    await other.adjust("b", 10 - 10, mine)
    assert counter_value(redis_url, redis_prefix, "b") == 210  # 80 + 120 + 10


async def test_a_counter_started_again_counts_every_workers_calls_in_flight(
    workers, redis_url, redis_prefix
):
    """A budget changed (its counter dropped) while two workers hold on it: the counter starts
    from the ledger without their calls plus both holds, and each settles exactly. Before, the
    other worker's hold was left out and the counter stayed below the truth by it."""
    here, there = workers(), workers()
    one, two = Hold("call-1"), Hold("call-2")
    assert await here.reserve("b", 300, LIMIT, 0, one) == 300
    assert await there.reserve("b", 200, LIMIT, None, two) == 500
    await here.drop(["b"])
    calls = await here.calls_in_flight("b")
    assert calls == {"call-1", "call-2"}  # the ledger is read without both
    assert await here.reserve("b", 0, LIMIT, 40, Hold("x"), calls) == 540
    await there.adjust("b", 120 - 200, two)
    await here.adjust("b", 300 - 300, one)
    assert counter_value(redis_url, redis_prefix, "b") == 460  # 40 + 120 + 300


async def test_a_worker_stopping_cleanly_leaves_nothing_behind(workers, redis_url, redis_prefix):
    counters = workers()
    held = Hold("call")
    assert await counters.reserve("b", 100, LIMIT, 0, held) == 100
    await counters.adjust("b", 80 - 100, held)
    await counters.aclose()
    start = _keys_start(redis_url, redis_prefix)
    client = redis_client(redis_url, REDIS_TIMEOUT)
    try:  # (a cluster's client scans each of its masters)
        left = sorted(k.decode() for k in client.scan_iter(match=f"{start}*"))
    finally:
        client.close()
    assert left == [f"{start}budget:b"], left
