"""A budget changed while Redis is away holds once Redis is back: the reset of its counters that
could not reach Redis is remembered and done before Redis counts a call again.

A real ``tracking serve`` counts its budgets in a private ``redis-server`` this test starts. The
end user's counter is built, Redis goes away, the budget is changed over HTTP (the end user
deleted and made again, or their budget switched off and on with calls in between), Redis comes
back, and the next calls are judged on the new figure. Redis goes away three ways: frozen
(SIGSTOP: it keeps its counters, now stale, and answers nothing; a call first makes the proxy
take it as away, since a reset sent to it before would run when it thaws), cut off by a TCP
relay between the proxy and Redis (it keeps its counters and never stopped), or killed and
started again empty (it lost them: the pending reset finds nothing to delete). Until 2026-12-07
the first two left the stale counter in place until it idled out (an hour): an end user made
again was refused for what they spent before the deletion, and a budget switched on again
admitted calls past it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts_support import (
    accounts_config,
    bearer,
    edit,
    generate,
    ledger_env,
    restart_redis,
    wait_for,
)
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.relay import TcpRelay
from tests.services import REDIS_TIMEOUT
from tests.test_proxy_budget_dead_worker_holds import (  # noqa: F401 - workers: a fixture
    LIMIT,
    Hold,
    counter_value,
    workers,
)
from tests.test_router_redis import private_redis  # noqa: F401 - a fixture, used by name
from tracking.proxy.shared_counters import RedisCounters, to_units

pytestmark = pytest.mark.redis

#: The counters' retry interval (TRACKING_REDIS_RETRY_SECONDS): Redis is tried again this long
#: after the error that took it as away.
RETRY_SECONDS = 1
PREFIX = "reset-test:"


@dataclass
class Outage:
    """The proxy, its Redis and how this test takes Redis away and brings it back."""

    how: str
    proxy: ProxyProcess
    server: subprocess.Popen[bytes]
    redis_url: str
    relay: TcpRelay | None = None

    def begin(self) -> None:
        if self.how == "frozen":
            self.server.send_signal(signal.SIGSTOP)
        elif self.how == "cut":
            assert self.relay is not None
            self.relay.cut()
        else:
            self.server.kill()
            self.server.wait(10)

    def end(self) -> None:
        if self.how == "frozen":
            self.server.send_signal(signal.SIGCONT)
        elif self.how == "cut":
            assert self.relay is not None
            self.relay.restore()
        else:
            self.server = restart_redis(self.server)
        # Past the counters' retry interval since their last error (during the outage), the
        # next call uses Redis again: the test then checks that it did (the counter's figure).
        time.sleep(RETRY_SECONDS + 0.5)

    def counter(self, user: str) -> int | None:
        return _counter(self.redis_url, user)


def _counter(redis_url: str, user: str, kind: str = "user") -> int | None:
    """The end user's (or key's) total budget counter in Redis, as units (None: missing)."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=30) as client:
        value = client.get(f"{PREFIX}budget:{kind}:{user}:total")
    return None if value is None else int(value)


@pytest.fixture(params=["frozen", "cut", "restarted"])
def outage(request, fake, tmp_path, private_redis) -> Iterator[Outage]:  # noqa: F811
    server, redis_url = private_redis
    relay = TcpRelay(redis_url) if request.param == "cut" else None
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(
        tmp_path, fake.url, ledger, redis_url=relay.url if relay is not None else redis_url
    )
    env = {
        **ledger_env(ledger),
        "TRACKING_REDIS_PREFIX": PREFIX,
        "TRACKING_REDIS_RETRY_SECONDS": str(RETRY_SECONDS),
        # long enough for a loaded machine, short enough for the frozen server's timeouts
        "TRACKING_REDIS_TIMEOUT_SECONDS": "5",
    }
    state = Outage(request.param, ProxyProcess(config, env=env), server, redis_url, relay)
    try:
        state.proxy.start()
        yield state
    finally:
        server.send_signal(signal.SIGCONT)
        state.proxy.stop()
        if state.server is not server:  # started again by the test: this test's to stop
            state.server.kill()
            state.server.wait(10)
        if relay is not None:
            relay.close()


