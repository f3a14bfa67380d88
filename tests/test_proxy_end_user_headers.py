"""LiteLLM's end-user headers (``x-litellm-customer-id``, ``x-litellm-end-user-id``) name the
call's end user: billed to them, held to their budget, refused when they are blocked.

Before, the proxy read neither: a call naming a blocked end user that way was served, and its
ledger row named no end user. A ``tracking serve`` subprocess (SQLite ledger) in front of a fake
upstream (the session's), whose received forms the tests read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import accounts_config, ledger_env, spend_rows
from tests.conftest import make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.testing import FakeOpenAI

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
PNG = make_png(32, 32)


@pytest.fixture
def upstream(fake: FakeOpenAI) -> FakeOpenAI:
    return fake  # the session's: its requests and hits are this test's while it runs


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("end-user-headers")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = accounts_config(folder, fake.url, url, models=("gpt-image-2",))
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def _edit(client: httpx.Client, proxy: ProxyProcess, headers: dict[str, str], **fields: str):
    return client.post(
        f"{proxy.url}/v1/images/edits",
        headers={**AUTH, **headers},
        data={"model": "gpt-image-2", "prompt": "a hat", "quality": "low", **fields},
        files={"image": ("a.png", PNG, "image/png")},
    )


@pytest.mark.parametrize("header", ["x-litellm-customer-id", "x-litellm-end-user-id"])
def test_a_header_names_the_end_user_billed(
    proxy: ProxyProcess, upstream: FakeOpenAI, header: str
) -> None:
    user = f"by-{header}"
    with httpx.Client(timeout=60) as client:
        response = _edit(client, proxy, {header: user})
        assert response.status_code == 200, response.text
        assert upstream.requests[-1].fields["user"] == user  # forwarded as a body's user is
        rows = spend_rows(client, proxy.url, user=user)["data"]
        assert [r["request_id"] for r in rows] == [response.headers["x-tracking-request-id"]]
        info = client.get(f"{proxy.url}/customer/info", headers=AUTH, params={"end_user_id": user})
        assert info.status_code == 200 and info.json()["total_spend"] == rows[0]["cost_usd"]


def test_a_blocked_end_user_named_by_a_header_is_refused(
    proxy: ProxyProcess, upstream: FakeOpenAI
) -> None:
    with httpx.Client(timeout=60) as client:
        made = client.post(
            f"{proxy.url}/customer/new",
            headers=AUTH,
            json={"user_id": "hdr-blocked", "blocked": True},
        )
        assert made.status_code == 200, made.text
        hits = upstream.hits
        response = _edit(client, proxy, {"x-litellm-customer-id": "hdr-blocked"})
        generation = client.post(
            f"{proxy.url}/v1/images/generations",
            headers={**AUTH, "x-litellm-end-user-id": "hdr-blocked"},
            json={"model": "gpt-image-2", "prompt": "a hat"},
        )
    for refused in (response, generation):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "end_user_blocked"
    assert upstream.hits == hits


def test_a_budget_holds_for_an_end_user_named_by_a_header(proxy: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        made = client.post(
            f"{proxy.url}/customer/new",
            headers=AUTH,
            json={"user_id": "hdr-broke", "max_budget": 0},
        )
        assert made.status_code == 200, made.text
        response = _edit(client, proxy, {"x-litellm-customer-id": "hdr-broke"})
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize(
    ("headers", "fields"),
    [
        ({"x-litellm-customer-id": "a", "x-litellm-end-user-id": "b"}, {}),
        ({"x-litellm-customer-id": "a"}, {"user": "b"}),
        ({"x-litellm-end-user-id": "a"}, {"safety_identifier": "b"}),
    ],
)
def test_two_names_that_differ_are_refused(
    proxy: ProxyProcess, upstream: FakeOpenAI, headers: dict[str, str], fields: dict[str, str]
) -> None:
    hits = upstream.hits
    with httpx.Client(timeout=60) as client:
        response = _edit(client, proxy, headers, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] in headers
    assert upstream.hits == hits


def test_a_header_naming_the_body_s_end_user_is_no_conflict(proxy: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response = _edit(client, proxy, {"x-litellm-customer-id": "same"}, user="same")
        assert response.status_code == 200, response.text
        rows = spend_rows(client, proxy.url, user="same")["data"]
    assert len(rows) == 1


def test_a_header_with_a_control_character_is_refused(proxy: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response = _edit(client, proxy, {"x-litellm-customer-id": "a\tb"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "x-litellm-customer-id"


@pytest.mark.parametrize("key", ["user_header_name", "user_header_mappings"])
def test_litellm_s_own_end_user_headers_fail_the_start(key: str) -> None:
    """Read nowhere, the end users such a header names would be billed to no one, their budgets
    and blocks not holding: the config is refused rather than the key dropped with a warning."""
    from tracking.config import parse_config
    from tracking.errors import ConfigurationError

    document: dict[str, object] = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}],
        "general_settings": {key: "x-openwebui-user-id"},
    }
    with pytest.raises(ConfigurationError) as refused:
        parse_config(document)
    assert f"general_settings.{key}: end users named by a header" in str(refused.value)
