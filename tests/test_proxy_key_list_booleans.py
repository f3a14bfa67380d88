"""``/key/list?return_full_object=`` spelled as LiteLLM's proxy takes a boolean.

LiteLLM reads the parameter as FastAPI does (``1``, ``yes``, ``on``, ``True`` are true); here
anything but ``true`` was false, so ``return_full_object=1`` answered digests where LiteLLM
answers the keys, and ``=maybe`` was false without a word. The LiteLLM spellings now read alike,
and anything else is a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .proxy_support import managed_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with managed_client(tmp_path_factory.mktemp("key-list-booleans")) as http:
        assert http.post("/key/generate", json={"key_alias": "listed"}).status_code == 200
        yield http


def _keys(client: httpx.Client, value: str) -> list[object]:
    answer = client.get("/key/list", params={"return_full_object": value})
    assert answer.status_code == 200, answer.text
    keys: list[object] = answer.json()["keys"]
    assert len(keys) == 1
    return keys


@pytest.mark.parametrize("value", ["true", "True", "1", "yes", "on", "t", "y"])
def test_true_as_litellm_spells_it_answers_the_keys(client: httpx.Client, value: str) -> None:
    (key,) = _keys(client, value)
    assert isinstance(key, dict) and key["key_alias"] == "listed"


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "off", ""])
def test_false_as_litellm_spells_it_answers_digests(client: httpx.Client, value: str) -> None:
    (key,) = _keys(client, value)
    assert isinstance(key, str) and len(key) == 64


@pytest.mark.parametrize("value", ["maybe", "2", "tru", "ja"])
def test_anything_else_is_a_400(client: httpx.Client, value: str) -> None:
    answer = client.get("/key/list", params={"return_full_object": value})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "return_full_object" and error["code"] == "invalid_value"
