"""The pieces under the proxy's keys and budgets: migration 0003 on both dialects (in agreement
with the tables), hashing, durations, the maximum expected cost, the shared counters' atomic
reserve in Redis, and an open proxy refusing key management."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.services import REDIS_TIMEOUT
from tracking.config import parse_config
from tracking.integrations.sql import VERSION_TABLE, create_ledger_engine, downgrade, upgrade
from tracking.proxy.account_store import AccountStore
from tracking.proxy.account_tables import account_metadata, include_account_object
from tracking.proxy.accounts import Accounts
from tracking.proxy.auth import Authenticator
from tracking.proxy.budgets import max_expected_cost, period_window
from tracking.proxy.errors import ProxyError
from tracking.proxy.keys import generate_key, hash_key, parse_duration
from tracking.proxy.machine_counters import MachineCounters
from tracking.proxy.shared_counters import LocalCounters, RedisCounters, to_units


@pytest.fixture
def engine(ledger_url):
    engine = create_ledger_engine(ledger_url)
    yield engine
    engine.dispose()


def test_migration_0003_creates_and_drops_only_the_proxy_tables(engine):
    upgrade(engine)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"proxy_keys", "proxy_end_users", "spend_logs"} <= tables
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": include_account_object,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        assert compare_metadata(context, account_metadata) == []
    downgrade(engine, "0002")
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert "spend_logs" in tables and not tables & {"proxy_keys", "proxy_end_users"}


def test_keys_are_random_and_stored_as_their_sha256():
    first, second = generate_key(), generate_key()
    assert first != second and first.startswith("sk-") and len(first) >= 46
    assert hash_key(first) == hashlib.sha256(first.encode()).hexdigest()


def test_durations():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("15m") == timedelta(minutes=15)
    for bad in ("0d", "1y", "soon", ""):
        with pytest.raises(ProxyError):
            parse_duration(bad)


def test_periods_start_at_utc_midnight_and_the_first_of_the_month():
    now = datetime(2026, 11, 24, 21, 5, tzinfo=UTC)
    assert period_window("daily", now) == (datetime(2026, 11, 24, tzinfo=UTC), "d2026-11-24")
    assert period_window("monthly", now) == (datetime(2026, 11, 1, tzinfo=UTC), "m2026-11")
    assert period_window("total", now) == (None, "total")


def test_max_expected_cost_follows_n_size_and_quality():
    base = {"prompt": "x" * 10, "image": ("a.png", b"", None)}
    low = max_expected_cost(["gpt-image-1"], {**base, "quality": "low", "size": "1024x1024"})
    high = max_expected_cost(["gpt-image-1"], {**base, "quality": "high", "size": "1024x1024"})
    two = max_expected_cost(
        ["gpt-image-1"], {**base, "quality": "low", "size": "1024x1024", "n": 2}
    )
    auto = max_expected_cost(["gpt-image-1"], {**base})
    assert low is not None and high is not None and two is not None and auto is not None
    # 0.011 per image, plus 10 text tokens at $5/M and 1,000 image tokens at $10/M.
    assert low == Decimal("0.011") + Decimal("0.00005") + Decimal("0.01")
    assert two - low == Decimal("0.011")
    assert low < high <= auto  # auto reserves the dearest quality and size
    assert max_expected_cost(["openai/gpt-image-1"], {**base, "quality": "low"}) is not None
    assert max_expected_cost(["some-new-model"], base) is None


def test_local_counters_reserve_atomically_and_settle():
    counters = LocalCounters()

    async def scenario() -> list[int | None]:
        first = await counters.reserve("u", 40, 100, None)
        seeded = await counters.reserve("u", 40, 100, 10)
        second = await counters.reserve("u", 40, 100, None)
        refused = await counters.reserve("u", 40, 100, None)
        await counters.adjust("u", -30)
        third = await counters.reserve("u", 40, 100, None)
        return [first, seeded, second, refused, third]

    assert asyncio.run(scenario()) == [None, 50, 90, -91, 100]
    assert to_units(Decimal("0.000000001")) == 1  # rounded up, never down


def test_past_periods_budget_counters_are_forgotten_not_kept_forever(tmp_path):
    """A daily budget makes a counter per end user per day: without Redis (one process, or the
    workers' file) each was kept for the life of the proxy after its day had gone."""
    now = [1_000_000.0]
    local = LocalCounters(clock=lambda: now[0])
    machine = MachineCounters(str(tmp_path / "counters.db"), clock=lambda: now[0])

    async def days(counters: LocalCounters | MachineCounters) -> None:
        for day in range(1, 31):  # a month of one end user's daily counters
            assert await counters.reserve(f"user:alice:d{day}", 5, 100, 0) == 5
            await counters.adjust(f"user:alice:d{day}", -2)
            now[0] += 24 * 3600
        # an expired counter is missing (seeded again from the ledger), as it always was
        assert await counters.reserve("user:alice:d30", 5, 100, None) is None
        assert await counters.reserve("user:alice:d31", 5, 100, 0) == 5

    asyncio.run(days(local))
    assert list(local._money) == ["user:alice:d31"]  # today's alone
    asyncio.run(days(machine))
    try:
        with sqlite3.connect(machine.path) as conn:
            assert conn.execute("SELECT count(*) FROM money").fetchone() == (1,)
    finally:
        asyncio.run(machine.aclose())


async def test_redis_reservations_never_pass_the_limit_under_concurrency(redis_url, redis_prefix):
    # What is checked is the script's atomicity, not the timeout: the 40 reservations open 40
    # connections at once, which on a loaded CI machine took longer than the default 1 s.
    counters = RedisCounters(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    try:
        await counters.reserve("race", 0, 1000, 0)
        results = await asyncio.gather(
            *(counters.reserve("race", 70, 1000, None) for _ in range(40))
        )
        admitted = [r for r in results if r is not None and r >= 0]
        assert len(admitted) == 1000 // 70
        assert max(admitted) == 70 * len(admitted) <= 1000
        assert not counters.degraded
    finally:
        await counters.aclose()


async def test_key_management_on_an_open_proxy_is_refused():
    config = parse_config({"model_list": []}, environ={})
    accounts = Accounts(config)
    routes = accounts.routes(Authenticator(None))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/key/generate", "headers": []}
    with pytest.raises(ProxyError) as info:
        await routes["POST", "/key/generate"](scope, receive, send)
    assert info.value.status == 403 and info.value.code == "master_key_required"
    assert accounts.key_checks == () and not sent
    await accounts.aclose()


def test_reads_without_a_configured_database_create_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACKING_DATABASE_URL", raising=False)
    store = AccountStore(None)
    assert store.get_end_user("alice") is None and store.get_key("0" * 64) is None
    assert store.spent(end_user="alice", since=None) == 0
    assert not (tmp_path / "tracking.db").exists()
    store.close()


async def test_an_outages_budget_changes_are_merged_back_once(redis_url, redis_prefix):
    """While Redis is away a reservation is checked against the ledger's figure plus this
    instance's reservations in flight (the one Redis admitted before the outage included); what
    the counter missed is merged back exactly once, however many calls arrive together when
    Redis answers again."""
    counters = RedisCounters(
        redis_url, prefix=redis_prefix, retry_interval=3600, socket_timeout=REDIS_TIMEOUT
    )
    first, second, late = object(), object(), object()
    try:
        assert await counters.reserve("b", 100, 1000, 0, first) == 100  # Redis: 100
        counters.outage.failed(ConnectionError("gone"))  # Redis is away from here on
        assert await counters.reserve("b", 300, 1000, None, second) is None  # read the ledger
        assert await counters.reserve("b", 300, 1000, 250, second) == 650  # 250 + 100 + 300
        assert await counters.reserve("b", 500, 1000, 250, late) == -651  # 250 + 400 held
        await counters.adjust("b", 80 - 100, first)  # the first call cost 80
        await counters.adjust("b", 200 - 300, second)  # the second cost 200
        counters.outage.retry_interval = 0
        counters.outage.failed(ConnectionError("over"))  # Redis is tried again now
        assert not counters.degraded
        results = await asyncio.gather(*(counters.reserve("b", 0, 1000, None) for _ in range(5)))
        assert results == [280] * 5  # 100 - 20 + 300 - 100, merged once
    finally:
        await counters.aclose()
