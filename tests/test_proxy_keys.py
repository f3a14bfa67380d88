"""Virtual keys, end-user budgets, per-key rpm and the spend endpoints on one proxy.

One ``tracking serve`` subprocess (SQLite ledger, no Redis: counters in the process) in front of
the session's fake upstream serves the module; each test makes its own keys and end users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import (
    PNG,
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
from tracking.proxy.keys import generate_key


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("keys") / "ledger.db"


@pytest.fixture(scope="module")
def proxy(fake, ledger_file) -> Iterator[ProxyProcess]:
    url = f"sqlite:///{ledger_file}"
    config = accounts_config(ledger_file.parent, fake.url, url)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def _error(response: httpx.Response) -> dict:
    return response.json()["error"]


def test_key_lifecycle_generate_use_info_delete(proxy, client):
    made = generate(
        client,
        proxy.url,
        models=["gpt-image-1"],
        max_budget="5",
        rpm_limit=100,
        duration="30d",
        key_alias="lifecycle",
        team="imaging",
    )
    key = made["key"]
    assert key.startswith("sk-") and len(key) > 40
    assert made["key_alias"] == "lifecycle" and made["team"] == "imaging"
    assert made["models"] == ["gpt-image-1"] and made["max_budget"] == "5"
    assert made["expires"] is not None

    response = edit(client, proxy.url, key, user="lifecycle-user")
    assert response.status_code == 200, response.text
    request_id = response.headers["x-tracking-request-id"]

    info = client.get(f"{proxy.url}/key/info", headers=bearer(key))
    assert info.status_code == 200
    assert info.json()["key_hash"] == made["key_hash"]
    assert info.json()["info"]["key_alias"] == "lifecycle"
    assert key not in info.text

    # The ledger row names the key by hash, alias and team.
    wait_for(lambda: spend_rows(client, proxy.url, user="lifecycle-user")["total"] == 1)
    row = spend_rows(client, proxy.url, user="lifecycle-user")["data"][0]
    assert row["request_id"] == request_id
    assert (row["api_key_hash"], row["key_alias"], row["team"]) == (
        made["key_hash"],
        "lifecycle",
        "imaging",
    )
    info = client.get(
        f"{proxy.url}/key/info", headers=bearer(MASTER_KEY), params={"key_hash": made["key_hash"]}
    )
    assert Decimal(info.json()["info"]["spend"]) == Decimal(row["cost_usd"]) > 0

    deleted = client.post(
        f"{proxy.url}/key/delete", headers=bearer(MASTER_KEY), json={"keys": [key]}
    )
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [made["key_hash"]]}
    # The instance that deleted the key forgets it at once.
    refused = edit(client, proxy.url, key)
    assert refused.status_code == 401 and _error(refused)["code"] == "invalid_api_key"
    again = client.post(f"{proxy.url}/key/delete", headers=bearer(MASTER_KEY), json={"keys": [key]})
    assert again.status_code == 404


def test_401_missing_wrong_and_expired_keys(proxy, client, fake):
    before = fake.hits
    missing = edit(client, proxy.url, None)
    assert missing.status_code == 401 and _error(missing)["code"] == "missing_api_key"
    for token in ("sk-not-a-key-of-this-proxy", generate_key()):  # badly shaped, well shaped
        wrong = edit(client, proxy.url, token)
        assert wrong.status_code == 401 and _error(wrong)["code"] == "invalid_api_key"
    expired = generate(client, proxy.url, duration="1s")["key"]  # a past `expires` is a 400
    time.sleep(1.1)
    refused = edit(client, proxy.url, expired)
    assert refused.status_code == 401 and _error(refused)["code"] == "expired_api_key"
    assert fake.hits == before  # nothing reached the upstream


def test_403_model_not_allowed_and_master_only_endpoints(proxy, client, fake):
    key = generate(client, proxy.url, models=["dall-e-2"])["key"]
    before = fake.hits
    refused = edit(client, proxy.url, key, model="gpt-image-1")
    assert refused.status_code == 403 and _error(refused)["code"] == "model_not_allowed"
    assert fake.hits == before
    assert edit(client, proxy.url, key, model="dall-e-2").status_code == 200

    for method, path, body in (
        ("POST", "/key/generate", {}),
        ("POST", "/key/delete", {"keys": [key]}),
        ("POST", "/customer/new", {"user_id": "x"}),
        ("POST", "/customer/update", {"user_id": "x"}),
        ("GET", "/customer/info?end_user_id=x", None),
    ):
        response = client.request(method, f"{proxy.url}{path}", headers=bearer(key), json=body)
        assert response.status_code == 403, path
        assert _error(response)["code"] == "master_key_required"
    other = generate(client, proxy.url)
    peek = client.get(
        f"{proxy.url}/key/info", headers=bearer(key), params={"key_hash": other["key_hash"]}
    )
    assert peek.status_code == 403


def test_bad_key_requests_are_400s(proxy, client):
    for body, param in (
        ({"models": ["no-such-model"]}, "models"),
        ({"max_budget": "-1"}, "max_budget"),
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"duration": "forever"}, "duration"),
        ({"expires": "tomorrow"}, "expires"),
    ):
        response = client.post(f"{proxy.url}/key/generate", headers=bearer(MASTER_KEY), json=body)
        assert response.status_code == 400, body
        assert _error(response)["param"] == param
    broken = client.post(
        f"{proxy.url}/key/generate", headers={**bearer(MASTER_KEY)}, content=b"{not json"
    )
    assert broken.status_code == 400 and _error(broken)["code"] == "invalid_json"


def test_429_rpm_limit_of_a_key(proxy, client, fake):
    key = generate(client, proxy.url, rpm_limit=2)["key"]

    def three_calls() -> tuple[list[int], int, httpx.Response]:
        served = [edit(client, proxy.url, key).status_code for _ in range(2)]
        before = fake.hits
        return served, before, edit(client, proxy.url, key)

    # A calendar minute must not turn over in the middle of the three calls.
    served, before, refused = in_one_minute(three_calls)
    assert served == [200, 200]
    assert refused.status_code == 429 and _error(refused)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert fake.hits == before


def test_a_regenerated_key_keeps_its_minute_count(proxy, client, fake):
    """Regenerating a key changes its secret, not its limits: the calls made this minute under
    the old secret still count (as its spend does toward its budget)."""

    def calls_around_a_regeneration() -> tuple[list[int], int, httpx.Response]:
        made = generate(client, proxy.url, rpm_limit=2)  # a key of its own each run
        served = [edit(client, proxy.url, made["key"]).status_code for _ in range(2)]
        fresh = client.post(
            f"{proxy.url}/key/regenerate", headers=bearer(MASTER_KEY), json={"key": made["key"]}
        )
        assert fresh.status_code == 200, fresh.text
        before = fake.hits
        return served, before, edit(client, proxy.url, fresh.json()["key"])

    served, before, refused = in_one_minute(calls_around_a_regeneration)
    assert served == [200, 200]
    assert refused.status_code == 429 and _error(refused)["code"] == "rate_limit_exceeded"
    assert fake.hits == before


def test_429_key_budget_before_any_upstream_call(proxy, client, fake):
    key = generate(client, proxy.url, max_budget="0.05", key_alias="small")["key"]
    statuses = [edit(client, proxy.url, key).status_code for _ in range(6)]
    # Each call reserves about $0.02 (low, 1024x1024, input allowance) and costs about $0.015.
    assert statuses[0] == 200 and statuses[-1] == 429
    before = fake.hits
    refused = edit(client, proxy.url, key)
    assert refused.status_code == 429
    error = _error(refused)
    assert error["code"] == "budget_exceeded" and "small" in error["message"]
    assert fake.hits == before
    spent = client.get(f"{proxy.url}/key/info", headers=bearer(key)).json()["info"]["spend"]
    wait_for(
        lambda: (
            Decimal(
                client.get(f"{proxy.url}/key/info", headers=bearer(key)).json()["info"]["spend"]
            )
            > 0
        )
    )
    assert Decimal(spent) <= Decimal("0.05")


def test_end_user_budget_blocked_flag_and_info(proxy, client, fake):
    user = "budget-user-1"
    made = client.post(
        f"{proxy.url}/customer/new",
        headers=bearer(MASTER_KEY),
        json={"user_id": user, "max_budget": 0.04, "budget_period": "daily"},
    )
    assert made.status_code == 200 and made.json()["budget"] == "0.04"
    duplicate = client.post(
        f"{proxy.url}/customer/new", headers=bearer(MASTER_KEY), json={"user_id": user}
    )
    assert duplicate.status_code == 400

    statuses = [edit(client, proxy.url, MASTER_KEY, user=user).status_code for _ in range(5)]
    assert statuses[0] == 200 and statuses[-1] == 429
    refused = edit(client, proxy.url, MASTER_KEY, user=user)
    assert "end user 'budget-user-1'" in _error(refused)["message"]
    assert "daily budget" in _error(refused)["message"]
    # Another end user is not affected.
    assert edit(client, proxy.url, MASTER_KEY, user="someone-else").status_code == 200

    successes = statuses.count(200)
    wait_for(lambda: spend_rows(client, proxy.url, user=user)["total"] == successes)
    info = client.get(
        f"{proxy.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": user}
    )
    assert info.status_code == 200
    body = info.json()
    assert body["budget_period"] == "daily" and body["blocked"] is False
    assert Decimal("0") < Decimal(body["period_spend"]) <= Decimal("0.04")
    assert body["period_spend"] == body["total_spend"]

    blocked = client.post(
        f"{proxy.url}/customer/update",
        headers=bearer(MASTER_KEY),
        json={"user_id": user, "blocked": True, "max_budget": "100"},
    )
    assert blocked.status_code == 200 and blocked.json()["blocked"] is True
    refused = edit(client, proxy.url, MASTER_KEY, user=user)
    assert refused.status_code == 403 and _error(refused)["code"] == "end_user_blocked"
    client.post(
        f"{proxy.url}/customer/update",
        headers=bearer(MASTER_KEY),
        json={"user_id": user, "blocked": False},
    )
    assert edit(client, proxy.url, MASTER_KEY, user=user).status_code == 200

    unknown = client.get(
        f"{proxy.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": "nobody"}
    )
    assert unknown.status_code == 404
    missing = client.post(
        f"{proxy.url}/customer/update", headers=bearer(MASTER_KEY), json={"user_id": "nobody"}
    )
    assert missing.status_code == 404


def test_spend_endpoints_master_sees_all_a_key_only_its_own(proxy, client):
    first_day = datetime.now(UTC).date()  # read before the calls: a run may cross midnight
    first = generate(client, proxy.url, key_alias="spend-a")
    second = generate(client, proxy.url, key_alias="spend-b")
    for made, count in ((first, 2), (second, 1)):
        for _ in range(count):
            assert edit(client, proxy.url, made["key"], user="spend-user").status_code == 200
    wait_for(lambda: spend_rows(client, proxy.url, user="spend-user")["total"] == 3)

    everything = spend_rows(client, proxy.url, user="spend-user")
    assert {r["api_key_hash"] for r in everything["data"]} == {
        first["key_hash"],
        second["key_hash"],
    }
    own = spend_rows(client, proxy.url, first["key"], user="spend-user")
    assert own["total"] == 2 and {r["key_alias"] for r in own["data"]} == {"spend-a"}
    # A key cannot widen its view by naming another key's hash: of its own rows, none are
    # that key's (until 2026-12-07 it got its own, as though they were the other key's).
    sneaky = spend_rows(client, proxy.url, first["key"], api_key_hash=second["key_hash"])
    assert sneaky["total"] == 0 and sneaky["data"] == []

    page_one = spend_rows(client, proxy.url, user="spend-user", page=1, page_size=2)
    page_two = spend_rows(client, proxy.url, user="spend-user", page=2, page_size=2)
    assert len(page_one["data"]) == 2 and page_one["has_more"] is True
    assert len(page_two["data"]) == 1 and page_two["has_more"] is False
    ids = {r["request_id"] for r in page_one["data"] + page_two["data"]}
    assert len(ids) == 3

    last_day = datetime.now(UTC).date()
    window = spend_rows(
        client,
        proxy.url,
        user="spend-user",
        start_date=first_day.isoformat(),
        end_date=(last_day + timedelta(days=1)).isoformat(),
    )
    assert window["total"] == 3
    past = spend_rows(client, proxy.url, user="spend-user", end_date=first_day.isoformat())
    assert past["total"] == 0
    bad = client.get(
        f"{proxy.url}/spend/logs", headers=bearer(MASTER_KEY), params={"start_date": "soon"}
    )
    assert bad.status_code == 400

    summary = client.get(f"{proxy.url}/spend/keys", headers=bearer(MASTER_KEY)).json()["data"]
    by_hash = {row["key_hash"]: row for row in summary}
    assert by_hash[first["key_hash"]]["requests"] == 2
    assert by_hash[second["key_hash"]]["requests"] == 1
    mine = client.get(f"{proxy.url}/spend/keys", headers=bearer(second["key"])).json()["data"]
    assert [row["key_hash"] for row in mine] == [second["key_hash"]]
    # page / page_size, which /openapi.json lists, were ignored: every key came back
    pages = [
        client.get(
            f"{proxy.url}/spend/keys",
            headers=bearer(MASTER_KEY),
            params={"page": page, "page_size": 1},
        ).json()
        for page in range(1, len(summary) + 1)
    ]
    assert [p["data"][0]["key_hash"] for p in pages] == [row["key_hash"] for row in summary]
    assert all(len(p["data"]) == 1 and p["total"] == len(summary) for p in pages)
    assert pages[0]["has_more"] and not pages[-1]["has_more"]
    for bad_size in ("0", "-1", "x", "1001"):
        refused = client.get(
            f"{proxy.url}/spend/keys",
            headers=bearer(MASTER_KEY),
            params={"page_size": bad_size},
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "page_size"
    assert client.get(f"{proxy.url}/spend/logs").status_code == 401


def test_keys_are_stored_hashed_only(proxy, client, ledger_file):
    made = generate(client, proxy.url, key_alias="hashed")
    engine = sa.create_engine(f"sqlite:///{ledger_file}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM proxy_keys")).all()
    finally:
        engine.dispose()
    text = repr(rows)
    assert made["key_hash"] in text and made["key"] not in text


@pytest.mark.parametrize("raw", ["inf", "Infinity", "nan", "-1", "soon"])
def test_a_key_cache_time_that_is_not_a_finite_number_is_ignored(monkeypatch, raw):
    """`inf` would keep a deleted key's record, and let it spend, for ever."""
    from tracking.proxy.keys import DEFAULT_CACHE_SECONDS, cache_seconds_from_environment

    monkeypatch.setenv("TRACKING_KEY_CACHE_SECONDS", raw)
    assert cache_seconds_from_environment() == DEFAULT_CACHE_SECONDS
    monkeypatch.setenv("TRACKING_KEY_CACHE_SECONDS", "0.5")
    assert cache_seconds_from_environment() == 0.5


