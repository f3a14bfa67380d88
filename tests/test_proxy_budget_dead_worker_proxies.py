"""Two proxies on one Redis: one killed mid-call stops holding its budget within its lease.

Two ``tracking serve`` processes share the machine's Redis (a key prefix of their own) and one
SQLite ledger, in front of a fake upstream that holds the first call until the test lets it go.
A key's budget has room for one call. A call through the first proxy holds it; the second
proxy refuses the key's calls. The first proxy is killed (SIGKILL: nothing of it runs again):
once its lease is over the second proxy's heartbeat releases its hold, and the key's calls are
admitted again; the counter then equals what the ledger says the key spent. A proxy whose call
is merely slow keeps its hold however many leases go by. Before, a dead process's hold stayed
counted until the counter had been idle for an hour.

The ledger is ``background`` (no intents): a killed call leaves no row, so nothing of it is
spent. With the durable ledger a killed call's intent becomes an ``incomplete`` row at its
estimate, which the counter started again from the ledger counts (see docs/proxy.md).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, generate, ledger_env, spend_rows, wait_for
from tests.proxy_support import ProxyProcess
from tests.services import REDIS_TIMEOUT_ENV
from tests.test_proxy_budget_dead_worker_holds import counter_value
from tests.test_proxy_budget_redis_inflight import (  # noqa: F401 - slow_fake: a fixture
    ONE_CALL,
    HeldFake,
    slow_fake,
)
from tracking.proxy.shared_counters import to_units

pytestmark = pytest.mark.redis

#: Room for one call's reservation, not two.
BUDGET = (ONE_CALL * Decimal("1.5")).quantize(Decimal("0.00001"))
#: A short lease, so the test waits seconds (the default is 48 s).
LEASE = 3


@dataclass(frozen=True, slots=True)
class Scene:
    """The two proxies, their upstream and their Redis (URL, key prefix)."""

    first: ProxyProcess
    second: ProxyProcess
    fake: HeldFake
    redis: tuple[str, str]


@pytest.fixture
def two_proxies(
    request: pytest.FixtureRequest,
    slow_fake: HeldFake,  # noqa: F811
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[Scene]:
    """The ledger is ``background`` unless the test's parameter names another mode."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    mode = getattr(request, "param", "background")
    config = accounts_config(
        tmp_path, slow_fake.url, url, redis_url=redis_url, general={"ledger_mode": mode}
    )
    env = {
        **ledger_env(url),
        **REDIS_TIMEOUT_ENV,
        "TRACKING_REDIS_PREFIX": redis_prefix,
        "TRACKING_REDIS_LEASE_SECONDS": str(LEASE),
    }
    with ProxyProcess(config, env=env) as first, ProxyProcess(config, env=env) as second:
        yield Scene(first, second, slow_fake, (redis_url, redis_prefix))


def one_call_held(
    client: httpx.Client, proxy: ProxyProcess, fake: HeldFake, pool: ThreadPoolExecutor
) -> tuple[dict[str, Any], Future[httpx.Response]]:
    """A key with room for one call, and a call of it through ``proxy``, held by the upstream."""
    made = generate(client, proxy.url, max_budget=str(BUDGET))
    fake.hold(1)
    call = pool.submit(edit, client, proxy.url, made["key"])
    wait_for(lambda: fake.held == 1)  # reserved, and at the upstream
    return made, call


def admitted_again(client: httpx.Client, proxy: ProxyProcess, key: str) -> list[int]:
    """The statuses of the key's calls through ``proxy`` until one is admitted (90 s: a bound
    for "never" on a loaded machine)."""
    answers: list[int] = []

    def admitted() -> bool:
        answers.append(edit(client, proxy.url, key).status_code)
        if answers[-1] != 200:
            time.sleep(0.2)
        return answers[-1] == 200

    wait_for(admitted, timeout=90)
    return answers


