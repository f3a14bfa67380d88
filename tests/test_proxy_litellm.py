"""The proxy as a LiteLLM proxy user finds it: their routes, shapes, headers and config.

One ``tracking serve`` subprocess with a master key and a SQLite ledger in front of the session's
fake upstream serves most tests; the ones about open proxies and ``environment_variables`` start
their own. Everything goes over HTTP on loopback, through the official OpenAI client or httpx.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.accounts_support import (
    accounts_config,
    bearer,
    edit,
    generate,
    ledger_env,
    spend_rows,
    wait_for,
)
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("litellm")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = accounts_config(folder, fake.url, url)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def _master(client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    return client.request(method, url, headers=bearer(MASTER_KEY), **kwargs)  # type: ignore[arg-type]


# -- response headers --------------------------------------------------------------------------


def test_an_edit_carries_litellm_headers_beside_ours(proxy, client):
    response = edit(client, proxy.url, MASTER_KEY)
    assert response.status_code == 200, response.text
    headers = response.headers
    assert headers["x-litellm-call-id"] == headers["x-tracking-request-id"]
    assert Decimal(headers["x-litellm-response-cost"]) == Decimal(
        headers["x-tracking-response-cost"]
    )
    assert Decimal(headers["x-litellm-response-cost"]) > 0
    assert headers["x-litellm-model-id"]  # the deployment that served
    assert float(headers["x-litellm-overhead-duration-ms"]) >= 0


# -- keys --------------------------------------------------------------------------------------


def test_key_list_update_and_regenerate(proxy, client):
    made = generate(client, proxy.url, key_alias="rotate-me", team_id="listing", max_budget=3)
    listed = _master(client, "GET", f"{proxy.url}/key/list", params={"team_id": "listing"})
    assert listed.status_code == 200
    body = listed.json()
    assert body["keys"] == [made["key_hash"]]
    assert (body["total_count"], body["current_page"], body["total_pages"]) == (1, 1, 1)
    full = _master(
        client,
        "GET",
        f"{proxy.url}/key/list",
        params={"team_id": "listing", "return_full_object": "true"},
    ).json()["keys"][0]
    assert full["token"] == made["key_hash"] and full["key_alias"] == "rotate-me"
    assert made["key"] not in listed.text

    updated = _master(
        client,
        "POST",
        f"{proxy.url}/key/update",
        json={"key": made["key"], "key_alias": "renamed", "models": ["dall-e-2"], "rpm_limit": 7},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["key_alias"] == "renamed" and updated.json()["models"] == ["dall-e-2"]
    assert updated.json()["max_budget"] == "3"  # untouched fields stay
    # /key/update holds rpm_limit to /key/generate's bound (it took up to 1e9)
    too_fast = _master(
        client,
        "POST",
        f"{proxy.url}/key/update",
        json={"key": made["key"], "rpm_limit": 1_000_001},
    )
    assert too_fast.status_code == 400 and too_fast.json()["error"]["param"] == "rpm_limit"
    refused = edit(client, proxy.url, made["key"])  # gpt-image-1 no longer allowed
    assert refused.status_code == 403

    fresh = _master(client, "POST", f"{proxy.url}/key/regenerate", json={"key": made["key"]})
    assert fresh.status_code == 200, fresh.text
    new_key = fresh.json()["key"]
    assert new_key != made["key"] and fresh.json()["key_alias"] == "renamed"
    assert edit(client, proxy.url, made["key"], model="dall-e-2").status_code == 401
    assert edit(client, proxy.url, new_key, model="dall-e-2").status_code == 200


def test_a_regenerated_key_keeps_its_spend_and_so_its_budget(proxy, client):
    made = generate(client, proxy.url, key_alias="regen-budget", max_budget=100)
    assert edit(client, proxy.url, made["key"]).status_code == 200
    spent = Decimal(
        _master(
            client, "GET", f"{proxy.url}/key/info", params={"key_hash": made["key_hash"]}
        ).json()["info"]["spend"]
    )
    assert spent > 0
    # the budget is now spent: the key is refused
    lowered = _master(
        client,
        "POST",
        f"{proxy.url}/key/update",
        json={"key": made["key"], "max_budget": str(spent)},
    )
    assert lowered.status_code == 200, lowered.text
    assert edit(client, proxy.url, made["key"]).status_code == 429

    key, key_hash = made["key"], made["key_hash"]
    hashes = [key_hash]
    for _ in range(2):  # twice: the spend follows the key through every new secret
        fresh = _master(client, "POST", f"{proxy.url}/key/regenerate", json={"key": key})
        assert fresh.status_code == 200, fresh.text
        key, key_hash = fresh.json()["key"], fresh.json()["token"]
        hashes.append(key_hash)
        refused = edit(client, proxy.url, key)
        assert refused.status_code == 429, refused.text  # not a fresh budget
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert "has reached its budget" in refused.json()["error"]["message"]
        info = _master(client, "GET", f"{proxy.url}/key/info", params={"key_hash": key_hash})
        assert Decimal(info.json()["info"]["spend"]) == spent
        # the key reads its own history, made under its earlier hashes too
        own_rows = spend_rows(client, proxy.url, key)["data"]
        assert own_rows and {r["api_key_hash"] for r in own_rows} == {hashes[0]}
        own_keys = client.get(f"{proxy.url}/spend/keys", headers=bearer(key)).json()["data"]
        assert [Decimal(k["spend"]) for k in own_keys] == [spent]


def test_key_routes_refuse_without_master_and_for_unknown_keys(proxy, client):
    key = generate(client, proxy.url)["key"]
    for method, path in (
        ("GET", "/key/list"),
        ("POST", "/key/update"),
        ("POST", "/key/regenerate"),
    ):
        response = client.request(method, f"{proxy.url}{path}", headers=bearer(key), json={})
        assert response.status_code == 403, path
    missing = _master(client, "POST", f"{proxy.url}/key/update", json={"key": "sk-nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    no_key = _master(client, "POST", f"{proxy.url}/key/update", json={})
    assert no_key.status_code == 400 and no_key.json()["error"]["param"] == "key"
    # a key_hash naming another key than key was ignored (key decided): now refused
    other = generate(client, proxy.url)
    for path in ("/key/update", "/key/regenerate"):
        both = {"key": key, "key_hash": other["key_hash"], "key_alias": "which"}
        refused = _master(client, "POST", f"{proxy.url}{path}", json=both)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "key_hash"
        bad_hash = _master(client, "POST", f"{proxy.url}{path}", json={"key_hash": "zz"})
        assert bad_hash.status_code == 400 and bad_hash.json()["error"]["param"] == "key_hash"
    same = {"key": other["key"], "key_hash": other["key_hash"], "key_alias": "same"}
    agreed = _master(client, "POST", f"{proxy.url}/key/update", json=same)
    assert agreed.status_code == 200 and agreed.json()["key_alias"] == "same"
    bad_size = _master(client, "GET", f"{proxy.url}/key/list", params={"size": "0"})
    assert bad_size.status_code == 400
    # "²" passes str.isdigit() but not int(): these were 500s with a traceback
    for path, name in (("/key/list", "page"), ("/global/spend/keys", "limit")):
        odd = _master(client, "GET", f"{proxy.url}{path}", params={name: "\u00b2"})
        assert odd.status_code == 400 and odd.json()["error"]["param"] == name, odd.text


# -- customers ---------------------------------------------------------------------------------


def test_customer_block_unblock_list_delete(proxy, client):
    created = _master(
        client, "POST", f"{proxy.url}/customer/new", json={"user_id": "cust-a", "max_budget": 9}
    )
    assert created.status_code == 200
    assert edit(client, proxy.url, MASTER_KEY, user="cust-a").status_code == 200

    blocked = _master(
        client, "POST", f"{proxy.url}/customer/block", json={"user_ids": ["cust-a", "cust-b"]}
    )
    assert blocked.status_code == 200
    assert [c["user_id"] for c in blocked.json()["blocked_users"]] == ["cust-a", "cust-b"]
    assert all(c["blocked"] for c in blocked.json()["blocked_users"])
    refused = edit(client, proxy.url, MASTER_KEY, user="cust-b")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "end_user_blocked"

    unblocked = _master(
        client, "POST", f"{proxy.url}/customer/unblock", json={"user_ids": ["cust-b"]}
    )
    assert unblocked.json()["unblocked_users"][0]["blocked"] is False
    assert edit(client, proxy.url, MASTER_KEY, user="cust-b").status_code == 200

    listed = {c["user_id"]: c for c in _master(client, "GET", f"{proxy.url}/customer/list").json()}
    assert {"cust-a", "cust-b"} <= set(listed)
    assert Decimal(listed["cust-a"]["spend"]) > 0 and listed["cust-a"]["max_budget"] == "9"

    deleted = _master(
        client, "POST", f"{proxy.url}/customer/delete", json={"user_ids": ["cust-a", "nobody"]}
    )
    assert deleted.status_code == 200 and deleted.json()["deleted_customers"] == 1
    info = _master(client, "GET", f"{proxy.url}/customer/info", params={"end_user_id": "cust-a"})
    assert info.status_code == 404
    again = _master(client, "POST", f"{proxy.url}/customer/delete", json={"user_ids": ["cust-a"]})
    assert again.status_code == 404
    bad = _master(client, "POST", f"{proxy.url}/customer/block", json={"user_ids": "cust-a"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "user_ids"


# -- /global/spend -----------------------------------------------------------------------------


def test_global_spend_routes_sum_the_ledger(proxy, client):
    first_day = datetime.now(UTC).date()  # read before the call: a run may cross midnight
    key = generate(client, proxy.url, key_alias="global", team_id="team-global")
    assert edit(client, proxy.url, key["key"], user="global-user").status_code == 200
    wait_for(lambda: spend_rows(client, proxy.url, user="global-user")["total"] == 1)
    cost = Decimal(spend_rows(client, proxy.url, user="global-user")["data"][0]["cost_usd"])

    total = Decimal(_master(client, "GET", f"{proxy.url}/global/spend").json()["spend"])
    assert total >= cost > 0
    keys = _master(client, "GET", f"{proxy.url}/global/spend/keys").json()
    assert {
        "api_key": key["key_hash"],
        "total_spend": f"{cost:f}",
        "requests": 1,
    } in keys
    models = {m["model"] for m in _master(client, "GET", f"{proxy.url}/global/spend/models").json()}
    assert "gpt-image-1" in models
    users = _master(client, "GET", f"{proxy.url}/global/spend/end_users").json()
    assert any(u["end_user"] == "global-user" for u in users)
    teams = _master(client, "GET", f"{proxy.url}/global/spend/teams").json()
    assert any(t["team"] == "team-global" for t in teams)

    last_day = datetime.now(UTC).date()
    report = _master(
        client,
        "GET",
        f"{proxy.url}/global/spend/report",
        params={
            "group_by": "team",
            "start_date": first_day.isoformat(),
            "end_date": (last_day + timedelta(days=1)).isoformat(),
        },
    ).json()
    (team,) = [t for d in report for t in d["teams"] if t["team_name"] == "team-global"]
    assert Decimal(team["total_spend"]) == cost and team["metadata"][0]["model"] == "gpt-image-1"
    bad = _master(client, "GET", f"{proxy.url}/global/spend/report", params={"group_by": "x"})
    assert bad.status_code == 400
    assert client.get(f"{proxy.url}/global/spend", headers=bearer(key["key"])).status_code == 403


# -- /health and /v1/models/{id} ---------------------------------------------------------------


def test_health_checks_the_configuration_without_calling_upstream(proxy, client, fake):
    before = fake.hits
    response = _master(client, "GET", f"{proxy.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["healthy_count"] == 2 and body["unhealthy_count"] == 0
    assert body["checks"] == "configuration"
    assert {e["model_name"] for e in body["healthy_endpoints"]} == {"gpt-image-1", "dall-e-2"}
    assert API_KEY not in response.text
    assert fake.hits == before
    assert client.get(f"{proxy.url}/health").status_code == 401  # behind the key like LiteLLM's


def test_models_retrieve_through_the_official_client(proxy):
    with openai.OpenAI(api_key=MASTER_KEY, base_url=f"{proxy.url}/v1", max_retries=0) as sdk:
        model = sdk.models.retrieve("gpt-image-1")
        assert model.id == "gpt-image-1" and model.object == "model"
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("no-such-model")


# -- operator output ---------------------------------------------------------------------------


def test_access_log_line_per_request_and_start_up_summary(proxy, client):
    key = generate(client, proxy.url, key_alias="logged")["key"]
    response = edit(client, proxy.url, key, user="log-user")
    request_id = response.headers["x-tracking-request-id"]
    wait_for(lambda: request_id in proxy.log())
    line = next(x for x in proxy.log().splitlines() if request_id in x)
    assert "status=200" in line and "key_alias=logged" in line and "model=gpt-image-1" in line
    assert re.search(r"cost_usd=0\.\d+", line) and re.search(r"latency_ms=[\d.]+", line)
    assert key not in proxy.log() and MASTER_KEY not in proxy.log()
    client.get(f"{proxy.url}/key/info", params={"key": key})  # a secret in a query string
    wait_for(lambda: "path=/key/info status=401" in proxy.log())
    assert key not in proxy.log()
    # a path chosen by a caller cannot write a NUL, an ESC or a CR into the log
    client.get(f"{proxy.url}/v1/images/stored/a%1B%5B2Jb%0Dc%00.png")
    wait_for(lambda: "/v1/images/stored/a" in proxy.log())
    line = next(x for x in proxy.log().splitlines() if "/v1/images/stored/a" in x)
    assert 'path="/v1/images/stored/a\\x1b[2Jb\\rc\\x00.png"' in line
    assert not any(c in line for c in "\x00\x1b\r")
    # the start-up summary: models, ledger location, auth
    log = proxy.log()
    assert "models: gpt-image-1, dall-e-2" in log
    assert re.search(r"ledger: SQLite file \S+ledger\.db", log)
    assert "auth: on" in log


def test_a_streamed_call_s_access_line_says_what_it_cost(proxy, client):
    """A streamed answer's headers go out before its cost is known, and the access line took
    the cost from them alone: a streamed call's line had no ``cost_usd``. It has the cost its
    completed event carries."""
    import json

    response = edit(client, proxy.url, MASTER_KEY, stream="true", partial_images="1")
    assert response.status_code == 200, response.text
    request_id = response.headers["x-tracking-request-id"]
    events = [json.loads(x[6:]) for x in response.text.splitlines() if x.startswith("data: ")]
    cost = events[-1]["tracking"]["response_cost"]
    assert Decimal(cost) > 0
    wait_for(lambda: request_id in proxy.log())
    line = next(x for x in proxy.log().splitlines() if request_id in x)
    assert f"cost_usd={cost} " in line and "status=200" in line


# -- environment_variables and open proxies -----------------------------------------------------


def test_environment_variables_are_exported_before_providers_read_them(fake, tmp_path, client):
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [
                {"model_name": "images", "litellm_params": {"model": "gpt-image-1"}},
                {"model_name": "unpriced", "litellm_params": {"model": "some-new-model"}},
            ],
            "environment_variables": {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": API_KEY},
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )
    # The shell points elsewhere (a closed port): the config file's value must win, as in LiteLLM.
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-wrong"}
    with ProxyProcess(config, env=env) as proxy:
        before = fake.hits
        response = edit(client, proxy.url, None, model="images")
        assert response.status_code == 200, response.text
        assert fake.hits == before + 1
        # an unpriced call has no x-litellm-response-cost: never a made-up 0
        unpriced = edit(client, proxy.url, None, model="unpriced")
        assert unpriced.status_code == 200, unpriced.text
        assert unpriced.headers["x-tracking-response-cost"] == "unpriced"
        assert "x-litellm-response-cost" not in unpriced.headers
        assert "environment_variables exported: OPENAI_API_KEY, OPENAI_BASE_URL" in proxy.log()
        assert API_KEY not in proxy.log()
        assert "auth: OFF" in proxy.log()
        # On a proxy without a master key, spend reads are closed unless opened on purpose.
        closed = client.get(f"{proxy.url}/spend/logs")
        assert closed.status_code == 403
        assert closed.json()["error"]["code"] == "spend_reads_closed"
        assert client.get(f"{proxy.url}/spend/keys").status_code == 403
        assert client.get(f"{proxy.url}/global/spend").status_code == 403


def test_open_spend_reads_when_the_config_says_so(fake, tmp_path, client):
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            fake.url,
            model_name="images",
            model="gpt-image-1",
            general_settings={
                "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
                "allow_open_spend_reads": True,
            },
        ),
    )
    with ProxyProcess(config) as proxy:
        assert client.get(f"{proxy.url}/spend/logs").status_code == 200


# -- budget refusals say which budget and why ----------------------------------------------------


def test_budget_refusal_tells_reached_from_does_not_fit(proxy, client, fake):
    before = fake.hits
    small = generate(client, proxy.url, key_alias="small", max_budget="0.001")["key"]
    refused = edit(client, proxy.url, small)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "worst-case cost" in message and "does not fit" in message
    # who it is stays whole: "end user 'alice''s" read badly; the budget is named, then whose
    assert "left (of $0.0010) on the budget of this key (small)" in message, message
    assert "has reached" not in message  # nothing was spent

    spent = generate(client, proxy.url, key_alias="spent", max_budget="0")["key"]
    refused = edit(client, proxy.url, spent)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "this key (spent) has reached its budget of $0.0000" in message
    assert fake.hits == before  # neither reached the upstream


def test_a_budget_refusal_never_rounds_what_is_left_to_the_call_s_cost(proxy, client):
    # A budget 1e-8 USD short of the call's hold said "worst-case cost of $0.0140 does not fit
    # in the $0.0140 left": both rounded to 4 places. The figures are exact now (at least 4).
    from tracking.pricing.estimate import max_expected_cost

    form = {"prompt": "make it blue", "quality": "low", "size": "1024x1024", "image": b"x"}
    hold = max_expected_cost(["gpt-image-1"], {**form, "n": 1})
    assert hold is not None and hold.as_tuple().exponent < -4  # more places than 4
    budget = hold - Decimal("0.00000001")
    short = generate(client, proxy.url, key_alias="short", max_budget=str(budget))["key"]
    refused = edit(client, proxy.url, short)
    assert refused.status_code == 429, refused.text
    message = refused.json()["error"]["message"]
    assert f"worst-case cost of ${hold:f} does not fit in the ${budget:f} left" in message


def test_environment_variables_resolve_references_before_they_are_exported(monkeypatch):
    from tracking.config import export_environment, parse_config

    config = parse_config(
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-1"}}],
            "environment_variables": {"OPENAI_API_KEY": "os.environ/GATEWAY_KEY", "N": 3},
        },
        environ={"GATEWAY_KEY": "sk-from-the-shell"},
    )
    # set first, so that monkeypatch restores what was there after the export
    monkeypatch.setenv("OPENAI_API_KEY", "sk-before")
    monkeypatch.setenv("N", "0")
    assert export_environment(config) == ["N", "OPENAI_API_KEY"]
    assert os.environ["OPENAI_API_KEY"] == "sk-from-the-shell" and os.environ["N"] == "3"
    assert "sk-from-the-shell" not in repr(config)


def _unknown(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error", error
    assert repr(param) in error["message"] or f"{param}:" in error["message"], error
    return error


def test_unimplemented_query_filters_are_refused_not_ignored(proxy, client):
    """A spend or management route's query parameter the proxy does not implement is a 400
    naming it, never dropped: LiteLLM's ``/spend/logs?user_id=`` (an internal user, which this
    proxy has not), answered with every row of the ledger, would be read as that user's rows. A
    parameter given twice is refused too. The ones a route takes still filter."""
    for user in ("qf-alice", "qf-bob"):
        assert edit(client, proxy.url, MASTER_KEY, user=user).status_code == 200
    wait_for(lambda: spend_rows(client, proxy.url, user="qf-bob")["total"] == 1)
    master = bearer(MASTER_KEY)
    secret = generate(client, proxy.url)["key"]

    # LiteLLM's names for filters this proxy takes under others, or does not have
    for route, query, param in [
        ("/spend/logs", {"user_id": "qf-alice"}, "user_id"),
        ("/spend/logs", {"end_user": "qf-alice"}, "end_user"),
        ("/spend/keys", {"user": "qf-alice"}, "user"),
        ("/spend/keys", {"api_key": secret}, "api_key"),
        ("/spend/logs", {"api_key": secret}, "api_key"),  # a secret in a URL: refused
        ("/global/spend/report", {"internal_user_id": "qf-alice"}, "internal_user_id"),
        ("/global/spend", {"team_id": "t"}, "team_id"),
        ("/global/spend/end_users", {"user": "qf-alice"}, "user"),
        ("/key/list", {"user_id": "qf-alice"}, "user_id"),
        ("/key/info", {"key_hash": "0" * 64, "token": "x"}, "token"),
        ("/customer/info", {"end_user_id": "qf-alice", "user_id": "qf-bob"}, "user_id"),
    ]:
        error = _unknown(client.get(f"{proxy.url}{route}", headers=master, params=query), param)
        assert secret not in error["message"]  # a parameter is named, its value never echoed

    # a parameter given twice: neither value silently wins
    twice = client.get(f"{proxy.url}/spend/logs?user=qf-alice&user=qf-bob", headers=master)
    error = _unknown(twice, "user")
    assert "more than once" in error["message"]

    # the filters it takes still filter
    alice = spend_rows(client, proxy.url, user="qf-alice")
    assert alice["total"] == 1 and [r["end_user"] for r in alice["data"]] == ["qf-alice"]
    report = client.get(
        f"{proxy.url}/global/spend/report", headers=master, params={"group_by": "customer"}
    )
    assert report.status_code == 200, report.text
    info = client.get(f"{proxy.url}/customer/info", headers=master, params={"end_user_id": "a"})
    assert info.status_code == 404, info.text  # no such end user: past the query's check
