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
    ledger_env,
    restart_redis,
    wait_for,
)
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.relay import TcpRelay
from tests.test_router_redis import private_redis  # noqa: F401 - a fixture, used by name
from tracking.proxy.shared_counters import to_units

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
        """The end user's total budget counter in Redis, as units (None: missing)."""
        import redis

        with redis.Redis.from_url(self.redis_url, socket_timeout=30) as client:
            value = client.get(f"{PREFIX}budget:user:{user}:total")
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
