"""``/key/delete`` and ``/customer/delete|block|unblock`` refuse a field they do not take.

``/key/delete {"keys": [a], "key_aliases": ["b"]}`` (LiteLLM's alias form beside the keys)
deleted key ``a`` and left the key aliased ``b`` working, without a word; the end-user routes
dropped unknown fields the same way. Each is now a 400 ``unsupported_field`` naming the field,
and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tracking.testing import FakeOpenAI

from .conftest import API_KEY
from .proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("delete-fields")
    with FakeOpenAI(api_keys=[API_KEY]) as upstream:
        config = write_config(
            folder / "config.yaml",
            one_deployment_config(
                upstream.url,
                model_name="gpt-image-2",
                general_settings={
                    "master_key": MASTER_KEY,
                    "database_url": f"sqlite:///{folder / 'ledger.db'}",
                },
            ),
        )
        with ProxyProcess(config) as running:
            yield running


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/key/delete", {"key_aliases": ["mobile-app"]}, "key_aliases"),
        ("/customer/delete", {"dry_run": True}, "dry_run"),
        ("/customer/block", {"blocked": False}, "blocked"),
        ("/customer/unblock", {"keys": []}, "keys"),
    ],
)
def test_a_field_the_route_does_not_take_is_refused_and_nothing_changes(
    proxy: ProxyProcess, path: str, extra: dict[str, Any], param: str
) -> None:
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as client:
        made = client.post("/key/generate", json={"key_alias": f"kept-{param}"}).json()
        user = f"kept-{param}"
        assert client.post("/customer/new", json={"user_id": user}).status_code == 200
        names = {"keys": [made["key"]]} if path == "/key/delete" else {"user_ids": [user]}
        response = client.post(path, json={**names, **extra})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_field" and error["param"] == param
        assert param in error["message"]
        assert client.get("/key/info", params={"key_hash": made["key_hash"]}).status_code == 200
        info = client.get("/customer/info", params={"end_user_id": user})
        assert info.status_code == 200 and info.json()["blocked"] is False
        # the route's own fields still work
        assert client.post(path, json=names).status_code == 200


def test_the_openapi_bodies_of_these_routes_list_exactly_their_fields() -> None:
    from tracking.proxy.litellm_routes import USER_IDS_FIELDS
    from tracking.proxy.management_routes import KEY_DELETE_FIELDS
    from tracking.proxy.openapi import OPERATIONS

    routes = [("/key/delete", KEY_DELETE_FIELDS)] + [
        (path, USER_IDS_FIELDS)
        for path in ("/customer/delete", "/customer/block", "/customer/unblock")
    ]
    for path, fields in routes:
        schema = OPERATIONS[path]["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields, path
        assert schema["additionalProperties"] is False, path
