"""A call's in-flight entry in Redis is taken back when no end of the call would remove it.

A call's start (INCR the minute's rpm, ZADD its in-flight member) or its end (ZREM) may run in
Redis although its answer never reaches the call. Before, the entry then stayed for its 10-minute
lease, and the deployment looked busier than it was (least-busy routing, rpm):

* a start whose exchange timed out after Redis had run it (the socket timeout, or the async
  exchange's own): the call went on with local state, and nothing took the start back;
* a start whose answer came, followed by a Ctrl-C before the route had it (the driver throws the
  interruption into the start's steps, which did nothing about it);
* an end that timed out before reaching Redis, or that was never sent because Redis had just
  been marked down (by another call's failure).

Now such a place waits to be taken back by the state's next exchange once Redis is tried again:
the failing call never waits for it. Real Redis behind a loopback relay that holds or loses its
answers; each test has its own key prefix, and a ``ManualClock`` for the minutes and leases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import API_KEY, make_png
from tests.relay import TcpRelay
from tests.router_support import ManualClock, deployment
from tests.services import REDIS_TIMEOUT
from tracking.router import RedisState, Router
from tracking.targets import Consult

pytestmark = pytest.mark.redis


class _Keys:
    """The test's view of one deployment's keys, read straight from Redis."""

    def __init__(self, redis_url: str, prefix: str, clock: ManualClock) -> None:
        self.direct = redis.Redis.from_url(redis_url)
        self.calls = f"{prefix}inflight-calls:d"
        self.rpm_key = f"{prefix}rpm:d:{int(clock.time() // 60)}"

    def in_flight(self) -> int:
        return int(self.direct.zcard(self.calls))

    def rpm(self) -> int:
        return int(self.direct.get(self.rpm_key) or 0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def keys(redis_url: str, redis_prefix: str, clock: ManualClock) -> Iterator[_Keys]:
    keys = _Keys(redis_url, redis_prefix, clock)
    yield keys
    keys.direct.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[TcpRelay]:
    relay = TcpRelay(redis_url)
    yield relay
    relay.close()


def _state(relay: TcpRelay, prefix: str, clock: ManualClock, **options: Any) -> RedisState:
    # Redis is tried again at once after a failure (retry_interval=0) unless a test says
    options.setdefault("retry_interval", 0)
    return RedisState(relay.url, prefix=prefix, socket_timeout=0.5, clock=clock.time, **options)


def test_a_start_that_timed_out_after_redis_ran_it_is_taken_back_by_the_next_exchange(
    relay, redis_prefix, clock, keys
):
    state = _state(relay, redis_prefix, clock)
    try:
        state.snapshot(["d"])  # the connection opened, as a routed call's snapshot does
        relay.hold_replies()  # Redis runs what it is sent; its answers never come
        assert state.begin("d", None)  # timed out: begun on the local state
        # Redis ran it, and the failing call did not wait to take it back (an undo sent then
        # would have run in Redis too)
        assert (keys.in_flight(), keys.rpm()) == (1, 1)
        relay.drop_live()  # Redis answers again
        snapshot = state.snapshot(["d"])
        assert snapshot.in_flight == {"d": 0}
        assert snapshot.rpm == {"d": 0}
        assert (keys.in_flight(), keys.rpm()) == (0, 0)
    finally:
        state.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_routed_call_whose_start_timed_out_leaves_no_entry(
    fake, relay, redis_prefix, clock, keys, use_async
):
    state = _state(relay, redis_prefix, clock)
    router = Router(
        [deployment("images", fake.url, id="d", model="gpt-image-2", api_key=API_KEY)], state=state
    )
    params = {"image": make_png(), "prompt": "a red hat", "model": "images"}
    try:
        relay.hold_replies_to(b"ZADD")  # the start runs in Redis; its answer never comes
        if use_async:
            response = asyncio.run(router.aimage_edit(**params))
        else:
            response = router.image_edit(**params)
        assert response.data  # the call went on, on the local state
        # taken back by the call's next exchange with Redis (its outcome recorded)
        assert (keys.in_flight(), keys.rpm()) == (0, 0)
        assert state.snapshot(["d"]).in_flight == {"d": 0}
    finally:
        router.close()


class _InterruptedAfterStart(RedisState):
    """A state whose first start is answered by Redis, and then interrupted (Ctrl-C) before the
    answer reaches the call: the driver throws the interruption into the start's steps."""

    interrupted = False

    def exchange(self, commands: Any, **options: Any) -> Consult:
        consult = super().exchange(commands, **options)
        if self.interrupted or not any(name == "zadd" for name, _, _ in commands):
            return consult

        def answered_then_interrupted() -> Any:
            consult.run()  # Redis ran it and answered
            self.interrupted = True
            raise KeyboardInterrupt

        return Consult(answered_then_interrupted, consult.arun)


@pytest.mark.parametrize("driver", ["routed call", "state.begin"])
def test_a_start_interrupted_after_redis_answered_it_takes_nothing(
    fake, redis_url, redis_prefix, clock, keys, driver
):
    state = _InterruptedAfterStart(
        redis_url, prefix=redis_prefix, clock=clock.time, socket_timeout=REDIS_TIMEOUT
    )
    router = Router([deployment("images", fake.url, id="d")], state=state)

    def start() -> None:
        if driver == "routed call":  # the flow's sync driver
            router.image_edit(image=make_png(), prompt="a hat", model="images")
        else:  # run_steps, as the state's own sync methods drive their steps
            state.begin("d", None)

    try:
        with pytest.raises(KeyboardInterrupt):
            start()
        assert state.interrupted
        assert (keys.in_flight(), keys.rpm()) == (0, 0)
        assert not state.degraded
    finally:
        router.close()


def test_an_end_that_timed_out_before_reaching_redis_is_done_by_the_next_exchange(
    relay, redis_prefix, clock, keys
):
    state = _state(relay, redis_prefix, clock)
    try:
        assert state.begin("d", None)
        assert (keys.in_flight(), keys.rpm()) == (1, 1)
        relay.pause()  # nothing reaches Redis, nor comes back
        state.end("d")  # timed out
        relay.drop_live()  # the end never reaches Redis
        relay.restore()
        assert keys.in_flight() == 1
        assert state.snapshot(["d"]).in_flight == {"d": 0}
        assert keys.in_flight() == 0
        assert keys.rpm() == 1  # an ended call's request stays counted in its minute
    finally:
        state.close()


def test_an_end_while_redis_is_marked_down_is_done_once_redis_is_back(
    relay, redis_prefix, clock, keys
):
    state = _state(relay, redis_prefix, clock, retry_interval=0.2)
    try:
        assert state.begin("d", None)
        relay.cut()  # another call finds Redis down: it is left alone for a while
        state.snapshot(["d"])
        assert state.degraded
        state.end("d")  # not sent: Redis is down
        relay.restore()
        for _ in range(1000):  # until Redis is tried again (a hung test fails below)
            if not state.degraded:
                break
            time.sleep(0.01)
        assert keys.in_flight() == 1
        assert state.snapshot(["d"]).in_flight == {"d": 0}
        assert keys.in_flight() == 0
    finally:
        state.close()
