"""A Redis outage, or a Redis restart, while calls are in flight never grants a budget twice.

A ``tracking serve`` subprocess (SQLite ledger, counters in a private ``redis-server``) in front
of a fake upstream of its own that holds the first calls until the test lets them go, so they
are reserved on the budget but not in the ledger yet when Redis goes away (killed, or frozen
with SIGSTOP) or comes back empty (restarted). This instance knows the reservations it holds:
while Redis is away they count on top of the ledger's figure, and a counter seeded again after a
restart starts from the ledger plus them. Before, the budget was granted a second time.

The behaviour asserted does not depend on timing: the first calls are in flight (the upstream
holds them until the next ones have been checked, not for a fixed time), which the test verifies.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.accounts_support import (
    accounts_config,
    edit,
    generate,
    ledger_env,
    restart_redis,
    spend_rows,
    wait_for,
)
from tests.conftest import API_KEY
from tests.proxy_support import ProxyProcess
from tests.test_router_redis import private_redis  # noqa: F401 - a fixture, used by name
from tracking.pricing.estimate import max_expected_cost
from tracking.proxy.shared_counters import RedisCounters
from tracking.testing import FakeOpenAI

pytestmark = pytest.mark.redis

#: What ``edit`` reserves: the most one of its calls may cost.
ONE_CALL = max_expected_cost(
    ["gpt-image-1"],
    {"prompt": "make it blue", "quality": "low", "size": "1024x1024", "image": b"png", "n": 1},
)
assert ONE_CALL is not None
#: Room for FITS calls' reservations, not one more.
FITS = 4
BUDGET = (ONE_CALL * (FITS + Decimal("0.5"))).quantize(Decimal("0.00001"))
#: The counters' retry interval (TRACKING_REDIS_RETRY_SECONDS; 5 s by default).
RETRY_SECONDS = 1


class HeldFake(FakeOpenAI):
    """The fake upstream, holding the image calls that arrive once :meth:`hold` is called (at
    most ``count``) until :meth:`release`: in flight as long as the test needs, however slow
    the machine (a fixed ``latency`` held them 10 s, and could end before the checks on a
    loaded one)."""

    def __init__(self) -> None:
        super().__init__(api_keys=[API_KEY])
        self.held = 0  #: calls held so far (they reach the fake's answer, and its hits, after)
        self._to_hold = 0
        self._released = threading.Event()
        self.app.middlewares.append(self._hold)

    def hold(self, count: int) -> None:
        self._to_hold = count

    def release(self) -> None:
        self._released.set()

    @web.middleware
    async def _hold(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/images/edits") and self.held < self._to_hold:
            self.held += 1  # the fake's event loop: one request at a time
            while not self._released.is_set():
                await asyncio.sleep(0.02)
        return await handler(request)


@pytest.fixture
def slow_fake() -> Iterator[HeldFake]:
    server = HeldFake()
    with server:
        try:
            yield server
        finally:
            server.release()


@pytest.fixture
def proxy(
    slow_fake: FakeOpenAI,
    tmp_path: Path,
    private_redis: tuple[subprocess.Popen[bytes], str],  # noqa: F811
) -> Iterator[ProxyProcess]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, slow_fake.url, url, redis_url=private_redis[1])
    env = {**ledger_env(url), "TRACKING_REDIS_RETRY_SECONDS": str(RETRY_SECONDS)}
    with ProxyProcess(config, env=env) as process:
        yield process


def _fill_the_budget(
    pool: ThreadPoolExecutor, client: httpx.Client, proxy: ProxyProcess, fake: HeldFake, key: str
) -> list[Future[httpx.Response]]:
    """FITS + 2 calls at once: FITS are admitted and held by the upstream, 2 are refused."""
    fake.hold(FITS)
    calls = [pool.submit(edit, client, proxy.url, key) for _ in range(FITS + 2)]
    wait_for(lambda: fake.held == FITS and sum(call.done() for call in calls) == 2, timeout=30)
    assert sorted(call.result().status_code for call in calls if call.done()) == [429, 429]
    return calls


def _spent(client: httpx.Client, proxy: ProxyProcess, key_hash: str, calls: int) -> Decimal:
    wait_for(lambda: spend_rows(client, proxy.url, api_key_hash=key_hash)["total"] == calls)
    rows = spend_rows(client, proxy.url, api_key_hash=key_hash, page_size=100)["data"]
    return sum((Decimal(row["cost_usd"]) for row in rows), Decimal(0))


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_calls_reserved_in_redis_still_count_when_it_goes_away(
    proxy,
    slow_fake,
    private_redis,  # noqa: F811
    outage,
):
    redis_server, _ = private_redis
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(FITS + 2) as pool:
        made = generate(client, proxy.url, max_budget=str(BUDGET))
        first = _fill_the_budget(pool, client, proxy, slow_fake, made["key"])  # held in Redis
        try:
            if outage == "killed":
                redis_server.kill()
                redis_server.wait(10)
            else:  # keeps its counters, answers nothing
                redis_server.send_signal(signal.SIGSTOP)
            # The ledger has none of the first calls yet: the budget is theirs all the same.
            during = [edit(client, proxy.url, made["key"]).status_code for _ in range(3)]
            in_flight = sum(not call.done() for call in first)
        finally:
            redis_server.send_signal(signal.SIGCONT)
            slow_fake.release()
        served = [call.result().status_code for call in first].count(200)
        spent = _spent(client, proxy, made["key_hash"], served + during.count(200))
    assert in_flight == FITS  # (the upstream held them throughout)
    assert during == [429, 429, 429], during
    assert served == FITS and spent <= BUDGET, (served, spent, BUDGET)
    assert "Redis unavailable" in proxy.log() and "Traceback" not in proxy.log()


def test_calls_in_flight_count_on_a_counter_seeded_again_after_arestart_redis(
    proxy,
    slow_fake,
    private_redis,  # noqa: F811
):
    redis_server, _ = private_redis
    restarted: subprocess.Popen[bytes] | None = None
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(FITS + 2) as pool:
        made = generate(client, proxy.url, max_budget=str(BUDGET))
        redis_server.kill()
        redis_server.wait(10)
        try:
            # Reserved from the ledger while Redis is away.
            first = _fill_the_budget(pool, client, proxy, slow_fake, made["key"])
            restarted = restart_redis(redis_server)  # back, empty
            # Once the retry interval is over, Redis is used again: the key's counter is seeded
            # from the ledger (none of the first calls yet) and the calls this instance holds.
            after: list[int] = []
            deadline = time.monotonic() + 20
            while "Redis is back" not in proxy.log():
                assert time.monotonic() < deadline, "Redis was not used again"
                after.append(edit(client, proxy.url, made["key"]).status_code)
                time.sleep(0.25)
            after += [edit(client, proxy.url, made["key"]).status_code for _ in range(3)]
            in_flight = sum(not call.done() for call in first)
            slow_fake.release()
            served = [call.result().status_code for call in first].count(200)
            spent = _spent(client, proxy, made["key_hash"], served + after.count(200))
        finally:
            if restarted is not None:
                restarted.kill()
                restarted.wait(10)
    assert in_flight == FITS  # (the upstream held them throughout)
    assert set(after) == {429}, after
    assert served == FITS and spent <= BUDGET, (served, spent, BUDGET)
    assert "Redis is back, restarted" in proxy.log() and "Traceback" not in proxy.log()


async def test_a_counter_another_instance_seeded_after_a_restart_gets_this_ones_calls(
    private_redis,  # noqa: F811
):
    """Two instances' counters: after a restart the other instance seeds the counter first (from
    the ledger, which has not the call this one holds); this one, back on Redis, adds its
    reservations in flight to it, so neither can grant them again."""
    process, url = private_redis
    here = RedisCounters(url, prefix="t:", retry_interval=0.2)
    there = RedisCounters(url, prefix="t:", retry_interval=0.2)
    held, other, late = object(), object(), object()
    restarted: subprocess.Popen[bytes] | None = None
    try:
        assert await here.reserve("b", 300, 1000, 0, held) == 300  # in flight here
        process.kill()
        process.wait(10)
        assert await here.reserve("b", 100, 1000, None, late) is None  # away: ask the ledger
        assert here.degraded
        restarted = restart_redis(process)  # back, empty
        assert await there.reserve("b", 100, 1000, None, other) is None  # missing: seed it
        assert await there.reserve("b", 100, 1000, 0, other) == 100  # the ledger has 0
        await asyncio.sleep(0.3)  # past here's retry interval
        assert not here.degraded
        assert await here.reserve("b", 700, 1000, None, late) == -401  # 100 + 300 held here
        await here.adjust("b", 250 - 300, held)  # the held call cost 250
        assert await there.reserve("b", 0, 1000, None, late) == 350  # exact again
    finally:
        await here.aclose()
        await there.aclose()
        if restarted is not None:
            restarted.kill()
            restarted.wait(10)
