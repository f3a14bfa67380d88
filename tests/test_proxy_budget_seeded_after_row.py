"""A budget counter seeded between a call's row being written and its hold settling counts the
call once.

The proxy answers a call once its row is acknowledged, then settles the call's hold (replaces
its worst case with its real cost). A counter seeded from the ledger in between (the key's
budget changed, the counter idle or lost) read the call's row and added its hold as well, since
the call was still in flight; the settling then replaced the hold by the real cost, and the
call was counted twice for as long as the counter lived. The ledger is now read without the calls
in flight, which their holds count, on each kind of counter (one process's, the workers' shared
file, Redis).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, generate, ledger_env, wait_for
from tests.conftest import API_KEY
from tests.ledger_support import make_event, open_ledger
from tests.proxy_support import ProxyProcess
from tests.services import REDIS_TIMEOUT
from tracking.config import parse_config
from tracking.pricing.estimate import max_expected_cost
from tracking.proxy.account_store import AccountStore
from tracking.proxy.auth import Principal
from tracking.proxy.budgets import Budgets, Reservation
from tracking.proxy.machine_counters import COUNTERS_FILE_ENV, MachineCounters
from tracking.proxy.shared_counters import Counters, LocalCounters, RedisCounters, to_units
from tracking.testing import FakeOpenAI

MODEL = "gpt-image-2"
KEY = "k" * 64
PARAMS = {"model": MODEL, "prompt": "a hat", "quality": "low", "size": "1024x1024"}
REAL = Decimal("0.0041")


@pytest.fixture(params=["process", "workers", "redis"])
def make_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Counters]:
    """Makes the counters of a kind (in the event loop that will use and close them)."""
    if request.param == "process":
        return LocalCounters
    if request.param == "workers":
        return lambda: MachineCounters(str(tmp_path / "counters.db"))
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return lambda: RedisCounters(url, prefix=prefix, socket_timeout=REDIS_TIMEOUT)


def test_a_counter_seeded_after_a_calls_row_and_before_its_settling_counts_it_once(
    make_counters: Callable[[], Counters], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = parse_config(
        {"model_list": [{"model_name": MODEL, "litellm_params": {"model": MODEL,
                                                                 "api_key": API_KEY}}]},
        environ={},
    )  # fmt: skip
    store = AccountStore(url)
    key = Principal(kind="virtual", key_hash=KEY, max_budget_usd=Decimal(5))
    worst = max_expected_cost([MODEL], PARAMS, None)
    assert worst is not None and worst > REAL

    async def scenario() -> int | None:
        counters = make_counters()
        try:
            return await with_counters(counters)
        finally:
            await counters.aclose()

    async def with_counters(counters: Counters) -> int | None:
        budgets = Budgets(config, store, counters, cache_seconds=60)
        first = await budgets.reserve(key, dict(PARAMS), MODEL, request_id="call-1")
        # the call ends: its row is acknowledged, then (below) its hold settles
        ledger = open_ledger(url, mode="durable")
        try:
            ledger.on_end(make_event(request_id="call-1", model=MODEL, cost=REAL, api_key_hash=KEY))
        finally:
            ledger.shutdown(10)
        await budgets.reset_key(KEY)  # meanwhile the key's budget was changed
        second = await budgets.reserve(key, dict(PARAMS), MODEL, request_id="call-2")
        await first.settle(REAL)
        await second.release()
        return await counters.reserve(f"key:{KEY}:total", 0, to_units(Decimal(5)), None)

    try:
        assert asyncio.run(scenario()) == to_units(REAL)
    finally:
        store.close()


def test_a_seed_read_while_a_call_settled_is_read_again(
    make_counters: Callable[[], Counters],
) -> None:
    """The ledger is read without the calls in flight; a call that settles before the counter
    starts from that figure is in it only when read again: the figure is refused (None) until
    the calls in flight are those it was read without."""
    name, limit = "key:k:total", 10**9

    async def scenario() -> list[object]:
        counters = make_counters()
        try:
            hold = Reservation(request_id="call-1")
            await counters.reserve(name, 100, limit, 0, hold)
            await counters.drop([name])
            calls = await counters.calls_in_flight(name)
            await counters.adjust(name, 40 - 100, hold)  # settles: its row counts in the ledger
            stale = await counters.reserve(name, 0, limit, 0, object(), calls)
            again = await counters.calls_in_flight(name)
            seeded = await counters.reserve(name, 0, limit, 40, object(), again)
            return [calls, stale, again, seeded]
        finally:
            await counters.aclose()

    assert asyncio.run(scenario()) == [frozenset({"call-1"}), None, frozenset(), 40]


def test_the_proxy_holds_a_calls_budget_under_its_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI, client: httpx.Client
) -> None:
    """The proxy names each hold by its call's request id (the ledger row's, the answer's
    ``x-tracking-request-id``): how a seeded counter tells the calls in flight from the ledger's
    rows. Seen in the workers' shared file while the call waits on the upstream."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    counters_file = tmp_path / "counters.db"
    config = accounts_config(tmp_path, fake.url, url, models=(MODEL,))
    env = {**ledger_env(url), COUNTERS_FILE_ENV: str(counters_file)}
    with ProxyProcess(config, env=env) as proxy:
        key = generate(client, proxy.url, max_budget="5")["key"]
        seen: list[str] = []

        def held() -> bool:
            if counters_file.exists():
                db = sqlite3.connect(counters_file)
                try:
                    seen.extend(r for (r,) in db.execute("SELECT request_id FROM holds") if r)
                finally:
                    db.close()
            return bool(seen)

        fake.inject(latency=5)  # the call is in flight, its hold taken, for that long
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(edit, client, proxy.url, key, model=MODEL)
            wait_for(held, timeout=30)
            response = answer.result(timeout=60)
        assert response.status_code == 200, response.text
        assert seen[0] == response.headers["x-tracking-request-id"]
