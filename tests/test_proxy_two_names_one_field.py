"""A management field with two names (ours and LiteLLM's) given twice with two values is a 400.

``/key/generate {"team": "a", "team_id": "b"}`` made a key of team ``a`` and dropped ``b``
without a word, while ``/key/update`` kept ``team_id`` and dropped ``team``;
``/customer/new {"user_id": "u-a", "end_user_id": "u-b"}`` made ``u-a`` alone. Each is now a 400
(``invalid_value``, naming the second name) and changes nothing; both names with one value, or
either alone, work as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .proxy_support import managed_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with managed_client(tmp_path_factory.mktemp("two-names")) as http:
        yield http


def _refused(answer: httpx.Response, param: str) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] == param, error


def test_a_key_given_two_teams_is_refused(client: httpx.Client) -> None:
    before = client.get("/key/list").json()["total_count"]
    _refused(client.post("/key/generate", json={"team": "a", "team_id": "b"}), "team_id")
    assert client.get("/key/list").json()["total_count"] == before  # no key was made

    made = client.post("/key/generate", json={"team": "a", "team_id": "a"})
    assert made.status_code == 200 and made.json()["team"] == "a"
    digest = made.json()["key_hash"]
    _refused(
        client.post("/key/update", json={"key_hash": digest, "team": "c", "team_id": "d"}),
        "team_id",
    )
    _refused(
        client.post("/key/regenerate", json={"key_hash": digest, "team": None, "team_id": "d"}),
        "team_id",
    )
    assert client.get("/key/info", params={"key_hash": digest}).json()["info"]["team"] == "a"
    for body in ({"team": "e"}, {"team_id": "e"}, {"team": "e", "team_id": "e"}):
        updated = client.post("/key/update", json={"key_hash": digest, **body})
        assert updated.status_code == 200 and updated.json()["team"] == "e", updated.text


@pytest.mark.parametrize("route", ["/customer/new", "/customer/update"])
def test_an_end_user_given_two_ids_is_refused(client: httpx.Client, route: str) -> None:
    body: dict[str, Any] = {"user_id": "two-a", "end_user_id": "two-b", "blocked": True}
    _refused(client.post(route, json=body), "end_user_id")
    for user in ("two-a", "two-b"):
        assert client.get("/customer/info", params={"end_user_id": user}).status_code == 404


def test_one_id_under_either_name_or_both_alike_works(client: httpx.Client) -> None:
    for body in ({"user_id": "one-a"}, {"end_user_id": "one-b"}):
        assert client.post("/customer/new", json=body).status_code == 200
    both = {"user_id": "one-a", "end_user_id": "one-a", "blocked": True}
    updated = client.post("/customer/update", json=both)
    assert updated.status_code == 200 and updated.json()["blocked"] is True
