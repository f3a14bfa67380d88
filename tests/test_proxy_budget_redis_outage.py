"""A key's budget holds through a Redis outage, with one and with two proxy instances sharing a
PostgreSQL ledger: strictly sequential calls before, during and after the outage never spend more
than the budget plus one call's maximum cost. A private ``redis-server`` is frozen (SIGSTOP, so
it keeps its counters, now stale) and thawed (SIGCONT), or killed and started again empty; with
the outage's spend merged back (or the counters seeded from the ledger again), the counters are
exact again after recovery (or over-state by the reservation whose Redis command
timed out as the outage began: never an overspend)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts_support import (
    accounts_config,
    edit,
    generate,
    ledger_env,
    restart_redis,
    spend_rows,
    wait_for,
)
from tests.proxy_support import ProxyProcess
from tests.test_router_redis import private_redis  # noqa: F401 - a fixture, used by name
from tracking.integrations.sql import create_ledger_engine, upgrade
from tracking.proxy.budgets import max_expected_cost
from tracking.proxy.shared_counters import RedisCounters

pytestmark = pytest.mark.redis

BUDGET = Decimal("0.2")
#: The counters' retry interval (TRACKING_REDIS_RETRY_SECONDS; 5 s by default).
RETRY_SECONDS = 1
CALL = {"quality": "low", "size": "1024x1024", "prompt": "make it blue", "n": 1, "image": b"png"}


@pytest.fixture(params=[1, 2], ids=["one-instance", "two-instances"])
def instances(
    request,
    fake,
    tmp_path,
    postgres_url,
    private_redis,  # noqa: F811
) -> Iterator[tuple[list[ProxyProcess], subprocess.Popen[bytes]]]:
    process, url = private_redis
    engine = create_ledger_engine(postgres_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    config = accounts_config(tmp_path, fake.url, postgres_url, redis_url=url)
    env = {**ledger_env(postgres_url), "TRACKING_REDIS_RETRY_SECONDS": str(RETRY_SECONDS)}
    proxies = [ProxyProcess(config, env=env) for _ in range(request.param)]
    try:
        for proxy in proxies:
            proxy.start()
        yield proxies, process
    finally:
        process.send_signal(signal.SIGCONT)
        for proxy in proxies:
            proxy.stop()


def _rows(client: httpx.Client, base: str, key_hash: str) -> dict[str, Any]:
    rows: dict[str, Any] = spend_rows(client, base, api_key_hash=key_hash, page_size=1000)
    return rows


def _spent(client: httpx.Client, base: str, key_hash: str) -> Decimal:
    rows = _rows(client, base, key_hash)["data"]
    return sum((Decimal(row["cost_usd"]) for row in rows), Decimal(0))


@pytest.mark.parametrize("outage", ["frozen", "restarted"])
def test_a_budget_holds_through_a_redis_outage(instances, outage):
    proxies, redis_server = instances
    one_call = max_expected_cost(["gpt-image-1"], CALL)
    assert one_call is not None
    restarted: subprocess.Popen[bytes] | None = None
    try:
        with httpx.Client(timeout=60) as client:
            made = generate(client, proxies[0].url, max_budget=str(BUDGET))
            turn = iter(range(1_000))

            def call() -> int:
                proxy = proxies[next(turn) % len(proxies)]
                return edit(client, proxy.url, made["key"]).status_code

            before = [call() for _ in range(3)]
            if outage == "frozen":  # Redis keeps its (now stale) counters
                redis_server.send_signal(signal.SIGSTOP)
            else:  # Redis loses everything
                redis_server.kill()
                redis_server.wait(10)
            during = [call() for _ in range(6)]
            if outage == "frozen":
                redis_server.send_signal(signal.SIGCONT)
            else:
                restarted = restart_redis(redis_server)
            time.sleep(RETRY_SECONDS + 0.5)  # past the counters' retry interval: Redis again
            after: list[int] = []
            while len(after) < 30 and after[-2:] != [429, 429]:
                after.append(call())
            served = (before + during + after).count(200)
            # PostgreSQL rows arrive through the outbox: wait until every call's row is there.
            wait_for(lambda: _rows(client, proxies[0].url, made["key_hash"])["total"] == served)
            spent = _spent(client, proxies[0].url, made["key_hash"])
    finally:
        if restarted is not None:
            restarted.kill()
            restarted.wait(10)
    assert before == [200] * 3 and during == [200] * 6, (before, during)
    assert after[-2:] == [429, 429] and 200 in after, after
    print(f"{outage}, {len(proxies)} instance(s): spent {spent} of {BUDGET} (a call <= {one_call})")
    assert spent <= BUDGET + one_call
    logs = "".join(proxy.log() for proxy in proxies)
    assert "Redis unavailable" in logs and ("merged the outage's spend" in logs) == (
        outage == "frozen"
    )
    assert f"retrying Redis in {RETRY_SECONDS} s" in logs  # the interval it was given
    assert "Traceback" not in logs


def _retry_interval() -> float:
    """The counters' retry interval a proxy would start with, in this environment."""
    from tracking.proxy.accounts import _counters

    counters = _counters("redis://127.0.0.1:9/0")  # never reached
    assert isinstance(counters, RedisCounters)
    asyncio.run(counters.aclose())
    return counters.outage.retry_interval


def test_the_retry_interval_setting_takes_seconds_and_refuses_anything_else(monkeypatch, caplog):
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "0.5")
    assert _retry_interval() == 0.5
    for wrong in ("inf", "nan", "-1", "soon"):
        monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", wrong)
        caplog.clear()
        assert _retry_interval() == 5
        assert f"TRACKING_REDIS_RETRY_SECONDS={wrong!r} is not a number of seconds" in caplog.text
    monkeypatch.delenv("TRACKING_REDIS_RETRY_SECONDS")
    assert _retry_interval() == 5
