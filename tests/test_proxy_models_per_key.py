"""``GET /v1/models`` lists what the calling key may call.

A virtual key made with ``models: ["gpt-image-2"]`` listed every model of the config, and
``GET /v1/models/gpt-image-1`` answered it, although each call to that model is a 403
``model_not_allowed``. LiteLLM's ``/v1/models`` lists a key's own models (``get_key_models`` in
its proxy), so a client that offers its user the models it lists offered ones that always fail.
The key now sees its models alone; the master key and a key without ``models`` see all.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from .proxy_support import MASTER_KEY, NO_UPSTREAM, ProxyProcess, same_name_config

NAMES = ["gpt-image-1", "gpt-image-2"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("models-per-key")
    with ProxyProcess(same_name_config(folder, tuple(NAMES), NO_UPSTREAM)) as running:
        yield running  # no call is made: the routes read the config


def _key(proxy: ProxyProcess, **fields: object) -> str:
    made = httpx.post(
        f"{proxy.url}/key/generate",
        json=fields,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
    )
    assert made.status_code == 200, made.text
    key: str = made.json()["key"]
    return key


def _listed(proxy: ProxyProcess, key: str) -> list[str]:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0) as client:
        return sorted(model.id for model in client.models.list())


def test_a_key_with_models_lists_and_retrieves_those_alone(proxy: ProxyProcess) -> None:
    key = _key(proxy, models=["gpt-image-2"])
    assert _listed(proxy, key) == ["gpt-image-2"]
    bearer = {"Authorization": f"Bearer {key}"}
    own = httpx.get(f"{proxy.url}/v1/models/gpt-image-2", headers=bearer, timeout=60)
    assert own.status_code == 200 and own.json()["id"] == "gpt-image-2"
    other = httpx.get(f"{proxy.url}/v1/models/gpt-image-1", headers=bearer, timeout=60)
    assert other.status_code == 404, other.text
    assert other.json()["error"]["code"] == "model_not_found"
    bare = httpx.get(f"{proxy.url}/models", headers=bearer, timeout=60)  # LiteLLM's other path
    assert [model["id"] for model in bare.json()["data"]] == ["gpt-image-2"]


def test_the_master_key_and_a_key_without_models_list_every_model(proxy: ProxyProcess) -> None:
    assert _listed(proxy, MASTER_KEY) == NAMES
    assert _listed(proxy, _key(proxy)) == NAMES
    assert _listed(proxy, _key(proxy, models=[])) == NAMES  # [] is every model, as in LiteLLM
