"""A Redis that stops answering (paused, not down) holds the proxy's counter operations for at
most their timeout, and never the event loop; every Redis client is configured in one place."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.loop_ticks import loop_ticks
from tests.relay import TcpRelay
from tracking.proxy.shared_counters import RedisCounters

ROOT = Path(__file__).resolve().parent.parent


async def test_a_paused_redis_never_blocks_the_loop_and_counts_fall_back(redis_url, redis_prefix):
    relay = TcpRelay(redis_url)  # a loopback relay this test pauses; the shared server is not
    counters = RedisCounters(relay.url, prefix=redis_prefix, socket_timeout=1.0)
    try:
        assert await counters.hit_rpm("key-a", 100) is None  # Redis answers through the relay
        assert await counters.reserve("budget-a", 10, 1000, 0) == 10
        assert not counters.degraded
        relay.pause()
        async with loop_ticks() as ticks:
            # The rpm window falls back to this instance's count, the budget to the ledger's
            # figure (the seed) plus the calls in flight here.
            rpm, reserved = await asyncio.gather(
                counters.hit_rpm("key-a", 100), counters.reserve("budget-a", 10, 1000, 10)
            )
            ran_meanwhile = ticks.count
        assert rpm is None and reserved == 20
        assert counters.degraded  # the timeout passed: Redis is considered away
        assert ran_meanwhile > 0  # while both calls waited on Redis, the loop ran other work
    finally:
        relay.restore()
        await counters.aclose()
        relay.close()


def test_every_redis_client_is_made_in_one_place():
    made = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "tracking").rglob("*.py"))
        if re.search(r"Redis\.from_url\(|redis\.Redis\(", path.read_text(encoding="utf-8"))
    ]
    assert made == ["tracking/redis_outage.py"]
