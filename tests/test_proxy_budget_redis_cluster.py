"""The proxy's counters on a real Redis Cluster of three masters (``tests/redis_cluster_support``).

Two instances' counters share the cluster (each test under a key prefix of its own, so the tests'
counters land on different masters): a budget refuses exactly at its limit, settles, releases and
is reset; rate limits and the keys' version are shared; the dead-worker scenarios of
``tests/test_proxy_budget_dead_worker_holds.py`` run here too (their ``redis_url`` is the
cluster's). Before, a ``redis+cluster://`` URL was not understood, and the heartbeat's script
named keys it was not given, which a cluster refuses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts_support import bearer, edit, spend_rows, wait_for
from tests.proxy_support import MASTER_KEY
from tests.redis_cluster_support import (
    cluster_client,
    cluster_prefix,
    redis_cluster,
    redis_prefix,
    redis_url,
)
from tests.router_support import closed_port
from tests.services import REDIS_TIMEOUT
from tests.test_proxy_budget_dead_worker_holds import (
    Hold,
    counter_value,
    test_a_counter_started_again_counts_every_workers_calls_in_flight,
    test_a_dead_workers_holds_are_released_once_its_lease_is_over,
    test_a_worker_stopping_cleanly_leaves_nothing_behind,
    test_a_worker_taken_for_dead_puts_back_its_calls_and_settles_each_once,
    test_an_outage_longer_than_the_lease_is_replayed_without_counting_twice,
    workers,
)
from tests.test_proxy_keys_shared import _pair
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.proxy.accounts import redis_url_of
from tracking.proxy.shared_counters import RedisCounters

pytestmark = pytest.mark.redis

__all__ = [  # the fixtures and tests this module runs on the cluster
    "cluster_prefix",
    "redis_cluster",
    "redis_prefix",
    "redis_url",
    "test_a_counter_started_again_counts_every_workers_calls_in_flight",
    "test_a_dead_workers_holds_are_released_once_its_lease_is_over",
    "test_a_worker_stopping_cleanly_leaves_nothing_behind",
    "test_a_worker_taken_for_dead_puts_back_its_calls_and_settles_each_once",
    "test_an_outage_longer_than_the_lease_is_replayed_without_counting_twice",
    "workers",
]

LIMIT = 1000


@pytest.fixture
async def instances(
    redis_cluster: str, cluster_prefix: str
) -> AsyncIterator[Callable[[], RedisCounters]]:
    """Makes the counters of proxy instances sharing the cluster; each is closed after."""
    made: list[RedisCounters] = []

    def instance() -> RedisCounters:
        counters = RedisCounters(redis_cluster, prefix=cluster_prefix, socket_timeout=REDIS_TIMEOUT)
        made.append(counters)
        return counters

    yield instance
    for counters in made:
        await counters.aclose()
        assert not counters.degraded, counters.outage.failures  # Redis never failed


async def test_a_budget_refuses_exactly_at_its_limit_across_two_instances(
    instances, redis_cluster, cluster_prefix
):
    one, two = instances(), instances()
    assert await one.reserve("b", 600, LIMIT, None, Hold("a")) is None  # missing: seed it
    assert await one.reserve("b", 600, LIMIT, 0, Hold("a"), frozenset()) == 600
    assert await two.reserve("b", 400, LIMIT, None, Hold("b")) == 1000  # exactly the limit
    assert await two.reserve("b", 1, LIMIT, None, Hold("c")) == -1001  # refused: at the limit
    assert await one.reserve("b", 1, LIMIT, None, Hold("d")) == -1001
    assert await one.calls_in_flight("b") == {"a", "b"}
    assert counter_value(redis_cluster, cluster_prefix, "b") == 1000
    assert not one.degraded and not two.degraded


async def test_settling_and_releasing_on_the_cluster(instances, redis_cluster, cluster_prefix):
    one, two = instances(), instances()
    settled, released = Hold("settled"), Hold("released")
    assert await one.reserve("b", 600, LIMIT, 0, settled, frozenset()) == 600
    assert await two.reserve("b", 400, LIMIT, None, released) == 1000
    await one.adjust("b", 450 - 600, settled)  # it cost 450
    await two.adjust("b", -400, released)  # it never reached the upstream: released
    assert counter_value(redis_cluster, cluster_prefix, "b") == 450
    assert await two.calls_in_flight("b") == frozenset()
    assert await two.reserve("b", 550, LIMIT, None, Hold("rest")) == 1000
    assert await one.reserve("b", 1, LIMIT, None, Hold("over")) == -1001


async def test_a_budget_reset_starts_again_from_the_ledger_and_the_holds(
    instances, redis_cluster, cluster_prefix
):
    one, two = instances(), instances()
    done, held = Hold("done"), Hold("in-flight")
    assert await one.reserve("b", 300, LIMIT, 0, done, frozenset()) == 300
    await one.adjust("b", 0, done)
    assert await two.reserve("b", 200, LIMIT, None, held) == 500
    await one.drop(["b"])  # its budget changed: counted again from the ledger
    assert counter_value(redis_cluster, cluster_prefix, "b") is None
    calls = await one.calls_in_flight("b")
    assert calls == {"in-flight"}
    # the ledger says 250 without the call in flight, whose hold is added
    assert await one.reserve("b", 550, LIMIT, 250, Hold("x"), calls) == 1000
    await two.adjust("b", 180 - 200, held)
    assert counter_value(redis_cluster, cluster_prefix, "b") == 980


async def test_rate_limits_and_the_keys_version_are_shared(instances):
    one, two = instances(), instances()
    for attempt in range(3):  # rpm counts calendar minutes: a run across a minute's end is
        minute, key = int(time.time() // 60), f"key-{attempt}"  # run again on a fresh key
        hits = [await one.hit_rpm(key, 2), await two.hit_rpm(key, 2), await one.hit_rpm(key, 2)]
        if int(time.time() // 60) == minute:
            break
    assert hits[:2] == [None, None]
    assert hits[2] is not None  # the third of the minute waits
    assert await two.keys_version() == 0
    await one.keys_changed()
    assert await two.keys_version() == 1


async def test_every_key_of_a_prefix_is_in_one_slot(instances, redis_cluster):
    counters = instances()
    client = cluster_client(redis_cluster)
    try:
        names = [("budget", "b"), ("holds", "b"), ("holder", "w"), ("lease", "w"), ("rpm", "k")]
        slots = {client.keyslot(counters.key(kind, name)) for kind, name in names}
        slots.add(client.keyslot(counters._registry))
    finally:
        client.close()
    assert len(slots) == 1, slots


def test_redis_startup_nodes_are_checked_and_name_the_cluster():
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}]}
    nodes = [{"host": "10.0.0.1", "port": 7000}, {"host": "10.0.0.2", "port": "7001"}]
    config = parse_config({**base, "router_settings": {"redis_startup_nodes": nodes}})
    url = "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"
    assert redis_url_of(config) == url
    secret = {"redis_startup_nodes": nodes[:1], "redis_password": "p@ss"}
    assert redis_url_of(parse_config({**base, "router_settings": secret})) == (
        "redis+cluster://:p%40ss@10.0.0.1:7000"
    )
    with pytest.raises(ConfigurationError, match=r"redis_startup_nodes: each node is"):
        parse_config({**base, "router_settings": {"redis_startup_nodes": [{"port": 7000}]}})
    with pytest.raises(ConfigurationError, match=r"redis_startup_nodes: expected a list"):
        parse_config({**base, "router_settings": {"redis_startup_nodes": "10.0.0.1:7000"}})


def test_the_proxys_counters_and_the_router_read_one_redis_url_from_the_settings():
    """One reading of ``router_settings`` for both: the proxy's counters put a
    ``redis_password`` into their URL unquoted (``p@ss/1`` made another host), the router
    quoted it."""
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}]}
    settings = {"redis_host": "10.0.0.3", "redis_port": 6380, "redis_password": "p@ss/1"}
    config = parse_config({**base, "router_settings": settings})
    assert redis_url_of(config) == "redis://:p%40ss%2F1@10.0.0.3:6380/0"


def _startup_nodes(url: str) -> list[dict[str, object]]:
    """LiteLLM's ``redis_startup_nodes`` for the cluster's ``redis+cluster://`` URL."""
    return [
        {"host": host, "port": int(port)}
        for host, port in (node.rsplit(":", 1) for node in url.split("://", 1)[1].split(","))
    ]


