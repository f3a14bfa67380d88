"""Two proxy instances sharing one PostgreSQL database and one Redis behave as one proxy: the same
keys, one budget per end user (raced by concurrent requests to both), one rpm window per key; a
Redis outage degrades to per-instance counters, never to a 500; keys never leak.

The tests share two ``tracking serve`` subprocesses on their own ports, with a fresh database
(``module_postgres_url``) and a unique Redis key prefix (``module_redis_prefix``), each test with
keys and end users of its own; the test that stops them to read their whole logs has its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import (
    accounts_config,
    bearer,
    edit,
    generate,
    ledger_env,
    spend_rows,
    wait_for,
)
from tests.minute_support import in_one_minute
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.services import REDIS_TIMEOUT_ENV
from tracking.integrations.sql import create_ledger_engine, upgrade

BUDGET = Decimal("0.1")


@contextlib.contextmanager
def _pair(
    folder: Path,
    fake_url: str,
    database: str,
    redis_url: str | None,
    prefix: str,
    router_settings: dict[str, Any] | None = None,
):
    """Two instances sharing ``database`` and the Redis of ``redis_url`` (or of
    ``router_settings``: ``tests/test_proxy_budget_redis_cluster.py`` names a cluster so)."""
    engine = create_ledger_engine(database)
    try:
        upgrade(engine)  # `tracking migrate`, once, before the instances start
    finally:
        engine.dispose()
    config = accounts_config(
        folder, fake_url, database, redis_url=redis_url, router_settings=router_settings
    )
    env = {
        **ledger_env(database),
        "TRACKING_REDIS_PREFIX": prefix,
        "TRACKING_KEY_CACHE_SECONDS": "0.5",
        **REDIS_TIMEOUT_ENV,
    }
    processes = [ProxyProcess(config, env=env), ProxyProcess(config, env=env)]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
def pair(
    fake, tmp_path_factory, module_postgres_url, module_redis_url, module_redis_prefix
) -> Iterator[list[ProxyProcess]]:
    """Two instances the module's tests share: each test uses keys and users of its own."""
    folder = tmp_path_factory.mktemp("keys-shared")
    with _pair(folder, fake.url, module_postgres_url, module_redis_url, module_redis_prefix) as two:
        yield two


@pytest.fixture
def own_pair(fake, tmp_path, postgres_url, redis_url, redis_prefix) -> Iterator[list[ProxyProcess]]:
    """Two instances of the test's own (it stops them, and reads every row and Redis key)."""
    with _pair(tmp_path, fake.url, postgres_url, redis_url, redis_prefix) as two:
        yield two


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        yield http


def test_a_key_made_on_one_instance_works_on_the_other_and_revocation_is_bounded(pair, client):
    first, second = pair
    made = generate(client, first.url, key_alias="shared")
    assert edit(client, second.url, made["key"]).status_code == 200
    deleted = client.post(
        f"{first.url}/key/delete", headers=bearer(MASTER_KEY), json={"keys": [made["key"]]}
    )
    assert deleted.status_code == 200
    assert edit(client, first.url, made["key"]).status_code == 401
    # The other instance cached the key: it stops accepting it within the cache time (0.5 s).
    wait_for(lambda: edit(client, second.url, made["key"]).status_code == 401)


def test_two_instances_racing_on_one_end_users_budget_stay_within_it(pair, client):
    first, second = pair
    logged = [len(proxy.log()) for proxy in pair]  # the module's earlier tests' lines
    user = "raced-user"
    made = client.post(
        f"{first.url}/customer/new",
        headers=bearer(MASTER_KEY),
        json={"user_id": user, "max_budget": str(BUDGET), "budget_period": "total"},
    )
    assert made.status_code == 200

    def call(index: int) -> int:
        proxy = pair[index % 2]
        return edit(client, proxy.url, MASTER_KEY, user=user).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(call, range(24)))
    assert set(statuses) <= {200, 429}, statuses
    # Each call reserves ~$0.021 and costs ~$0.014: at least four always fit, never all 24.
    assert statuses.count(200) >= 4 and statuses.count(429) >= 1
    # Spend what is left, one call at a time, on both instances, until both refuse.
    for _ in range(10):
        last = [call(0), call(1)]
        statuses += last
        if last == [429, 429]:
            break
    assert statuses[-2:] == [429, 429]
    successes = statuses.count(200)
    wait_for(lambda: spend_rows(client, second.url, user=user)["total"] == successes)
    rows = spend_rows(client, first.url, user=user, page_size=1000)["data"]
    spent = sum(Decimal(row["cost_usd"]) for row in rows)
    # The documented bound: no overshoot while each reservation covers its call's cost and
    # Redis answers; if it timed out under load, each instance counted alone meanwhile.
    degraded = any(
        "Redis unavailable" in proxy.log()[start:]
        for proxy, start in zip(pair, logged, strict=True)
    )
    assert Decimal("0.05") < spent <= (BUDGET * 2 if degraded else BUDGET)
    info = client.get(
        f"{second.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": user}
    ).json()
    assert Decimal(info["total_spend"]) == spent


