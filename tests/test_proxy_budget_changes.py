"""Budgets changed through the management API hold from the next call, counted from the ledger:
a budget switched off and on again, an end user's period changed or the user deleted and made
again, a budget sent with a null period. And the management routes' edges: ids kept exactly as
given, list filters and key digests read as stored, ``models: []``, and a database gone away.

The tests share a ``tracking serve`` on a SQLite ledger (or with Redis counters) in front of the
session's fake upstream, each with keys and end users of its own, and talk to it over HTTP; the
test that drops its PostgreSQL database starts its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from tests.accounts_support import accounts_config, bearer, edit, generate, ledger_env
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.services import REDIS_TIMEOUT_ENV


@pytest.fixture(scope="module", params=["local", "workers", "redis"])
def proxy(request, fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy whose budget counters live in the process, in the file its two workers share,
    or in Redis; the module's tests share it, each with keys and end users of its own."""
    folder = tmp_path_factory.mktemp("budget-changes")
    url = f"sqlite:///{folder / 'ledger.db'}"
    env = ledger_env(url)
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("module_redis_url")
        env["TRACKING_REDIS_PREFIX"] = request.getfixturevalue("module_redis_prefix")
        env.update(REDIS_TIMEOUT_ENV)
    config = accounts_config(folder, fake.url, url, redis_url=redis_url)
    workers = 2 if request.param == "workers" else 1
    with ProxyProcess(config, env=env, workers=workers) as process:
        yield process


def _master(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, headers=bearer(MASTER_KEY), json=body)


def _one_call_cost(client: httpx.Client, base: str) -> Decimal:
    """What one test edit costs, read from a key of its own."""
    made = generate(client, base)
    assert edit(client, base, made["key"]).status_code == 200
    info = client.get(
        f"{base}/key/info", headers=bearer(MASTER_KEY), params={"key_hash": made["key_hash"]}
    )
    cost = Decimal(info.json()["info"]["spend"])
    assert cost > 0
    return cost