@pytest.fixture
def proxies(fake, tmp_path, postgres_url, redis_cluster, cluster_prefix) -> Iterator[list[Any]]:
    """Two ``tracking serve`` instances sharing a PostgreSQL ledger and the cluster, named as
    LiteLLM names one: ``router_settings.redis_startup_nodes``."""
    nodes = {"redis_startup_nodes": _startup_nodes(redis_cluster)}
    with _pair(tmp_path, fake.url, postgres_url, None, cluster_prefix, nodes) as two:
        yield two


def test_two_proxies_sharing_the_cluster_keep_an_end_users_budget(proxies, redis_cluster):
    first, second = proxies
    budget = Decimal("0.05")
    with httpx.Client(timeout=60) as client:
        made = client.post(
            f"{first.url}/customer/new",
            headers=bearer(MASTER_KEY),
            json={"user_id": "u", "max_budget": str(budget), "budget_period": "total"},
        )
        assert made.status_code == 200, made.text
        statuses: list[int] = []
        for index in range(20):  # one call at a time, each on the other instance
            proxy = proxies[index % 2]
            statuses.append(edit(client, proxy.url, MASTER_KEY, user="u").status_code)
            if statuses[-2:] == [429, 429]:
                break
        assert statuses[-2:] == [429, 429], statuses  # both refuse: one budget
        assert set(statuses) == {200, 429} and statuses.index(429) >= 1, statuses
        successes = statuses.count(200)
        wait_for(lambda: spend_rows(client, second.url, user="u")["total"] == successes)
        rows = spend_rows(client, first.url, user="u", page_size=1000)["data"]
        assert sum(Decimal(row["cost_usd"]) for row in rows) <= budget
    for proxy in proxies:
        assert "Redis unavailable" not in proxy.log(), proxy.log()


async def test_an_unreachable_cluster_degrades_to_the_ledger_never_fails_a_call(caplog):
    """No node answers (a cluster client's error is its own, not a ``RedisError``): the
    reservation is worked out from the ledger, as with one Redis server away."""
    url = f"redis+cluster://127.0.0.1:{closed_port()}"
    counters = RedisCounters(url, socket_timeout=REDIS_TIMEOUT)
    try:
        assert await counters.reserve("b", 600, LIMIT, 0, Hold("a"), frozenset()) == 600
        assert await counters.reserve("b", 600, LIMIT, 0, Hold("b"), frozenset({"a"})) == -601
        assert await counters.hit_rpm("key", 1) is None
        assert counters.degraded
    finally:
        await counters.aclose()
    assert "Redis unavailable (RedisCluster" in caplog.text
