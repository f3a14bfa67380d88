"""Retries and fallbacks after billed failures: every attempt the upstream may have billed is in
the call's one ledger row, its answer's cost headers say the same figure, and each budget that
applies (the key's, the end user's daily one, the whole proxy's daily one) counts it exactly
once: each Redis counter equals the sum of the ledger rows it covers.

A ``tracking serve`` subprocess the tests share, each with a key and an end user of its own
(SQLite ledger, budget counters and routing state in Redis under a prefix of the module's own)
in front of a fake OpenAI upstream whose queued faults the tests inject: ``drop`` (the answer
lost: maybe billed), ``latency`` past the deployment's timeout (the upstream had the whole
request: maybe billed), ``status=500`` (billed nothing), ``malformed`` (a 2xx that cannot be
read: billed). ``dear`` (``house-dear``, $0.50 an image) is ``cheap``'s fallback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tests.accounts_support import bearer, generate, ledger_env, wait_for
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, ledger_row, write_config
from tests.services import REDIS_TIMEOUT_ENV
from tracking.integrations.sql import spend_logs
from tracking.proxy.accounts import PREFIX_ENV
from tracking.proxy.shared_counters import to_units
from tracking.testing import FakeOpenAI

DEAR = Decimal("0.50")
PNG = make_png(32, 32)


def _deployment(name: str, model: str, api_base: str, **extra: Any) -> dict[str, Any]:
    # Every answer but the ``latency=3`` one comes within the timeout: 1 s was near what a
    # loaded 2-core machine took (an answer timed out is a second, estimated attempt).
    params = {"model": model, "api_key": API_KEY, "api_base": api_base, "timeout": 2}
    return {
        "model_name": name,
        "litellm_params": params,
        **extra,
    }


@pytest.fixture(scope="module")
def own_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=("house-dear",)) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    own_fake: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
    module_redis_url: str,
    module_redis_prefix: str,
) -> Iterator[ProxyProcess]:
    """One proxy for the module's tests, each with a key and an end user of its own."""
    folder = tmp_path_factory.mktemp("router-money")
    url = f"sqlite:///{folder / 'ledger.db'}"
    document = {
        "model_list": [
            _deployment("cheap", "gpt-image-2", own_fake.url),
            _deployment(
                "dear",
                "house-dear",
                own_fake.url,
                model_info={"per_image": {"low": {"1024x1024": str(DEAR)}}},
            ),
        ],
        "litellm_settings": {"max_budget": 100, "budget_duration": "1d"},
        "router_settings": {
            "num_retries": 1,
            "fallbacks": [{"cheap": ["dear"]}],
            "redis_url": module_redis_url,
        },
        "general_settings": {"master_key": MASTER_KEY, "database_url": url, "auto_migrate": True},
    }
    config = write_config(folder / "config.yaml", document)
    env = {**ledger_env(url), PREFIX_ENV: module_redis_prefix, **REDIS_TIMEOUT_ENV}
    with ProxyProcess(config, env=env) as process:
        yield process


class Books:
    """What one key and one end user spent, three ways: answers, ledger rows, Redis counters."""

    def __init__(self, proxy: ProxyProcess, redis_url: str, prefix: str) -> None:
        self.proxy = proxy
        self.user = f"alice-{uuid.uuid4().hex[:8]}"  # the module's tests share the proxy
        self.client = httpx.Client(timeout=30)
        made = generate(self.client, proxy.url, max_budget="100", key_alias="books")
        self.key, self.key_hash = made["key"], made["key_hash"]
        answer = self.client.post(
            f"{proxy.url}/customer/new",
            headers=bearer(MASTER_KEY),
            json={"user_id": self.user, "max_budget": "100", "budget_period": "daily"},
        )
        assert answer.status_code == 200, answer.text
        self.redis = redis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.rows: list[dict[str, Any]] = []

    def edit(self, **fields: str) -> httpx.Response:
        data = {"model": "cheap", "prompt": "a hat", "quality": "low", "size": "1024x1024"}
        answer = self.client.post(
            f"{self.proxy.url}/v1/images/edits",
            headers=bearer(self.key),
            data={**data, "user": self.user, **fields},
            files={"image": ("a.png", PNG, "image/png")},
        )
        row = ledger_row(self.proxy, answer.headers["x-tracking-request-id"])
        self.rows.append(row)
        # what the answer says is what the ledger row says
        assert Decimal(answer.headers["x-tracking-response-cost"]) == row["cost_usd"]
        return answer

    def stream(self, **fields: str) -> list[dict[str, Any]]:
        data = {"model": "cheap", "prompt": "a hat", "quality": "low", "size": "1024x1024"}
        with self.client.stream(
            "POST",
            f"{self.proxy.url}/v1/images/edits",
            headers=bearer(self.key),
            data={**data, "user": self.user, "stream": "true", **fields},
            files={"image": ("a.png", PNG, "image/png")},
        ) as answer:
            assert answer.status_code == 200
            request_id = answer.headers["x-tracking-request-id"]
            events = [
                json.loads(line.removeprefix("data: "))
                for line in answer.iter_lines()
                if line.startswith("data: ")
            ]
        row: dict[str, Any] = {}

        def written() -> bool:
            try:
                row.update(ledger_row(self.proxy, request_id))
            except ValueError:
                return False
            return True

        wait_for(written)
        self.rows.append(row)
        return events

    def counter(self, name: str) -> int:
        value = self.redis.get(f"{self.prefix}budget:{name}")
        assert value is not None, f"no counter {name}"
        return int(value)

    def balance(self) -> None:
        """Each budget's counter is the sum of the rows it covers, each counted once (the
        holds all settled), and the ledger's spend reads say the same."""
        days = {row["start_time"].strftime("d%Y-%m-%d") for row in self.rows}
        assert len(days) == 1, "the calls straddled midnight: run again"
        (day,) = days
        units = sum(to_units(row["cost_usd"]) for row in self.rows)
        assert self.counter(f"key:{self.key_hash}:total") == units
        assert self.counter(f"user:{self.user}:{day}") == units
        # The whole proxy's counter covers every row of the day, the module's other tests' too.
        assert self.counter(f"proxy:{day}") == sum(
            to_units(cost) for cost in _costs_of(self.proxy, day)
        )
        total = sum((row["cost_usd"] for row in self.rows), Decimal(0))
        info = self.client.get(
            f"{self.proxy.url}/customer/info",
            headers=bearer(MASTER_KEY),
            params={"end_user_id": self.user},
        ).json()
        assert Decimal(info["total_spend"]) == total == Decimal(info["period_spend"])
        logs = self.client.get(
            f"{self.proxy.url}/spend/logs",
            headers=bearer(MASTER_KEY),
            params={"user": self.user, "page_size": 100},
        ).json()
        assert logs["total"] == len(self.rows)
        assert sum((Decimal(row["cost_usd"]) for row in logs["data"]), Decimal(0)) == total

    def close(self) -> None:
        self.client.close()
        self.redis.close()


