"""One rule for end-user ids: the exact text, everywhere. An id with surrounding spaces can be
created, blocked and budgeted, and the id a block or budget names is exactly the id a call
sends and the ledger records; a block on ``blocked-bob`` is not lifted by ``" blocked-bob"``
becoming ``"blocked-bob"`` somewhere and not elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.accounts_support import accounts_config, bearer, edit, ledger_env, spend_rows
from tests.proxy_support import MASTER_KEY, ProxyProcess


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("end-users")
    url = f"sqlite:///{folder / 'ledger.db'}"
    with ProxyProcess(accounts_config(folder, fake.url, url), env=ledger_env(url)) as process:
        yield process


def _customer(client: httpx.Client, base: str, **fields: object) -> httpx.Response:
    return client.post(f"{base}/customer/new", headers=bearer(MASTER_KEY), json=fields)


def test_an_id_with_spaces_is_blocked_exactly_as_named(proxy, client):
    spaced = " spaced-bob "
    made = _customer(client, proxy.url, user_id=spaced, blocked=True)
    assert made.status_code == 200 and made.json()["end_user_id"] == spaced
    refused = edit(client, proxy.url, MASTER_KEY, user=spaced)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "end_user_blocked"
    # "spaced-bob" is another end user: nothing names it, so it is served.
    assert edit(client, proxy.url, MASTER_KEY, user="spaced-bob").status_code == 200
    info = client.get(
        f"{proxy.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": spaced}
    )
    assert info.status_code == 200 and info.json()["blocked"] is True


def test_a_budget_on_an_id_with_spaces_counts_the_calls_the_ledger_records(proxy, client):
    spaced = "\u00a0nbsp-carol"  # a no-break space: text, not a control character
    assert _customer(client, proxy.url, user_id=spaced, max_budget="0.03").status_code == 200
    statuses = [edit(client, proxy.url, MASTER_KEY, user=spaced).status_code for _ in range(4)]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    rows = spend_rows(client, proxy.url, user=spaced)
    assert rows["total"] == statuses.count(200)
    assert {row["end_user"] for row in rows["data"]} == {spaced}
    info = client.get(
        f"{proxy.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": spaced}
    ).json()
    assert info["total_spend"] == info["period_spend"] and float(info["total_spend"]) > 0
