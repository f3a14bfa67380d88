"""A budget written as a JSON number is read from its text, never through a binary float.

``{"max_budget": 999999999.9999999999}`` (within the 10 decimal places and $1,000,000,000 a
budget may have) was parsed to the float 1000000000.0 and stored as a budget of $1,000,000,000;
``12345678.1234567891`` became 12345678.123456789. Money is Decimal: the management routes now
keep each JSON number's text, and ``/key/generate``, ``/key/update``, ``/customer/new`` and
``/customer/update`` store exactly the amount written. (A decimal string was always exact.) The
proxy runs on PostgreSQL, whose NUMERIC(20, 10) holds every such budget; SQLite keeps a budget as
a REAL, 15 significant digits, whichever way it was written.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .proxy_support import MASTER_KEY, ProxyProcess, managed_proxy

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
#: Amounts a float cannot hold, as JSON numbers (not strings), and what they are.
AMOUNTS = [
    ("999999999.9999999999", "999999999.9999999999"),
    ("12345678.1234567891", "12345678.1234567891"),
    ("0.1234567891", "0.1234567891"),
]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, module_postgres_url: str
) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("budget-json-numbers")
    with managed_proxy(folder, database_url=module_postgres_url, auto_migrate=True) as running:
        yield running


def _post(client: httpx.Client, path: str, body: str) -> dict[str, object]:
    answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    document: dict[str, object] = answer.json()
    return document


@pytest.mark.parametrize(("written", "amount"), AMOUNTS)
def test_a_key_budget_is_the_number_written(proxy: ProxyProcess, written: str, amount: str) -> None:
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=60) as client:
        made = _post(client, "/key/generate", f'{{"max_budget": {written}}}')
        assert made["max_budget"] == amount
        info = client.get("/key/info", params={"key_hash": made["key_hash"]}).json()
        assert info["info"]["max_budget"] == amount
        updated = _post(
            client, "/key/update", f'{{"key_hash": "{made["key_hash"]}", "max_budget": {written}}}'
        )
        assert updated["max_budget"] == amount


@pytest.mark.parametrize(("written", "amount"), AMOUNTS)
def test_an_end_user_budget_is_the_number_written(
    proxy: ProxyProcess, written: str, amount: str
) -> None:
    user = f"json-number-{written}"
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=60) as client:
        made = _post(client, "/customer/new", f'{{"user_id": "{user}", "max_budget": {written}}}')
        assert made["budget"] == amount
        info = client.get("/customer/info", params={"end_user_id": user}).json()
        assert info["budget"] == amount
        _post(client, "/customer/update", f'{{"user_id": "{user}", "max_budget": 1}}')
        updated = _post(
            client, "/customer/update", f'{{"user_id": "{user}", "max_budget": {written}}}'
        )
        assert updated["budget"] == amount


def test_the_limits_still_apply_to_the_written_number() -> None:
    from tracking.proxy.errors import ProxyError
    from tracking.proxy.json_io import WrittenFloat, load_json_object, optional_money

    for written, fault in (
        ("1000000000.0000000001", "from 0 to 1000000000 USD"),  # a float would be 1e9: allowed
        ("0.00000000001", "at most 10 decimal places"),
        ("1e400", "from 0 to 1000000000 USD"),
        ("-0.5", "from 0 to 1000000000 USD"),
    ):
        document = load_json_object(f'{{"max_budget": {written}}}'.encode(), written_floats=True)
        assert isinstance(document["max_budget"], WrittenFloat)
        with pytest.raises(ProxyError, match=fault):
            optional_money(document, "max_budget")
    # other readers (an image generation's body) keep plain floats
    assert type(load_json_object(b'{"x": 0.5}')["x"]) is float
