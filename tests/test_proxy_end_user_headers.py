"""LiteLLM's end-user headers (``x-litellm-customer-id``, ``x-litellm-end-user-id``) name the
call's end user: billed to them, held to their budget, refused when they are blocked.

Before, the proxy read neither: a call naming a blocked end user that way was served, and its
ledger row named no end user. A ``tracking serve`` subprocess (SQLite ledger) in front of a fake
upstream (the session's), whose received forms the tests read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


Headers = dict[str, str] | dict[str, bytes] | list[tuple[str, str]]


def _edit(client: httpx.Client, proxy: ProxyProcess, headers: Headers, **fields: str):
    lines = list(headers.items()) if isinstance(headers, dict) else headers  # (a line twice)
    return client.post(
        f"{proxy.url}/v1/images/edits",
        headers=[*AUTH.items(), *lines],
        data={"model": "gpt-image-2", "prompt": "a hat", "quality": "low", **fields},
        files={"image": ("a.png", PNG, "image/png")},
    )


def _block(client: httpx.Client, proxy: ProxyProcess, user: str) -> None:
    made = client.post(
        f"{proxy.url}/customer/new", headers=AUTH, json={"user_id": user, "blocked": True}
    )
    assert made.status_code == 200, made.text


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
        _block(client, proxy, "hdr-blocked")
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


@pytest.mark.parametrize(
    ("sent", "user"),
    [
        ("josé-8".encode(), "josé-8"),  # UTF-8, as curl -H and most clients send it
        ("josé-1".encode("latin-1"), "josé-1"),  # ISO-8859-1, one byte (Node's fetch)
        ("李-8".encode(), "李-8"),
    ],
)
def test_a_non_ascii_end_user_named_by_a_header_is_the_body_s_end_user(
    proxy: ProxyProcess, upstream: FakeOpenAI, sent: bytes, user: str
) -> None:
    """A header's bytes were read as ISO-8859-1 alone, so ``x-litellm-customer-id: josé`` in
    UTF-8 named the end user ``josÃ©``: billed apart from ``josé`` (the body's ``user``, the
    ``/customer/*`` routes), out of reach of their budget, and a 400 beside ``user=josé``."""
    with httpx.Client(timeout=60) as client:
        made = client.post(
            f"{proxy.url}/customer/new", headers=AUTH, json={"user_id": user, "max_budget": 0}
        )
        assert made.status_code == 200, made.text
        refused = _edit(client, proxy, {"x-litellm-customer-id": sent})
        assert refused.status_code == 429, refused.text  # the budget of the end user named
        assert refused.json()["error"]["code"] == "budget_exceeded"
        updated = client.post(
            f"{proxy.url}/customer/update", headers=AUTH, json={"user_id": user, "max_budget": 5}
        )
        assert updated.status_code == 200, updated.text
        both = _edit(client, proxy, {"x-litellm-end-user-id": sent}, user=user)
        assert both.status_code == 200, both.text  # one end user, named twice: no conflict
        alone = _edit(client, proxy, {"x-litellm-customer-id": sent})
        assert alone.status_code == 200, alone.text
        assert upstream.requests[-1].fields["user"] == user
        rows = spend_rows(client, proxy.url, user=user)["data"]
    billed = {both.headers["x-tracking-request-id"], alone.headers["x-tracking-request-id"]}
    assert billed <= {row["request_id"] for row in rows}


def test_one_end_user_header_sent_twice_naming_two_end_users_is_refused(
    proxy: ProxyProcess, upstream: FakeOpenAI
) -> None:
    """The header's last line won: a front proxy adding ``x-litellm-customer-id: mallory``
    after the client's ``alice`` billed mallory (or the client's line, added after the
    front proxy's, picked whom to bill) without a word. Two names are refused, as two headers
    that differ are; the same name twice is one end user."""
    hits = upstream.hits
    twice = [("x-litellm-customer-id", "hdr-alice"), ("x-litellm-customer-id", "hdr-mallory")]
    same = [("x-litellm-end-user-id", "hdr-same"), ("x-litellm-end-user-id", "hdr-same")]
    with httpx.Client(timeout=60) as client:
        refused = _edit(client, proxy, twice)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "x-litellm-customer-id" and "hdr-mallory" in error["message"]
        assert upstream.hits == hits
        served = _edit(client, proxy, same)
        assert served.status_code == 200, served.text
        assert upstream.requests[-1].fields["user"] == "hdr-same"


def test_a_header_with_a_control_character_is_refused(proxy: ProxyProcess) -> None:
    with httpx.Client(timeout=60) as client:
        response = _edit(client, proxy, {"x-litellm-customer-id": "a\tb"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "x-litellm-customer-id"


def _parsed(general: dict[str, object]) -> Any:
    from tracking.config import parse_config

    document: dict[str, object] = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-2"}}],
        "general_settings": general,
    }
    return parse_config(document)


@pytest.mark.parametrize(
    ("general", "read"),
    [
        ({"user_header_name": "X-OpenWebUI-User-Id"}, ("x-openwebui-user-id",)),
        (  # the mappings' customer headers, in their order, override user_header_name
            {
                "user_header_name": "x-old",
                "user_header_mappings": [
                    {"header_name": "X-OpenWebUI-User-Id", "litellm_user_role": "internal_user"},
                    {"header_name": "X-OpenWebUI-User-Email", "litellm_user_role": "customer"},
                    {"header_name": "X-User-Id", "litellm_user_role": "customer"},
                ],
            },
            ("x-openwebui-user-email", "x-user-id"),
        ),
    ],
)
def test_litellm_s_header_settings_name_the_headers_read(
    general: dict[str, object], read: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="tracking"):
        config = _parsed(general)
    assert config.general_settings.end_user_headers == read
    internal = [r.getMessage() for r in caplog.records if "internal_user" in r.getMessage()]
    assert len(internal) == ("user_header_mappings" in general)


@pytest.mark.parametrize(
    ("general", "said"),
    [
        ({"user_header_name": "x user"}, "general_settings.user_header_name: expected an HTTP"),
        ({"user_header_mappings": "x-user"}, "general_settings.user_header_mappings: expected a"),
        (
            {"user_header_mappings": [{"header_name": "x-u", "litellm_user_role": "admin"}]},
            "[0].litellm_user_role: one of customer, internal_user",
        ),
        (
            {"user_header_mappings": [{"header_name": "x-u"}]},
            "[0]: expected exactly header_name and litellm_user_role",
        ),
    ],
)
def test_malformed_header_settings_fail_the_start(general: dict[str, object], said: str) -> None:
    from tracking.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as refused:
        _parsed(general)
    assert said in str(refused.value)


@pytest.fixture(scope="module")
def mapped(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy whose config names its own end-user headers, as an Open WebUI deployment does."""
    folder: Path = tmp_path_factory.mktemp("mapped-headers")
    url = f"sqlite:///{folder / 'ledger.db'}"
    mappings = [
        {"header_name": "X-OpenWebUI-User-Id", "litellm_user_role": "internal_user"},
        {"header_name": "X-OpenWebUI-User-Email", "litellm_user_role": "customer"},
    ]
    general = {"user_header_mappings": mappings}
    config = accounts_config(folder, fake.url, url, models=("gpt-image-2",), general=general)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def test_a_configured_customer_header_names_the_end_user_billed_and_blocked(
    mapped: ProxyProcess, upstream: FakeOpenAI
) -> None:
    with httpx.Client(timeout=60) as client:
        billed = _edit(
            client,
            mapped,
            {"X-OpenWebUI-User-Email": "ann@example.com", "X-OpenWebUI-User-Id": "u-1"},
        )
        assert billed.status_code == 200, billed.text
        assert upstream.requests[-1].fields["user"] == "ann@example.com"
        rows = spend_rows(client, mapped.url, user="ann@example.com")["data"]
        assert [r["request_id"] for r in rows] == [billed.headers["x-tracking-request-id"]]
        _block(client, mapped, "bob@example.com")
        hits = upstream.hits
        refused = _edit(client, mapped, {"x-openwebui-user-email": "bob@example.com"})
        assert refused.status_code == 403, refused.text
        assert upstream.hits == hits
        # LiteLLM's own header comes first; a configured one naming another end user is a 400
        clash = _edit(
            client,
            mapped,
            {"x-litellm-customer-id": "carol", "x-openwebui-user-email": "ann@example.com"},
        )
        assert clash.status_code == 400, clash.text
        assert clash.json()["error"]["param"] == "x-litellm-customer-id"