def _counts_what_the_ledger_says(
    client: httpx.Client, proxy: ProxyProcess, key_hash: str, calls: int, redis: tuple[str, str]
) -> None:
    """The key's counter in Redis ends at its spend per the ledger (each row rounded up)."""
    wait_for(lambda: spend_rows(client, proxy.url, api_key_hash=key_hash)["total"] == calls)
    rows = spend_rows(client, proxy.url, api_key_hash=key_hash, page_size=100)["data"]
    spent = sum(to_units(Decimal(row["cost_usd"])) for row in rows)
    wait_for(lambda: counter_value(*redis, f"key:{key_hash}:total") == spent)


def test_a_killed_proxys_hold_is_released_and_the_budget_counts_exactly(two_proxies):
    first, second = two_proxies.first, two_proxies.second
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
        made, killed = one_call_held(client, first, two_proxies.fake, pool)
        assert edit(client, second.url, made["key"]).status_code == 429  # the budget is held
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        # Admitted again once the killed proxy's lease is over (a bound for "never": the lease
        # is 3 s; before, an hour).
        answers = admitted_again(client, second, made["key"])
        two_proxies.fake.release()
        with pytest.raises(httpx.TransportError):
            killed.result()
        assert set(answers[:-1]) <= {429}, answers
        # The killed call left no row (background ledger); the counter is what the ledger says.
        _counts_what_the_ledger_says(client, second, made["key_hash"], 1, two_proxies.redis)
        assert edit(client, second.url, made["key"]).status_code == 429  # spent: nothing more
    assert "released the budget holds of 1 worker(s)" in second.log()
    assert "Traceback" not in second.log()


def test_a_proxy_whose_call_is_slow_keeps_its_hold(two_proxies):
    first, second = two_proxies.first, two_proxies.second
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(1) as pool:
        made, slow = one_call_held(client, first, two_proxies.fake, pool)
        # Four leases go by while the call is at the upstream; the other proxy refuses the
        # key's calls throughout (its heartbeat finds the slow proxy's lease renewed).
        answers: list[int] = []
        until = time.monotonic() + 4 * LEASE
        while time.monotonic() < until:
            answers.append(edit(client, second.url, made["key"]).status_code)
            time.sleep(0.2)
        two_proxies.fake.release()
        assert slow.result().status_code == 200
        assert set(answers) == {429}, answers
        _counts_what_the_ledger_says(client, first, made["key_hash"], 1, two_proxies.redis)
    assert "released the budget holds" not in second.log() + first.log()


@pytest.mark.parametrize("two_proxies", ["durable"], indirect=True)
def test_a_killed_proxys_call_counts_as_its_incomplete_row(two_proxies):
    """With the durable ledger the killed call's intent becomes an ``incomplete`` row at its
    estimate (the other proxy claims it): it may have been billed, and the counter started
    again from the ledger counts it, exactly as the ledger does."""
    first, second = two_proxies.first, two_proxies.second
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
        made, killed = one_call_held(client, first, two_proxies.fake, pool)
        assert edit(client, second.url, made["key"]).status_code == 429
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        # claimed within the shipper's rescan (30 s); 90 s: a bound for "never"
        key_hash = made["key_hash"]
        wait_for(lambda: spend_rows(client, second.url, api_key_hash=key_hash)["total"] == 1, 90)
        [row] = spend_rows(client, second.url, api_key_hash=key_hash)["data"]
        assert row["status"] == "incomplete" and row["cost_source"] == "estimate", row
        wait_for(lambda: "released the budget holds of 1 worker(s)" in second.log())
        two_proxies.fake.release()
        with pytest.raises(httpx.TransportError):
            killed.result()
        answer = edit(client, second.url, made["key"]).status_code  # the counter starts again
        assert answer in {200, 429}, answer
        calls = 1 + (answer == 200)
        _counts_what_the_ledger_says(client, second, made["key_hash"], calls, two_proxies.redis)
