"""LiteLLM's ``/model/info`` and ``/model_group/info`` fields beyond the prices.

``/model/info`` gave no capability field: LiteLLM's admin UI and scripts reading
``supported_endpoints``, ``supported_modalities``, ``supported_output_modalities`` or
``supports_vision`` found nothing. Each deployment now says which routes it serves here (a
generation route only where its provider generates), that it reads a prompt and images and
answers images; a config's own value of one of those names wins. LiteLLM's chat-only
``supports_*`` flags are never guessed.

``/model_group/info`` gave a FLUX.2 group (priced per megapixel) no price at all: it now gives
``per_megapixel`` as ``/model/info`` does, each of its three prices at the dearest of the group's
deployments, exact decimal text.

A real proxy (``tracking serve``) over loopback; no upstream is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy_support import MASTER_KEY, NO_UPSTREAM, ProxyProcess, master_client, write_config

_NOWHERE = {"api_key": "sk-x", "api_base": NO_UPSTREAM}


def _config(folder: Path) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "images",
                "litellm_params": {"model": "gpt-image-1", **_NOWHERE},
                "model_info": {"id": "openai-1"},
            },
            {
                "model_name": "flux",
                "litellm_params": {"model": "black_forest_labs/flux-2-pro", **_NOWHERE},
                "model_info": {"id": "flux-pro"},
            },
            {
                "model_name": "kontext",
                "litellm_params": {
                    "model": "black_forest_labs/flux-kontext-pro",
                    "max_retries": 0,
                    **_NOWHERE,
                },
                "model_info": {"id": "kontext"},
            },
            {
                "model_name": "flux",
                "litellm_params": {"model": "black_forest_labs/flux-2-klein-4b", **_NOWHERE},
                "model_info": {
                    "id": "flux-klein",
                    # dearer than [pro]'s first output and input, cheaper per further megapixel
                    "per_megapixel": {
                        "first_output": "0.0800000000000000001",
                        "output": 0.001,
                        "input": "0.02",
                    },
                },
            },
            {
                "model_name": "said-otherwise",
                "litellm_params": {"model": "gpt-image-1", **_NOWHERE},
                "model_info": {"id": "own-flags", "supports_vision": False},
            },
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
        },
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("model-info-fields")
    with master_client(
        ProxyProcess(write_config(folder / "config.yaml", _config(folder)))
    ) as client:
        yield client


def _deployments(client: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = client.get("/model/info")
    assert answer.status_code == 200, answer.text
    return {d["model_info"]["id"]: d["model_info"] for d in answer.json()["data"]}


def _groups(client: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = client.get("/model_group/info")
    assert answer.status_code == 200, answer.text
    return {g["model_group"]: g for g in answer.json()["data"]}


def test_each_deployment_says_what_it_serves_in_litellm_names(client):
    info = _deployments(client)
    openai, flux, kontext = info["openai-1"], info["flux-pro"], info["kontext"]
    both = ["/v1/images/edits", "/v1/images/generations"]
    assert openai["supported_endpoints"] == flux["supported_endpoints"] == both
    assert kontext["supported_endpoints"] == ["/v1/images/edits"]  # FLUX.1 Kontext: edits only
    assert (openai["mode"], flux["mode"], kontext["mode"]) == (
        "image_generation",
        "image_generation",
        "image_edit",
    )
    for each in info.values():
        assert each["supported_modalities"] == ["text", "image"]
        assert each["supported_output_modalities"] == ["image"]
        # LiteLLM's chat-only flags are not guessed
        assert not {"supports_function_calling", "supports_web_search"} & each.keys()
    assert openai["supports_vision"] is True


def test_a_configs_own_value_wins(client):
    assert _deployments(client)["own-flags"]["supports_vision"] is False
    groups = _groups(client)
    assert groups["said-otherwise"]["supports_vision"] is False
    assert groups["images"]["supports_vision"] is True


def test_a_per_megapixel_group_gives_each_price_at_its_dearest(client):
    flux = _groups(client)["flux"]
    assert flux["per_megapixel"] == {
        "first_output": "0.0800000000000000001",  # klein's own, exactly (no float)
        "output": "0.015",  # [pro]'s table price
        "input": "0.02",
    }
    assert flux["providers"] == ["black_forest_labs"] and flux["priced"] is True
    # as /model/info gives each deployment's
    assert _deployments(client)["flux-pro"]["per_megapixel"] == {
        "first_output": "0.03",
        "output": "0.015",
        "input": "0.015",
    }
    assert "per_megapixel" not in _groups(client)["images"]  # no guessed price
    one = client.get("/model_group/info", params={"model_group": "flux"}).json()["data"]
    assert [g["per_megapixel"]["first_output"] for g in one] == ["0.0800000000000000001"]


def test_a_deployments_own_max_retries_is_in_its_litellm_params(client):
    # LiteLLM shows it there; 0 (never back to that deployment) is a value, not left out
    answer = client.get("/model/info")
    assert answer.status_code == 200, answer.text
    params = {d["model_info"]["id"]: d["litellm_params"] for d in answer.json()["data"]}
    assert params["kontext"]["max_retries"] == 0
    assert "max_retries" not in params["openai-1"]  # none written: the call's retries
    assert "api_key" not in params["kontext"]
