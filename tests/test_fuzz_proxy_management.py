"""Fuzzing the proxy's key, customer and spend endpoints on PostgreSQL (the stricter database:
NUL bytes, index entry sizes, ``NUMERIC(20, 10)``, 32-bit integers): random JSON values of every
type in every field, and random query strings. Every answer is a 2xx or an OpenAI-shaped 4xx,
never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.accounts_support import accounts_config, bearer, ledger_env
from tests.proxy_support import MASTER_KEY, ProxyProcess

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**9, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e400", "1e10", "-0", "nan", "inf", "0.00000000001", "²", "٣"]),
)
TEXT = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=3000))
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    TEXT,
    st.lists(TEXT, max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
KEY_FIELDS = ["max_budget", "rpm_limit", "duration", "expires", "key_alias", "team", "models"]
CUSTOMER_FIELDS = ["user_id", "max_budget", "budget_period", "blocked"]
QUERY_NAMES = ["page", "page_size", "user", "api_key_hash", "start_date", "end_date",
               "end_user_id", "key_hash", "key"]  # fmt: skip


@pytest.fixture
def proxy(fake, tmp_path, postgres_url) -> Iterator[ProxyProcess]:
    config = accounts_config(tmp_path, fake.url, postgres_url)
    with ProxyProcess(config, env=ledger_env(postgres_url)) as running:
        yield running


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["type"]


def _post(client: httpx.Client, path: str, document: dict[str, Any]) -> httpx.Response:
    body = json.dumps(document, allow_nan=True)  # NaN and Infinity as JSON clients send them
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_random_key_and_customer_documents_never_give_a_5xx(proxy):
    with httpx.Client(base_url=proxy.url, headers=bearer(MASTER_KEY), timeout=30) as client:

        @given(
            st.dictionaries(st.sampled_from(KEY_FIELDS), VALUES, max_size=4),
            st.dictionaries(st.sampled_from(CUSTOMER_FIELDS), VALUES, max_size=4),
        )
        def one(key_document: dict[str, Any], customer: dict[str, Any]) -> None:
            _check(_post(client, "/key/generate", key_document))
            _check(_post(client, "/customer/new", customer))
            _check(_post(client, "/customer/update", customer))

        one()
    assert httpx.get(f"{proxy.url}/health/readiness").status_code == 200


def test_random_query_strings_never_give_a_5xx(proxy):
    with httpx.Client(base_url=proxy.url, headers=bearer(MASTER_KEY), timeout=30) as client:

        @given(st.dictionaries(st.sampled_from(QUERY_NAMES), TEXT, min_size=1, max_size=4))
        def one(query: dict[str, str]) -> None:
            for path in ("/spend/logs", "/spend/keys", "/customer/info", "/key/info"):
                _check(client.get(path, params=query))

        one()