@pytest.mark.parametrize("route", ["update", "regenerate"])
def test_a_key_budget_switched_off_and_on_counts_the_calls_made_meanwhile(proxy, client, route):
    """Switched off and on again by ``/key/update`` or by ``/key/regenerate`` (until 2026-12-07
    the latter kept the counter from before, which missed the calls made meanwhile)."""
    base = proxy.url
    budget = _one_call_cost(client, base) * 10
    made = generate(client, base, max_budget=str(budget))
    key = made["key"]
    assert edit(client, base, key).status_code == 200  # its counter now holds one call

    def switch(key: str, max_budget: str | None) -> str:
        switched = _master(client, f"{base}/key/{route}", {"key": key, "max_budget": max_budget})
        assert switched.is_success, switched.text
        return str(switched.json().get("key", key))  # regenerated: its new secret

    key = switch(key, None)
    for _ in range(10):  # 11 calls in all, past the budget of 10, while it is off
        assert edit(client, base, key).status_code == 200
    key = switch(key, str(budget))
    refused = edit(client, base, key)
    assert refused.status_code == 429, refused.text  # not the one call its old counter held
    assert refused.json()["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize("change", ["period", "delete"])
def test_an_end_user_budget_changed_counts_the_calls_made_meanwhile(proxy, client, change):
    base, user = proxy.url, f"user-{change}"
    budget = str(_one_call_cost(client, base) * 10)
    made = {"user_id": user, "max_budget": budget}
    assert _master(client, f"{base}/customer/new", made).is_success
    assert edit(client, base, MASTER_KEY, user=user).status_code == 200  # the total counter
    if change == "period":  # total -> daily -> total: the calls went to the daily counter
        update = {"user_id": user, "budget_period": "daily"}
        assert _master(client, f"{base}/customer/update", update).is_success
    else:  # deleted: the calls have no budget at all
        assert _master(client, f"{base}/customer/delete", {"user_ids": [user]}).is_success
    for _ in range(10):
        edit(client, base, MASTER_KEY, user=user)  # a daily budget refuses the last ones
    if change == "period":
        update = {"user_id": user, "budget_period": "total"}
        assert _master(client, f"{base}/customer/update", update).is_success
    else:
        again = {"user_id": user, "max_budget": budget}
        assert _master(client, f"{base}/customer/new", again).is_success
    refused = edit(client, base, MASTER_KEY, user=user)
    assert refused.status_code == 429, refused.text


@pytest.mark.parametrize("period", ["total", "daily"])
def test_an_end_user_made_again_is_not_refused_for_what_they_spent_before(proxy, client, period):
    """Their counter held what they spent; deleted and made again with a budget smaller than
    that, their calls are admitted: the counter starts again from the calls since the deletion
    (LiteLLM's customer row made again starts at $0)."""
    base, user = proxy.url, f"remade-{period}"
    made = {"user_id": user, "max_budget": "5", "budget_period": period}
    assert _master(client, f"{base}/customer/new", made).is_success
    costs = []
    for _ in range(5):  # counted by the end user's counter
        answer = edit(client, base, MASTER_KEY, user=user)
        assert answer.status_code == 200, answer.text
        costs.append(Decimal(answer.headers["x-tracking-response-cost"]))
    assert _master(client, f"{base}/customer/delete", {"user_ids": [user]}).is_success
    smaller = str(sum(costs, Decimal(0)) - costs[0] / 2)
    again = {"user_id": user, "max_budget": smaller, "budget_period": period}
    assert _master(client, f"{base}/customer/new", again).is_success
    for _ in range(2):  # room for two calls since the deletion
        admitted = edit(client, base, MASTER_KEY, user=user)
        assert admitted.status_code == 200, admitted.text


@pytest.fixture(scope="module")
def sqlite_proxy(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """One proxy for the module's tests below, each with keys and end users of its own."""
    folder = tmp_path_factory.mktemp("budget-changes-sqlite")
    url = f"sqlite:///{folder / 'ledger.db'}"
    with ProxyProcess(accounts_config(folder, fake.url, url), env=ledger_env(url)) as process:
        yield process


def test_a_budget_with_a_null_period_counts_over_all_time(sqlite_proxy, client):
    base = sqlite_proxy.url
    small = str(_one_call_cost(client, base) / 2)  # no call fits in it
    made = _master(
        client,
        f"{base}/customer/new",
        {"user_id": "carol", "max_budget": small, "budget_period": None},
    )
    assert made.status_code == 200 and made.json()["budget_period"] == "total"
    assert edit(client, base, MASTER_KEY, user="carol").status_code == 429
    daily = {"user_id": "dave", "max_budget": small, "budget_period": "daily"}
    assert _master(client, f"{base}/customer/new", daily).is_success
    nulled = _master(client, f"{base}/customer/update", {"user_id": "dave", "budget_period": None})
    assert nulled.status_code == 200 and nulled.json()["budget_period"] == "total"
    assert edit(client, base, MASTER_KEY, user="dave").status_code == 429  # still enforced


def test_models_empty_means_every_model_when_made_and_when_updated(sqlite_proxy, client):
    base = sqlite_proxy.url
    made = generate(client, base, models=[])
    assert made["models"] is None
    assert edit(client, base, made["key"], model="dall-e-2").status_code == 200
    narrow = generate(client, base, models=["gpt-image-1"])
    assert edit(client, base, narrow["key"], model="dall-e-2").status_code == 403
    widened = _master(client, f"{base}/key/update", {"key": narrow["key"], "models": []})
    assert widened.status_code == 200 and widened.json()["models"] is None
    assert edit(client, base, narrow["key"], model="dall-e-2").status_code == 200


def test_customer_routes_take_ids_exactly_as_given_and_refuse_what_no_id_is(sqlite_proxy, client):
    base = sqlite_proxy.url
    blocked = _master(client, f"{base}/customer/block", {"user_ids": [" mallory"]})
    assert [c["user_id"] for c in blocked.json()["blocked_users"]] == [" mallory"]
    assert edit(client, base, MASTER_KEY, user=" mallory").status_code == 403
    assert edit(client, base, MASTER_KEY, user="mallory").status_code == 200  # someone else
    for bad in ("a\x00b", "z\x85", "x" * 300):
        for route in ("block", "unblock", "delete"):
            refused = _master(client, f"{base}/customer/{route}", {"user_ids": [bad]})
            assert refused.status_code == 400, (route, refused.text)
            assert refused.json()["error"]["param"] == "user_ids"
    listed = client.get(
        f"{base}/key/list", headers=bearer(MASTER_KEY), params={"key_alias": "a\x00b"}
    )
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "key_alias"


def test_a_key_named_by_its_digest_in_upper_case_is_found(sqlite_proxy, client):
    base = sqlite_proxy.url
    made = generate(client, base)
    upper = made["key_hash"].upper()
    for route in ("update", "regenerate"):
        answer = _master(client, f"{base}/key/{route}", {"key": upper, "key_alias": route})
        assert answer.status_code == 200, (route, answer.text)
        upper = answer.json()["token"].upper()


def test_management_and_spend_routes_answer_503_while_the_database_is_away(
    fake, tmp_path, postgres_url, client
):
    with ProxyProcess(
        accounts_config(tmp_path, fake.url, postgres_url), env=ledger_env(postgres_url)
    ) as proxy:
        base = proxy.url
        generate(client, base)
        name = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        answers = [
            client.get(f"{base}/key/list", headers=bearer(MASTER_KEY)),
            _master(client, f"{base}/customer/new", {"user_id": "erin", "max_budget": "1"}),
            client.get(f"{base}/spend/logs", headers=bearer(MASTER_KEY)),
            client.get(f"{base}/global/spend", headers=bearer(MASTER_KEY)),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"].endswith("store_unavailable"), answer.text
