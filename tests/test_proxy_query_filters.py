"""A spend or management route's query parameter the proxy does not implement is a 400 naming it,
never dropped: LiteLLM's ``/spend/logs?api_key=`` or ``?user_id=``, its report's ``customer_id``,
answered with every row of the ledger, would be read as the rows of that key or end user (a bill
summed from them charges one end user for everyone's calls). A parameter given twice is refused
too, rather than one of the two silently winning. The parameters a route does take still filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
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
from tests.proxy_support import MASTER_KEY, ProxyProcess


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("query-filters")
    url = f"sqlite:///{folder / 'ledger.db'}"
    with ProxyProcess(accounts_config(folder, fake.url, url), env=ledger_env(url)) as process:
        yield process


def _unknown(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error", error
    assert repr(param) in error["message"] or f"{param}:" in error["message"], error
    return error


def test_unimplemented_filters_are_refused_not_ignored(proxy, client):
    for user in ("alice", "bob"):
        assert edit(client, proxy.url, MASTER_KEY, user=user).status_code == 200
    wait_for(lambda: spend_rows(client, proxy.url)["total"] >= 2)
    master = bearer(MASTER_KEY)
    secret = generate(client, proxy.url)["key"]

    # LiteLLM's names for filters this proxy takes under others, or does not have
    for route, query, param in [
        ("/spend/logs", {"user_id": "alice"}, "user_id"),
        ("/spend/logs", {"end_user": "alice"}, "end_user"),
        ("/spend/logs", {"api_key": secret}, "api_key"),
        ("/spend/logs", {"request_id": "x"}, "request_id"),
        ("/spend/keys", {"user": "alice"}, "user"),
        ("/global/spend/report", {"customer_id": "alice"}, "customer_id"),
        ("/global/spend/report", {"api_key": secret}, "api_key"),
        ("/global/spend", {"team_id": "t"}, "team_id"),
        ("/global/spend/end_users", {"user": "alice"}, "user"),
        ("/key/list", {"user_id": "alice"}, "user_id"),
        ("/key/info", {"key_hash": "0" * 64, "token": "x"}, "token"),
        ("/customer/info", {"end_user_id": "alice", "user_id": "bob"}, "user_id"),
    ]:
        error = _unknown(client.get(f"{proxy.url}{route}", headers=master, params=query), param)
        assert secret not in error["message"]  # a parameter is named, its value never echoed

    # a parameter given twice: neither value silently wins
    twice = client.get(f"{proxy.url}/spend/logs?user=alice&user=bob", headers=master)
    error = _unknown(twice, "user")
    assert "more than once" in error["message"]

    # the filters it takes still filter
    alice = spend_rows(client, proxy.url, user="alice")
    assert alice["total"] == 1 and [r["end_user"] for r in alice["data"]] == ["alice"]
    report = client.get(
        f"{proxy.url}/global/spend/report", headers=master, params={"group_by": "customer"}
    )
    assert report.status_code == 200, report.text
    info = client.get(f"{proxy.url}/customer/info", headers=master, params={"end_user_id": "a"})
    assert info.status_code == 404, info.text  # no such end user: past the query's check