def test_failed_calls_the_upstream_may_have_billed_count_on_the_key_budget(proxy, client, fake):
    """A 200 the proxy cannot read (here: a body cut short) was most likely made and billed:
    its estimate is in the ledger, and it is charged to the key's budget too, so failures of
    this kind cannot spend past the budget."""
    key = generate(client, proxy.url, max_budget="0.05", key_alias="billed-failures")["key"]
    fake.inject(malformed=True, times=None)
    try:
        statuses = [edit(client, proxy.url, key).status_code for _ in range(6)]
    finally:
        fake.clear_faults()
    # Each answer is a 502 estimated at about $0.02: the third cannot be reserved any more.
    assert statuses[0] == 502 and statuses[-1] == 429, statuses
    assert statuses.count(502) <= 3


def test_a_key_header_given_twice_with_different_keys_is_refused(proxy, client, fake):
    # The last line won: a front proxy appending its own Authorization decided the caller by the
    # order of the lines. The same key twice is no ambiguity.
    made = generate(client, proxy.url, key_alias="twice")
    form = {"model": "gpt-image-1", "prompt": "a hat", "quality": "low", "size": "1024x1024"}
    files = {"image": ("a.png", PNG, "image/png")}
    before = len(fake.requests)
    for name, first, second in [
        ("authorization", "Bearer sk-nope", f"Bearer {made['key']}"),
        ("authorization", f"Bearer {made['key']}", "Bearer sk-nope"),
        ("x-api-key", "sk-nope", made["key"]),
    ]:
        refused = client.post(
            f"{proxy.url}/v1/images/edits",
            headers=[(name, first), (name, second)],
            data=form,
            files=files,
        )
        assert refused.status_code == 401, refused.text
        assert "given more than once" in refused.json()["error"]["message"]
    assert len(fake.requests) == before
    twice = [("authorization", f"Bearer {made['key']}")] * 2
    served = client.post(f"{proxy.url}/v1/images/edits", headers=twice, data=form, files=files)
    assert served.status_code == 200, served.text