def test_an_end_user_deleted_and_made_again_counts_from_the_deletion_on_both(pair, client):
    """The second instance's calls started the end user's counter in Redis; the first deletes
    the end user and makes them again with a budget smaller than they spent: the deletion
    drops the shared counter, which starts again from the ledger's calls since the deletion, so
    both instances admit their calls (LiteLLM's customer row made again starts at $0)."""
    first, second = pair
    user, master = "remade-shared", bearer(MASTER_KEY)

    def made(proxy: ProxyProcess, budget: Decimal) -> int:
        document = {"user_id": user, "max_budget": str(budget)}
        return client.post(f"{proxy.url}/customer/new", headers=master, json=document).status_code

    def cost(proxy: ProxyProcess) -> Decimal:
        answer = edit(client, proxy.url, MASTER_KEY, user=user)
        assert answer.status_code == 200, answer.text
        return Decimal(answer.headers["x-tracking-response-cost"])

    assert made(first, Decimal(5)) == 200
    costs = [cost(second) for _ in range(5)]  # the counter in Redis, started by the second
    gone = client.post(f"{first.url}/customer/delete", headers=master, json={"user_ids": [user]})
    assert gone.status_code == 200, gone.text
    assert made(first, sum(costs, Decimal(0)) - costs[0] / 2) == 200  # less than spent before
    since = cost(first) + cost(second)  # both admitted: the counter counts from the deletion
    info = client.get(
        f"{second.url}/customer/info", headers=master, params={"end_user_id": user}
    ).json()
    assert Decimal(info["total_spend"]) == Decimal(info["period_spend"]) == since


def test_a_keys_rpm_is_one_window_across_instances(pair, client):
    key = generate(client, pair[0].url, rpm_limit=3)["key"]

    def six_calls() -> tuple[list[int], list[int]]:
        # the refusals so far: the module's earlier tests', and those of a run straddling a minute
        before = [_rate_rejections(client, proxy, absent=0) for proxy in pair]
        return before, [edit(client, pair[i % 2].url, key).status_code for i in range(6)]

    before, statuses = in_one_minute(six_calls)
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    assert statuses[:3] == [200, 200, 200]
    # Metrics stay per instance: each counts the refusals it answered.
    for index, proxy in enumerate(pair):
        refused_here = statuses[index::2].count(429)
        assert _rate_rejections(client, proxy) - before[index] == refused_here


def _rate_rejections(client: httpx.Client, proxy: ProxyProcess, absent: int | None = None) -> int:
    """The instance's rate refusals so far; ``absent`` if it has no such metric yet (else an
    error)."""
    text = client.get(f"{proxy.url}/metrics").text
    for line in text.splitlines():
        if line.startswith('image_edit_proxy_rejections_total{reason="rate"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    if absent is not None:
        return absent
    raise AssertionError("no rate rejections metric")


def test_a_planted_key_never_appears_in_logs_responses_rows_or_redis(
    own_pair, client, postgres_url, redis_url, redis_prefix
):
    pair = own_pair
    first = pair[0]
    made = generate(client, first.url, key_alias="planted", models=["gpt-image-1"], rpm_limit=50)
    key = made["key"]
    seen: list[str] = []
    for proxy in pair:
        for response in (
            edit(client, proxy.url, key, user="planted-user"),
            edit(client, proxy.url, key, model="dall-e-2"),  # 403
            edit(client, proxy.url, key, model="gpt-image-1", size="1x1"),  # 400
            client.get(f"{proxy.url}/key/info", headers=bearer(key)),
            client.get(f"{proxy.url}/key/info", headers=bearer(MASTER_KEY), params={"key": key}),
            client.get(f"{proxy.url}/spend/logs", headers=bearer(key)),
            client.get(f"{proxy.url}/spend/keys", headers=bearer(key)),
            client.post(f"{proxy.url}/key/generate", headers=bearer(key), json={}),
            client.get(f"{proxy.url}/metrics"),
        ):
            seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
    wait_for(lambda: spend_rows(client, first.url, user="planted-user")["total"] == 2)
    assert any(made["key_hash"] in text for text in seen)

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            for table in ("spend_logs", "proxy_keys", "proxy_end_users"):
                seen.append(repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all()))
    finally:
        engine.dispose()
    import redis

    with redis.Redis.from_url(redis_url) as server:
        for name in server.scan_iter(match=f"{redis_prefix}*"):
            seen.append(repr(name))
            if server.type(name) == b"string":
                seen.append(repr(server.get(name)))
    for proxy in pair:
        proxy.stop()  # the whole log, shutdown included
        seen.append(proxy.log())
    everything = "\n".join(seen)
    assert key not in everything and key[3:] not in everything
    assert MASTER_KEY not in everything


def test_redis_down_falls_back_to_local_counters_never_a_500(fake, tmp_path, client):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, fake.url, url, redis_url="redis://127.0.0.1:9/0")
    with ProxyProcess(config, env=ledger_env(url)) as proxy:
        key = generate(client, proxy.url, rpm_limit=2, max_budget="10")["key"]
        statuses = in_one_minute(
            lambda: [edit(client, proxy.url, key, user="offline").status_code for _ in range(3)]
        )
        assert statuses == [200, 200, 429]
        log = proxy.log()
    assert "Redis unavailable" in log and "Traceback" not in log
