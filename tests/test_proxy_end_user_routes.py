"""LiteLLM's ``/end_user/*`` names of the ``/customer/*`` routes.

LiteLLM serves every customer route under its older name too (``/end_user/new``, ``/info``,
``/update``, ``/list``, ``/block``, ``/unblock``, ``/delete``; ``customer_endpoints.py``), and
scripts written against it use either. Here they were a 404 ``unknown_url``; they are now the
same routes, with the same rules (the master key; an open proxy answers 403).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess, managed_proxy

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[ProxyProcess]:
    with managed_proxy(tmp_path_factory.mktemp("end-user-routes"), upstream.url) as running:
        yield running


def _edit(client: httpx.Client, user: str) -> httpx.Response:
    return client.post(
        "/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": "a red hat", "user": user},
        files={"image": ("photo.png", make_png(), "image/png")},
    )


def test_the_end_user_routes_are_the_customer_routes(proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=60) as client:
        assert _edit(client, "eu-alice").status_code == 200

        made = client.post(
            "/end_user/new",
            json={"user_id": "eu-alice", "max_budget": "2.50", "budget_period": "daily"},
        )
        assert made.status_code == 200, made.text
        assert made.json()["budget"] == "2.5"
        info = client.get("/end_user/info", params={"end_user_id": "eu-alice"})
        assert info.status_code == 200, info.text
        same = client.get("/customer/info", params={"end_user_id": "eu-alice"})
        assert info.json() == same.json()
        assert info.json()["total_spend"] != "0"  # the call before the record counts

        updated = client.post("/end_user/update", json={"user_id": "eu-alice", "max_budget": 3})
        assert updated.status_code == 200 and updated.json()["budget"] == "3"

        blocked = client.post("/end_user/block", json={"user_ids": ["eu-alice"]})
        assert blocked.status_code == 200 and blocked.json()["blocked_users"][0]["blocked"]
        refused = _edit(client, "eu-alice")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "end_user_blocked"
        unblocked = client.post("/end_user/unblock", json={"user_ids": ["eu-alice"]})
        assert unblocked.status_code == 200
        assert _edit(client, "eu-alice").status_code == 200

        listed = client.get("/end_user/list", params={"size": 1000})
        assert listed.status_code == 200
        assert "eu-alice" in [row["user_id"] for row in listed.json()]

        deleted = client.post("/end_user/delete", json={"user_ids": ["eu-alice"]})
        assert deleted.status_code == 200 and deleted.json()["deleted_user_ids"] == ["eu-alice"]
        gone = client.get("/customer/info", params={"end_user_id": "eu-alice"})
        assert gone.status_code == 404

        # the same rules: unknown fields refused, the master key needed
        wrong = client.post("/end_user/new", json={"user_id": "eu-bob", "budget_duration": "1d"})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "unsupported_field"
        key = client.post("/key/generate", json={}).json()["key"]
    denied = httpx.post(
        f"{proxy.url}/end_user/new",
        json={"user_id": "eu-carol"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "master_key_required"


def test_the_openapi_document_lists_them_as_deprecated_names(proxy: ProxyProcess) -> None:
    paths = httpx.get(f"{proxy.url}/openapi.json", timeout=60).json()["paths"]
    for path, method in [
        ("/end_user/new", "post"),
        ("/end_user/update", "post"),
        ("/end_user/info", "get"),
        ("/end_user/list", "get"),
        ("/end_user/delete", "post"),
        ("/end_user/block", "post"),
        ("/end_user/unblock", "post"),
    ]:
        operation = paths[path][method]
        assert operation["deprecated"] is True
        assert "/customer/" in operation["summary"]


def test_an_open_proxy_refuses_them_as_it_refuses_the_customer_routes(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> None:
    folder = tmp_path_factory.mktemp("end-user-routes-open")
    with managed_proxy(folder, upstream.url, master_key=None) as running:
        for path in ("/end_user/new", "/customer/new"):
            answer = httpx.post(f"{running.url}{path}", json={"user_id": "x"}, timeout=60)
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["error"]["code"] == "master_key_required"
