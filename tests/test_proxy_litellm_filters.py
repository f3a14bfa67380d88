"""LiteLLM's spend filters, as a LiteLLM user sends them: ``/spend/logs?api_key=`` (by the key's
digest: its secret in a URL is refused, as on ``/key/info``), ``?request_id=``, and
``/global/spend/report``'s ``api_key``, ``customer_id`` and ``team_id``. LiteLLM's
internal-user filters (``user_id``, ``internal_user_id``) have no counterpart here: a 400 saying
what to use instead.

One ``tracking serve`` subprocess per ledger (SQLite, then PostgreSQL) in front of the session's
fake upstream; everything over HTTP on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts_support import bearer, edit, generate, proxy_on_ledger, spend_rows, wait_for
from tests.proxy_support import MASTER_KEY, ProxyProcess


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def proxy(request, fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    with proxy_on_ledger(request, fake.url, tmp_path_factory.mktemp("filters")) as process:
        yield process


def _master(client: httpx.Client, url: str, **query: str) -> httpx.Response:
    return client.get(url, headers=bearer(MASTER_KEY), params=query)


def _refused(response: httpx.Response, param: str, *hints: str) -> str:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    for hint in hints:
        assert hint in error["message"], error
    return str(error["message"])


def test_litellm_spend_filters_filter(proxy, client):
    first_day = datetime.now(UTC).date()  # read before the calls: a run may cross midnight
    key = generate(client, proxy.url, key_alias="lf", team_id="lf-team")
    other = generate(client, proxy.url, key_alias="lf-other")
    assert edit(client, proxy.url, key["key"], user="lf-alice").status_code == 200
    assert edit(client, proxy.url, other["key"], user="lf-bob").status_code == 200
    assert edit(client, proxy.url, MASTER_KEY, user="lf-bob").status_code == 200
    wait_for(lambda: spend_rows(client, proxy.url, user="lf-bob")["total"] == 2)
    wait_for(lambda: spend_rows(client, proxy.url, user="lf-alice")["total"] == 1)
    (alice_row,) = spend_rows(client, proxy.url, user="lf-alice")["data"]
    cost = Decimal(alice_row["cost_usd"])
    assert cost > 0
    logs = f"{proxy.url}/spend/logs"

    # api_key: the key's digest, in either case (LiteLLM's filter takes it too)
    by_digest = _master(client, logs, api_key=key["key_hash"].upper())
    assert by_digest.status_code == 200, by_digest.text
    assert [r["api_key_hash"] for r in by_digest.json()["data"]] == [key["key_hash"]]
    assert [r["request_id"] for r in by_digest.json()["data"]] == [alice_row["request_id"]]
    clash = _master(client, logs, api_key=key["key_hash"], api_key_hash=other["key_hash"])
    _refused(clash, "api_key_hash", "another key")
    # its secret: refused, never echoed, as /key/info?key= is (a URL lands in access logs)
    secret = _master(client, logs, api_key=key["key"])
    assert key["key"] not in _refused(secret, "api_key", "api_key_hash=<digest>")
    assert secret.json()["error"]["code"] == "secret_in_query_string"

    # a virtual key finds its own rows by its digest, and none of another key's
    own = spend_rows(client, proxy.url, key["key"], api_key=key["key_hash"])
    assert own["total"] == 1
    assert spend_rows(client, proxy.url, key["key"], api_key=other["key_hash"])["total"] == 0

    # request_id: that call's row alone, with its figures
    one = spend_rows(client, proxy.url, request_id=alice_row["request_id"])
    assert one["total"] == 1 and one["data"][0]["end_user"] == "lf-alice"
    assert spend_rows(client, proxy.url, request_id="no-such-call")["total"] == 0

    # LiteLLM's internal user: none here; the refusal says what to use instead
    _refused(_master(client, logs, user_id="lf-alice"), "user_id", "internal user", "user")

    # the report: a key's is LiteLLM's per-key shape, for that key alone
    window = {
        "start_date": first_day.isoformat(),
        "end_date": (datetime.now(UTC).date() + timedelta(days=1)).isoformat(),
    }
    report = f"{proxy.url}/global/spend/report"
    per_key = _master(client, report, api_key=key["key_hash"], **window)
    assert per_key.status_code == 200, per_key.text
    secret = _master(client, report, api_key=key["key"], **window)
    assert key["key"] not in _refused(secret, "api_key", "api_key_hash=<digest>")
    (entry,) = per_key.json()
    assert entry["api_key"] == key["key_hash"] and Decimal(entry["total_cost"]) == cost

    # customer_id: that end user's days alone
    days = _master(client, report, customer_id="lf-alice", **window).json()
    customers = [c for d in days for c in d["customers"]]
    assert [c["customer"] for c in customers] == ["lf-alice"]
    assert Decimal(customers[0]["total_spend"]) == cost

    # team_id, in any grouping: that team's calls alone
    teams = _master(client, report, team_id="lf-team", group_by="team", **window).json()
    assert [t["team_id"] for d in teams for t in d["teams"]] == ["lf-team"]
    bobs = _master(client, report, customer_id="lf-bob", group_by="api_key", **window).json()
    assert other["key_hash"] in {b["api_key"] for b in bobs}
    assert key["key_hash"] not in {b["api_key"] for b in bobs}  # lf-alice's key: not lf-bob's

    refused = _master(client, report, internal_user_id="u1", **window)
    _refused(refused, "internal_user_id", "internal user", "customer_id")


def test_openapi_advertises_the_filters(proxy, client):
    document = client.get(f"{proxy.url}/openapi.json").json()

    def names(path: str) -> set[str]:
        return {p["name"] for p in document["paths"][path]["get"]["parameters"]}

    assert {"api_key", "api_key_hash", "request_id", "user"} <= names("/spend/logs")
    assert "user_id" not in names("/spend/logs")
    assert {"api_key", "customer_id", "team_id", "group_by"} <= names("/global/spend/report")
