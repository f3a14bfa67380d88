"""Hostile values at the proxy's edge get a clear 400 naming the field, never a 5xx, on SQLite and
on PostgreSQL: budgets that overflow the money column (``1e400``, ``1e10``, inf, nan), huge
durations, expiry dates and rpm limits, NUL and control characters in ids, 5,000-character ids,
page numbers that are not ASCII digits or are huge (``/key/list``'s ``page`` took up to 10^9,
beyond the 100,000 of the other pages, and no limits table said so), and a key in
``/key/info``'s query string.
After them all the proxy still serves an ordinary call and records it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.accounts_support import bearer, edit, generate, proxy_on_ledger, spend_rows, wait_for
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.proxy.limits import MAX_BUDGET_USD, MAX_ID_CHARS, MAX_PAGE


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def proxy(request, fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    """One proxy for the module's tests on each ledger: each counts only what it made."""
    with proxy_on_ledger(request, fake.url, tmp_path_factory.mktemp("edge-bounds")) as process:
        yield process


def _raw_json(client: httpx.Client, url: str, body: str) -> httpx.Response:
    headers = {**bearer(MASTER_KEY), "content-type": "application/json"}
    return client.post(url, headers=headers, content=body.encode())


def _refused(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    assert param in error["message"]
    return error


KEY_BODIES = [
    ('{"max_budget": 1e400}', "max_budget"),
    ('{"max_budget": "1e400"}', "max_budget"),
    ('{"max_budget": 1e10}', "max_budget"),
    ('{"max_budget": "10000000000"}', "max_budget"),
    ('{"max_budget": "inf"}', "max_budget"),
    ('{"max_budget": NaN}', "max_budget"),
    ('{"max_budget": "nan"}', "max_budget"),
    ('{"max_budget": "0.00000000001"}', "max_budget"),
    ('{"duration": "99999999999999999999d"}', "duration"),
    ('{"duration": "4000d"}', "duration"),
    ('{"expires": "9999-12-31T23:59:59"}', "expires"),
    ('{"expires": "9999-12-31T23:59:59-14:00"}', "expires"),
    ('{"rpm_limit": 99999999999999}', "rpm_limit"),
    ('{"rpm_limit": "99999999999999"}', "rpm_limit"),
    ('{"key_alias": "a\\u0000b"}', "key_alias"),
    ('{"key_alias": "line\\nbreak"}', "key_alias"),
    ('{"team": "t\\u0000"}', "team"),
    ('{"key_alias": "' + "x" * 5000 + '"}', "key_alias"),
    # a fault inside an object is named by its whole path (it was named "a", or "b")
    ('{"metadata": {"a": NaN}}', "metadata.a"),
    ('{"metadata": {"a": {"b": [1, Infinity]}}}', "metadata.a.b"),
    ('{"metadata": {"a": 1, "a": 2}}', "metadata.a"),
]


def test_hostile_key_fields_are_clear_400s(proxy, client):
    for body, param in KEY_BODIES:
        _refused(_raw_json(client, f"{proxy.url}/key/generate", body), param)
    # The largest budget allowed is stored and read back exactly; the key works.
    made = generate(client, proxy.url, max_budget=str(MAX_BUDGET_USD), rpm_limit=1_000_000)
    assert made["max_budget"] == str(MAX_BUDGET_USD)
    assert edit(client, proxy.url, made["key"]).status_code == 200
    for zero in ("-0", -0.0, "-0.00"):  # a budget of nothing, never shown as "-0"
        assert generate(client, proxy.url, max_budget=zero)["max_budget"] == "0"


def test_hostile_customer_fields_are_clear_400s(proxy, client):
    url = f"{proxy.url}/customer/new"
    for body, param in [
        ('{"user_id": "' + "c" * 5000 + '"}', "user_id"),
        ('{"user_id": "bob\\u0000"}', "user_id"),
        ('{"user_id": "bob", "max_budget": 1e10}', "max_budget"),
        ('{"user_id": "bob", "max_budget": 1e400}', "max_budget"),
    ]:
        _refused(_raw_json(client, url, body), param)
    info = client.get(
        f"{proxy.url}/customer/info", headers=bearer(MASTER_KEY), params={"end_user_id": "b\0"}
    )
    _refused(info, "end_user_id")


def test_hostile_spend_queries_are_clear_400s(proxy, client):
    for query, param in [
        ({"page": "²"}, "page"),
        ({"page": "9" * 40}, "page"),
        ({"page": "999999999999"}, "page"),
        ({"page_size": "²"}, "page_size"),
        ({"user": "u\0"}, "user"),
        ({"user": "u" * 5000}, "user"),
        ({"api_key_hash": "\0"}, "api_key_hash"),
    ]:
        response = client.get(f"{proxy.url}/spend/logs", headers=bearer(MASTER_KEY), params=query)
        _refused(response, param)
    virtual = generate(client, proxy.url)["key"]
    response = client.get(f"{proxy.url}/spend/logs", headers=bearer(virtual), params={"page": "²"})
    _refused(response, "page")


#: The most rows a page holds (``tracking.proxy.limits.MAX_PAGE_SIZE``).
MAX_PAGE_SIZE = 1000
KEY_LIST_QUERIES = [
    {"page": "0"},
    {"page": "-1"},
    {"page": "1.5"},
    {"page": "two"},
    {"page": "²"},
    {"page": str(MAX_PAGE + 1)},
    {"page": str(10**9)},
    {"size": "0"},
    {"size": "-3"},
    {"size": str(MAX_PAGE_SIZE + 1)},
]


def test_key_list_pages_are_bounded_and_a_page_past_the_last_is_empty(proxy, client):
    url = f"{proxy.url}/key/list"
    for query in KEY_LIST_QUERIES:
        (param,) = query
        error = _refused(client.get(url, headers=bearer(MASTER_KEY), params=query), param)
        assert error["code"] == "invalid_value", error
    total = _key_count(client, proxy.url)
    for page, size in ((total + 1, 1), (MAX_PAGE, MAX_PAGE_SIZE)):  # as LiteLLM: no error
        listed = client.get(url, headers=bearer(MASTER_KEY), params={"page": page, "size": size})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert (body["keys"], body["current_page"]) == ([], page)
        assert body["total_count"] == total and body["total_pages"] == -(-total // size)


EDGE_DATES = [
    ("end_date", "9999-12-31T23:59:59-14:00"),  # past datetime.max in UTC
    ("start_date", "0001-01-01T00:00:00+01:00"),  # before datetime.min in UTC
]


def test_dates_past_the_datetime_range_are_clear_400s(proxy, client):
    for path in ("/spend/logs", "/global/spend", "/global/spend/keys", "/global/spend/report"):
        for name, value in EDGE_DATES:
            response = client.get(
                f"{proxy.url}{path}", headers=bearer(MASTER_KEY), params={name: value}
            )
            assert _refused(response, name)["code"] == "invalid_value", path
    # The last datetime that is still in range in UTC is an ordinary filter.
    response = client.get(
        f"{proxy.url}/spend/logs",
        headers=bearer(MASTER_KEY),
        params={"start_date": "0001-01-01T00:00:00Z", "end_date": "9999-12-31T23:59:59Z"},
    )
    assert response.status_code == 200, response.text


def test_a_key_in_the_query_string_is_refused(proxy, client):
    key = generate(client, proxy.url)["key"]
    for caller in (MASTER_KEY, key):
        response = client.get(f"{proxy.url}/key/info", headers=bearer(caller), params={"key": key})
        error = _refused(response, "key")
        assert key not in response.text and error["code"] == "secret_in_query_string"
    _refused(
        client.get(f"{proxy.url}/key/info", headers=bearer(MASTER_KEY), params={"key_hash": "\0"}),
        "key_hash",
    )
    # The documented ways still work: the key as the bearer token, or its hash.
    own = client.get(f"{proxy.url}/key/info", headers=bearer(key))
    assert own.status_code == 200
    by_hash = client.get(
        f"{proxy.url}/key/info",
        headers=bearer(MASTER_KEY),
        params={"key_hash": own.json()["key_hash"]},
    )
    assert by_hash.status_code == 200


def test_hostile_call_fields_are_clear_400s_and_later_calls_are_recorded(proxy, client):
    for fields, param in [
        ({"user": "u" * 3000}, "user"),
        ({"user": "nul\0user"}, "user"),
        ({"user": "tab\tuser"}, "user"),
        ({"size": "1024x1024\0"}, "size"),
        ({"quality": "q" * 5000}, "quality"),
        ({"metadata": '{"team": {"x": NaN}}'}, "metadata.team.x"),
    ]:
        _refused(edit(client, proxy.url, MASTER_KEY, **fields), param)
    longest = "é" * MAX_ID_CHARS  # the longest id allowed, 2 bytes a character
    for _ in range(3):
        assert edit(client, proxy.url, MASTER_KEY, user=longest).status_code == 200
    # PostgreSQL rows arrive through the outbox: within seconds, not at once.
    wait_for(lambda: spend_rows(client, proxy.url, user=longest)["total"] == 3)


def _key_count(client: httpx.Client, base: str) -> int:
    listed = client.get(f"{base}/key/list", headers=bearer(MASTER_KEY))
    assert listed.status_code == 200, listed.text
    count: int = listed.json()["total_count"]
    return count


def test_management_json_is_read_as_strictly_as_a_generation(proxy, client):
    keys_before = _key_count(client, proxy.url)  # the module's other tests made keys
    for path in ("/key/generate", "/customer/new", "/key/delete", "/key/update"):
        # A key given twice is refused, not resolved by "the last one wins".
        error = _refused(
            _raw_json(client, f"{proxy.url}{path}", '{"max_budget": 1, "max_budget": 2}'),
            "max_budget",
        )
        assert error["code"] == "invalid_json", path
        nested = '{"key_alias": ' + "[" * 5000 + "]" * 5000 + "}"
        answer = _raw_json(client, f"{proxy.url}{path}", nested)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "invalid_json"
    assert _key_count(client, proxy.url) == keys_before  # nothing was made from a refused body


def test_a_key_cannot_be_made_already_expired(proxy, client):
    for expires in ("2001-01-01T00:00:00Z", "2001-01-01", "0001-01-01T00:00:00+01:00"):
        body = json.dumps({"expires": expires})
        error = _refused(_raw_json(client, f"{proxy.url}/key/generate", body), "expires")
        assert error["code"] == "invalid_value", expires
    key = generate(client, proxy.url)["key"]
    body = json.dumps({"key": key, "expires": "2001-01-01T00:00:00Z"})
    _refused(_raw_json(client, f"{proxy.url}/key/update", body), "expires")
    assert edit(client, proxy.url, key).status_code == 200  # the refused update changed nothing
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = generate(client, proxy.url, expires=ahead)
    assert edit(client, proxy.url, made["key"]).status_code == 200


MANAGEMENT_REFUSALS = [
    ("POST", "/key/generate", {"models": "gpt-image-1"}, 400, "invalid_type"),
    ("POST", "/key/generate", {"expires": "tomorrow"}, 400, "invalid_value"),
    ("POST", "/key/generate", {"expires": "2099-01-01", "duration": "1d"}, 400, "invalid_value"),
    ("GET", "/key/info", None, 400, "missing_required_parameter"),
    ("POST", "/key/delete", {}, 400, "missing_required_parameter"),
    ("POST", "/key/delete", {"keys": "sk-x"}, 400, "invalid_type"),
    ("POST", "/key/delete", {"keys": ["sk-x", 5]}, 400, "invalid_type"),
    ("POST", "/key/delete", {"key_hashes": [None]}, 400, "invalid_type"),
    ("POST", "/key/update", {}, 400, "missing_required_parameter"),
    ("POST", "/customer/new", {"user_id": "u", "blocked": "yes"}, 400, "invalid_type"),
    ("POST", "/customer/delete", {"user_ids": "u"}, 400, "invalid_type"),
    (
        "POST",
        "/customer/block",
        {"user_ids": [str(i) for i in range(1001)]},
        400,
        "array_above_max_length",
    ),
    ("POST", "/key/generate", {"key_alias": "x" * 70_000}, 413, "request_too_large"),
]


def test_every_management_refusal_has_a_code(proxy, client):
    for method, path, document, status, code in MANAGEMENT_REFUSALS:
        answer = client.request(
            method, f"{proxy.url}{path}", headers=bearer(MASTER_KEY), json=document
        )
        assert answer.status_code == status, (path, document, answer.text)
        assert answer.json()["error"]["code"] == code, (path, document, answer.text)
