"""A call interrupted while Redis answers its start leaves no in-flight entry and no rpm place.

Its start (INCR the minute's rpm, ZADD its in-flight member) may have run in Redis although the
call never learned it began, so no end would ever remove it: the deployment counted one call more
in flight for the entry's 10-minute lease, and one request more in the minute. Two ways it was
left: a sync call interrupted (Ctrl-C) during the exchange, and an async call cancelled during
it whose exchange, finished in the background, then failed (its answer lost, its commands run).
Either is now taken back: the member removed, and only if it was there the request given back,
so a start that never reached Redis takes nothing back. Real Redis, behind a relay for the lost
answer; each test has its own key prefix.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from tests.conftest import make_png
from tests.relay import TcpRelay
from tests.router_support import ManualClock, deployment
from tracking.router import RedisState, Router

pytestmark = pytest.mark.redis


class _InterruptedBegin:
    """A Redis client whose next pipeline holding a ZADD (a call's start) is interrupted, as
    Ctrl-C would, after Redis carried it out (``after=True``) or before it was sent."""

    def __init__(self, url: str, *, after: bool) -> None:
        self.real = redis.Redis.from_url(url, socket_timeout=5)
        self.after = after
        self.interrupted = 0

    def pipeline(self, **options: Any) -> Any:
        pipe = self.real.pipeline(**options)
        execute = pipe.execute

        def interrupted_execute() -> Any:
            starts = any(args[0] == "ZADD" for args, _ in pipe.command_stack)
            if not starts or self.interrupted:
                return execute()
            self.interrupted += 1
            if self.after:
                execute()
            raise KeyboardInterrupt

        pipe.execute = interrupted_execute
        return pipe

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("after", [True, False], ids=["carried-out", "never-sent"])
def test_a_sync_call_interrupted_during_its_start_takes_nothing(
    fake, redis_url, redis_prefix, after
):
    client = _InterruptedBegin(redis_url, after=after)
    state = RedisState(redis_url, prefix=redis_prefix, client=client, clock=ManualClock().time)
    router = Router([deployment("images", fake.url, id="d")], state=state)
    with pytest.raises(KeyboardInterrupt):
        router.image_edit(image=make_png(), prompt="a hat", model="images")
    assert client.interrupted == 1
    snapshot = state.snapshot(["d"])
    assert snapshot.in_flight == {"d": 0}
    assert snapshot.rpm == {"d": 0}  # taken back when it ran, never below 0 when it did not
    assert not state.degraded
    state.close()


def test_an_async_call_cancelled_during_its_start_whose_answer_is_lost_takes_nothing(
    redis_url, redis_prefix
):
    clock = ManualClock()
    direct = redis.Redis.from_url(redis_url)
    relay = TcpRelay(redis_url)
    state = RedisState(relay.url, prefix=redis_prefix, socket_timeout=5, clock=clock.time)
    calls_key = f"{redis_prefix}inflight-calls:d"
    rpm_key = f"{redis_prefix}rpm:d:{int(clock.time() // 60)}"

    async def cancelled_start() -> None:
        # a first exchange opens the connection (its handshake answered) as a routed call's
        # snapshot does before its start
        await state.steps.snapshot(["d"]).send(None).arun()
        relay.hold_replies()
        start = state.steps.begin("d", None)  # as a routed async call drives it
        exchange = asyncio.ensure_future(start.send(None).arun())
        while direct.zcard(calls_key) != 1:  # Redis carried it out; its answer is held
            await asyncio.sleep(0.01)
        exchange.cancel()  # the caller goes away; the exchange goes on in the background
        with pytest.raises(asyncio.CancelledError):
            await exchange
        relay.drop_live()  # and fails: its answer is lost
        while direct.zcard(calls_key) or int(direct.get(rpm_key) or 0):
            await asyncio.sleep(0.01)  # taken back (a hung test is ended below)

    try:
        asyncio.run(asyncio.wait_for(cancelled_start(), 60))  # a bound for "never"
        assert direct.zcard(calls_key) == 0
        assert int(direct.get(rpm_key) or 0) == 0
    finally:
        relay.close()
        direct.close()
        state.close()