def _costs_of(proxy: ProxyProcess, day: str) -> list[Decimal]:
    """The cost of each row of ``day`` (``d%Y-%m-%d``) in the proxy's SQLite ledger."""
    engine = sa.create_engine(f"sqlite:///{proxy.config.parent / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(spend_logs.c.cost_usd, spend_logs.c.start_time))
            return [cost for cost, start in rows if start.strftime("d%Y-%m-%d") == day]
    finally:
        engine.dispose()


@pytest.fixture
def books(
    proxy: ProxyProcess, own_fake: FakeOpenAI, module_redis_url: str, module_redis_prefix: str
) -> Iterator[Books]:
    own_fake.clear_faults()  # none left by an earlier test that failed
    ledger = Books(proxy, module_redis_url, module_redis_prefix)
    yield ledger
    ledger.close()


def test_a_retry_after_a_timeout_bills_both_attempts_once_everywhere(books, own_fake):
    own_fake.inject("latency=3")  # past the deployment's 2 s: the upstream had the request
    answer = books.edit()
    assert answer.status_code == 200, answer.text
    row = books.rows[-1]
    assert row["attempts"] == 2 and row["status"] == "success"
    assert row["cost_source"] == "estimate" and "outcome-unknown" in row["price_ref"]
    books.balance()


def test_a_fallback_after_lost_answers_bills_every_attempt_once_everywhere(books, own_fake):
    own_fake.inject("drop", times=2)  # both of cheap's attempts: maybe billed
    answer = books.edit()
    assert answer.status_code == 200, answer.text
    row = books.rows[-1]
    assert row["model_group"] == "dear" and row["fallback_from"] == ["cheap"]
    assert row["attempts"] == 3 and row["cost_usd"] > DEAR  # dear's image and two estimates
    books.balance()


def test_failures_billed_or_not_are_counted_as_the_ledger_records_them(books, own_fake):
    own_fake.inject("status=500", times=2)  # billed nothing; then both of dear's answers lost
    own_fake.inject("drop", times=2)
    lost = books.edit()
    assert lost.status_code == 502, lost.text
    assert lost.headers["x-tracking-cost-source"] == "estimate"
    assert books.rows[-1]["attempts"] == 4 and books.rows[-1]["cost_usd"] == 2 * DEAR
    own_fake.inject("status=500", times=4)  # every attempt fails, billing nothing
    failed = books.edit()
    assert failed.status_code == 502, failed.text
    assert failed.headers["x-tracking-cost-source"] == "not-billed"
    assert books.rows[-1]["cost_usd"] == 0
    own_fake.inject("malformed")  # a 2xx that cannot be read: billed, never retried
    unreadable = books.edit()
    assert unreadable.status_code == 502, unreadable.text
    assert books.rows[-1]["attempts"] == 1 and books.rows[-1]["cost_usd"] > 0
    books.balance()


def test_a_stream_that_broke_off_after_a_lost_attempt_is_counted_once(books, own_fake):
    own_fake.inject("drop")
    own_fake.inject("break_after=2")
    events = books.stream(partial_images="2")
    assert events[-1]["type"] == "error"
    row = books.rows[-1]
    assert row["status"] == "failure" and row["attempts"] == 2
    assert Decimal(events[-1]["tracking"]["response_cost"]) == row["cost_usd"] > 0
    books.stream(partial_images="1")  # and one that completes
    assert books.rows[-1]["status"] == "success"
    books.balance()