def _master(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    answer = client.post(path, headers=bearer(MASTER_KEY), json=body)
    assert answer.is_success, answer.text
    return answer


def _call(client: httpx.Client, outage: Outage, user: str) -> httpx.Response:
    return edit(client, outage.proxy.url, MASTER_KEY, user=user)


def _noticed(client: httpx.Client, outage: Outage, user: str) -> None:
    """A call of the end user's, judged from the ledger: the proxy takes Redis as away (a
    frozen server runs what it was sent when it thaws: a reset sent to it before the proxy
    knew would be done then; sent nothing while the proxy knows, it is not)."""
    _cost(_call(client, outage, user))
    wait_for(lambda: "Redis unavailable" in outage.proxy.log())


def _cost(answer: httpx.Response) -> Decimal:
    assert answer.status_code == 200, answer.text
    return Decimal(answer.headers["x-tracking-response-cost"])


def test_an_end_user_made_again_while_redis_is_away_is_not_refused_for_their_past(outage, client):
    """Their counter held what they spent before the deletion: once Redis is back, it is not
    what their calls are judged on (LiteLLM's customer row made again starts at $0)."""
    base, user = outage.proxy.url, f"remade-{outage.how}"
    _master(client, f"{base}/customer/new", {"user_id": user, "max_budget": "5"})
    costs = [_cost(_call(client, outage, user)) for _ in range(4)]
    wait_for(lambda: outage.counter(user) == sum(map(to_units, costs)))  # Redis counts them
    smaller = str(sum(costs, Decimal(0)) - costs[0] / 2)  # less than the counter holds

    outage.begin()
    _noticed(client, outage, user)
    _master(client, f"{base}/customer/delete", {"user_ids": [user]})
    _master(client, f"{base}/customer/new", {"user_id": user, "max_budget": smaller})
    outage.end()

    again = _call(client, outage, user)
    assert again.status_code == 200, again.text  # room for three calls since the deletion
    # judged by Redis again, on a counter started from the ledger (since the deletion)
    wait_for(lambda: outage.counter(user) == to_units(_cost(again)))
    assert _call(client, outage, user).status_code == 200
    logs = outage.proxy.log()
    assert "budget counters reset when it is back" in logs
    assert "Traceback" not in logs


def test_a_budget_switched_on_again_while_redis_is_away_counts_the_calls_made_meanwhile(
    outage, client
):
    """Switched off, their calls never reached the counter: switched on again, the counter
    kept from before would admit calls past the budget."""
    base, user = outage.proxy.url, f"on-off-{outage.how}"
    _master(client, f"{base}/customer/new", {"user_id": user, "max_budget": "5"})
    one = _cost(_call(client, outage, user))
    wait_for(lambda: outage.counter(user) == to_units(one))  # Redis counts it
    budget = str(one * 10)

    outage.begin()
    _noticed(client, outage, user)
    _master(client, f"{base}/customer/update", {"user_id": user, "max_budget": None})
    for _ in range(10):  # 12 calls in all, past the budget of 10, while it is off
        _cost(_call(client, outage, user))
    _master(client, f"{base}/customer/update", {"user_id": user, "max_budget": budget})
    outage.end()

    refused = _call(client, outage, user)
    assert refused.status_code == 429, refused.text  # not the one call the old counter held
    assert refused.json()["error"]["code"] == "budget_exceeded"
    # judged by Redis again, on a counter started from the ledger: all 12 calls
    counted = outage.counter(user)
    assert counted is not None and counted > to_units(Decimal(budget)), counted
    assert "Traceback" not in outage.proxy.log()


def test_a_key_budget_switched_on_again_while_redis_is_away_counts_the_calls_made_meanwhile(
    outage, client
):
    """A key's budget switched off and on while Redis is away: its calls meanwhile count once
    Redis is back (the reset this instance remembered starts its counter again)."""
    base = outage.proxy.url
    made = generate(client, base, max_budget="5")
    key, digest = made["key"], made["key_hash"]
    one = _cost(edit(client, base, key))
    wait_for(lambda: _counter(outage.redis_url, digest, "key") == to_units(one))
    budget = str(one * 10)

    outage.begin()
    _cost(edit(client, base, key))  # judged from the ledger: the proxy takes Redis as away
    wait_for(lambda: "Redis unavailable" in outage.proxy.log())
    _master(client, f"{base}/key/update", {"key": key, "max_budget": None})
    for _ in range(10):  # 12 calls in all, past the budget of 10, while it is off
        _cost(edit(client, base, key))
    _master(client, f"{base}/key/update", {"key": key, "max_budget": budget})
    outage.end()

    refused = edit(client, base, key)
    assert refused.status_code == 429, refused.text  # not the calls the old counter held
    assert refused.json()["error"]["code"] == "budget_exceeded"
    counted = _counter(outage.redis_url, digest, "key")
    assert counted is not None and counted > to_units(Decimal(budget)), counted


#: How long an instance keeps an end user's record (TRACKING_KEY_CACHE_SECONDS).
CACHE_SECONDS = 1


@pytest.fixture
def two_instances(
    fake,
    tmp_path,
    postgres_url,
    private_redis,  # noqa: F811
) -> Iterator[tuple[ProxyProcess, ProxyProcess, TcpRelay, str]]:
    """Two proxies sharing a PostgreSQL ledger and a Redis: the first through a relay that cuts
    it off from Redis alone (the second still reaches it), the second directly."""
    _, redis_url = private_redis
    relay = TcpRelay(redis_url)
    env = {
        **ledger_env(postgres_url),
        "TRACKING_REDIS_PREFIX": PREFIX,
        "TRACKING_REDIS_RETRY_SECONDS": str(RETRY_SECONDS),
        "TRACKING_REDIS_TIMEOUT_SECONDS": "5",
        "TRACKING_KEY_CACHE_SECONDS": str(CACHE_SECONDS),
    }
    cut_off, direct = (
        ProxyProcess(
            accounts_config(tmp_path, fake.url, postgres_url, redis_url=url, name=name), env=env
        )
        for url, name in ((relay.url, "cut-off.yaml"), (redis_url, "direct.yaml"))
    )
    try:
        cut_off.start()  # migrates the ledger (auto_migrate) before the other starts
        direct.start()
        yield cut_off, direct, relay, redis_url
    finally:
        cut_off.stop()
        direct.stop()
        relay.close()


def test_an_end_user_made_again_on_an_instance_that_dies_cut_off_from_redis(two_instances, client):
    """The instance that took the change could not reach Redis and died before it could: the
    other instance, which reaches Redis all along, judges the end user's calls on the new
    figure once it reads their record again (every TRACKING_KEY_CACHE_SECONDS): the counter in
    Redis is older than the record's last change, and starts again from the ledger."""
    cut_off, direct, relay, redis_url = two_instances
    user = "remade-elsewhere"
    _master(client, f"{cut_off.url}/customer/new", {"user_id": user, "max_budget": "5"})
    costs = [
        _cost(edit(client, proxy.url, MASTER_KEY, user=user)) for proxy in [cut_off, direct] * 2
    ]
    wait_for(lambda: _counter(redis_url, user) == sum(map(to_units, costs)))  # Redis counts them
    smaller = str(sum(costs, Decimal(0)) - costs[0] / 2)  # less than the counter holds

    relay.cut()  # the first instance alone loses Redis
    _cost(edit(client, cut_off.url, MASTER_KEY, user=user))
    wait_for(lambda: "Redis unavailable" in cut_off.log())
    _master(client, f"{cut_off.url}/customer/delete", {"user_ids": [user]})
    _master(client, f"{cut_off.url}/customer/new", {"user_id": user, "max_budget": smaller})
    assert cut_off.process is not None
    cut_off.process.kill()  # dies with the reset it could not make
    cut_off.process.wait(10)
    # Past the other instance's cache of the end user's record (it last read it before the
    # change): its next call reads the record again.
    time.sleep(CACHE_SECONDS + 0.5)

    again = edit(client, direct.url, MASTER_KEY, user=user)
    assert again.status_code == 200, again.text  # room for three calls since the deletion
    wait_for(lambda: _counter(redis_url, user) == to_units(_cost(again)))  # started from the ledger
    assert edit(client, direct.url, MASTER_KEY, user=user).status_code == 200
    assert "Traceback" not in direct.log()


def test_a_key_budget_changed_on_an_instance_that_dies_cut_off_from_redis(two_instances, client):
    """A key's budget switched off and on again on an instance cut off from Redis, which dies
    before it could reset the counter: the other instance, once it reads the key's record again
    (every TRACKING_KEY_CACHE_SECONDS), finds the counter in Redis older than the record's last
    change (``proxy_keys.updated_at``) and starts it again from the ledger, which has the calls
    made while the budget was off. Until 2026-12-07 a key's record had no time of change: the
    counter that missed those calls was trusted until idle for an hour, admitting calls past
    the budget."""
    cut_off, direct, relay, redis_url = two_instances
    made = generate(client, cut_off.url, max_budget="5")
    key, digest = made["key"], made["key_hash"]
    costs = [_cost(edit(client, proxy.url, key)) for proxy in [cut_off, direct] * 2]
    wait_for(lambda: _counter(redis_url, digest, "key") == sum(map(to_units, costs)))
    one = costs[0]
    assert all(cost == one for cost in costs), costs

    relay.cut()  # the first instance alone loses Redis
    _cost(edit(client, cut_off.url, key))  # judged from the ledger: Redis taken as away
    wait_for(lambda: "Redis unavailable" in cut_off.log())
    _master(client, f"{cut_off.url}/key/update", {"key": key, "max_budget": None})
    for _ in range(6):  # 11 calls in all; Redis's counter has 4 of them
        _cost(edit(client, cut_off.url, key))
    budget = one * 8  # room for the counter's 4 and more, not for the ledger's 11
    _master(client, f"{cut_off.url}/key/update", {"key": key, "max_budget": str(budget)})
    assert cut_off.process is not None
    cut_off.process.kill()  # dies with the reset it could not make
    cut_off.process.wait(10)
    # Past the other instance's cache of the key's record (it last read it before the change):
    # its next call reads the record again.
    time.sleep(CACHE_SECONDS + 0.5)

    refused = edit(client, direct.url, key)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    counted = _counter(redis_url, digest, "key")  # started from the ledger: all 11 calls
    assert counted is not None and counted == to_units(one * 11), (counted, one)
    assert "Traceback" not in direct.log()


async def test_a_counter_started_before_its_budgets_last_change_starts_again(
    redis_url, redis_prefix
):
    counters = RedisCounters(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    try:
        assert await counters.reserve("u", 10, 1000, 500, since=100) == 510
        assert await counters.reserve("u", 10, 1000, None, since=100) == 520  # the same change
        assert await counters.reserve("u", 10, 1000, None, since=50) == 530  # an older record
        assert await counters.reserve("u", 10, 1000, None) == 540  # none known
        assert await counters.reserve("u", 10, 1000, None, since=200) is None  # a newer change
        assert await counters.reserve("u", 10, 1000, 0, since=200) == 10  # from the ledger
        assert await counters.reserve("u", 10, 1000, None, since=100) == 20  # stamped 200 now
    finally:
        await counters.aclose()


async def test_a_counter_started_again_for_its_budgets_last_change_counts_the_calls_in_flight(
    workers,  # noqa: F811
):
    """Started again from the ledger, a stale counter adds every worker's holds still recorded
    beside it (the ledger is read without their calls), as any counter seeded again does."""
    here, there = workers(), workers()
    assert await here.reserve("u", 300, 1000, 0, Hold("mine"), since=100) == 300
    assert await there.reserve("u", 200, 1000, None, Hold("theirs"), since=100) == 500
    assert await here.reserve("u", 10, 1000, None, Hold("new"), since=200) is None
    calls = await here.calls_in_flight("u")
    assert calls == {"mine", "theirs"}
    assert await here.reserve("u", 10, 1000, 40, Hold("new"), calls, since=200) == 550


async def test_a_reset_that_cannot_reach_redis_is_done_before_redis_is_used_again(
    redis_url, redis_prefix
):
    relay = TcpRelay(redis_url)  # cut off this test's counters alone
    counters = RedisCounters(
        relay.url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT, retry_interval=0
    )
    try:
        assert await counters.reserve("k", 10, 1000, 500) == 510
        relay.cut()
        await counters.drop(["k"])  # remembered
        relay.restore()
        assert await counters.reserve("k", 10, 1000, None) is None  # deleted first: seed it
        assert await counters.reserve("k", 10, 1000, 0) == 10
    finally:
        relay.restore()
        await counters.aclose()
        relay.close()


async def test_a_reset_while_redis_is_away_keeps_every_call_in_flight_recorded(
    workers,  # noqa: F811
    redis_url,
    redis_prefix,
    caplog,
):
    """The reset is done once what the counter missed is replayed: the holds of the calls still
    in flight (this worker's, taken before or during the outage, and another worker's) stay
    recorded beside it and count in its next seed; those that ended meanwhile are gone (the
    ledger has their rows), and nothing the old counter was given survives."""
    here, there = workers(), workers()
    before, ended, theirs = Hold("before"), Hold("ended"), Hold("theirs")
    assert await here.reserve("b", 300, LIMIT, 0, before) == 300
    assert await here.reserve("b", 100, LIMIT, None, ended) == 400
    assert await there.reserve("b", 200, LIMIT, None, theirs) == 600
    here.outage.retry_interval = 3600
    here.outage.failed(ConnectionError("gone"))  # Redis is away for this worker
    await here.drop(["b"])  # remembered
    during, brief = Hold("during"), Hold("brief")
    assert await here.reserve("b", 50, LIMIT, 0, during) == 450  # the ledger's 0 + its holds
    await here.adjust("b", 70 - 100, ended)  # cost 70, in the ledger
    assert await here.reserve("b", 20, LIMIT, 70, brief) == 440
    await here.adjust("b", 15 - 20, brief)  # cost 15, in the ledger
    assert counter_value(redis_url, redis_prefix, "b") == 600  # the old counter, untouched
    here.outage.retry_interval = 0
    here.outage.failed(ConnectionError("over"))  # tried again now
    assert await here.reserve("b", 0, LIMIT, None) is None  # reset: seed it
    assert "reset 1 budget counter(s)" in caplog.text
    calls = await there.calls_in_flight("b")
    assert calls == {"before", "theirs", "during"}
    assert await there.reserve("b", 0, LIMIT, 85, Hold("x"), calls) == 635  # 85 + 300 + 200 + 50
    await here.adjust("b", 280 - 300, before)
    await there.adjust("b", 190 - 200, theirs)
    await here.adjust("b", 40 - 50, during)
    assert counter_value(redis_url, redis_prefix, "b") == 595  # 70 + 15 + 280 + 190 + 40
