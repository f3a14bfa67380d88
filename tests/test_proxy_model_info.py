"""LiteLLM's ``GET /model/info`` (and ``/v1/model/info``) and ``GET /model_group/info``.

They answered 404, so LiteLLM's admin UI (its models page) and scripts that read a proxy's
deployments and prices found nothing. They now answer LiteLLM's shapes from the configuration:
each deployment's ``model_name``, ``litellm_params`` without any secret, and ``model_info`` with
its id and the prices its calls are billed at (exact decimal text, LiteLLM's per-token names);
each model group's providers, mode, limits and dearest prices. A virtual key made with ``models``
sees only those models, as on ``/v1/models``. Hostile input is an OpenAI-shaped 400.

The proxy's app is called in-process over ASGI (httpx); its keys live in an SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import asgi_request, in_process_proxy
from tests.proxy_support import MASTER_KEY
from tracking.pricing import billing_entry
from tracking.proxy.app import ProxyApp

SECRET = "sk-upstream-secret-never-shown-4242"
ENV_SECRET = "sk-from-the-environment-never-shown-77"
QUERY_SECRET = "query-secret-never-shown-99"
PATHS = ["/model/info", "/v1/model/info"]


def _config(database: Path) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "gpt-image-1",
                    "api_key": SECRET,
                    "api_base": f"https://api.example.test:8443/v1?key={QUERY_SECRET}",
                    "rpm": 10,
                },
                "model_info": {"id": "table-priced", "description": "packaged prices"},
            },
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "openai/gpt-image-1-copy",
                    "api_key": "os.environ/L19_UPSTREAM_KEY",
                    "api_base": "http://127.0.0.1:9",
                    "rpm": 5,
                    "max_retries": 0,  # honoured since 2026-12-07, so shown as LiteLLM shows it
                    "input_cost_per_token": "0.000009",  # dearer text input than the table's
                },
                "model_info": {"id": "own-prices", "output_cost_per_image": 0.3},
            },
            {
                "model_name": "cheap",
                "litellm_params": {
                    "model": "openai/cheap-model",
                    "api_key": SECRET,
                    "api_base": "http://127.0.0.1:9",
                },
                "model_info": {
                    "id": "cheap-1",
                    # the config reads os.environ/ anywhere: its value is never shown
                    "contact": "os.environ/L19_UPSTREAM_KEY",
                    "notes": {"owners": ["os.environ/L19_UPSTREAM_KEY", "ops"]},
                    "input_cost_per_token": 0.0000001,
                    "output_cost_per_image_by_size": {"1024x1024": "0.01", "1024x1536/high": 0.02},
                },
            },
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{database}"},
    }


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxyApp]:
    monkeypatch.setenv("L19_UPSTREAM_KEY", ENV_SECRET)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    with in_process_proxy(_config(tmp_path / "ledger.db")) as proxy:
        yield proxy


def _get(app: ProxyApp, path: str, key: str | None = MASTER_KEY, **params: Any) -> httpx.Response:
    return asgi_request(app, "GET", path, key, params=params or None)


def _key(app: ProxyApp, **fields: Any) -> str:
    made = asgi_request(app, "POST", "/key/generate", json=fields)
    assert made.status_code == 200, made.text
    key: str = made.json()["key"]
    return key


def _per_token(million: Decimal) -> str:
    return f"{million.scaleb(-6).normalize():f}"


@pytest.mark.parametrize("path", PATHS)
def test_model_info_lists_each_deployment_without_secrets(app, path):
    answer = _get(app, path)
    assert answer.status_code == 200, answer.text
    for secret in (SECRET, ENV_SECRET, QUERY_SECRET, "api_key"):
        assert secret not in answer.text
    data = answer.json()["data"]
    assert [(d["model_name"], d["model_info"]["id"]) for d in data] == [
        ("gpt-image-1", "table-priced"),
        ("gpt-image-1", "own-prices"),
        ("cheap", "cheap-1"),
    ]
    first, second, cheap = data
    assert first["litellm_params"] == {
        "model": "gpt-image-1",
        "api_base": "https://api.example.test:8443",  # no path, no query
        "rpm": 10,
    }
    # the packaged price table's figures, per token, exactly
    entry = billing_entry("gpt-image-1")
    assert entry is not None
    info = first["model_info"]
    assert info["input_cost_per_token"] == _per_token(entry.tokens["input_text"])
    assert info["output_cost_per_image_token"] == _per_token(entry.tokens["output_image"])
    assert info["output_cost_per_image_by_size"]["1024x1024/high"] == (
        f"{entry.per_image['high']['1024x1024'].normalize():f}"
    )
    assert (info["mode"], info["litellm_provider"], info["db_model"]) == (
        "image_generation",
        "openai",
        False,
    )
    assert (info["description"], info["priced"]) == ("packaged prices", True)
    assert info["price_ref"].startswith("packaged:gpt-image-1")
    # a deployment's own prices, as written, never through a float
    assert second["litellm_params"]["max_retries"] == 0
    own = second["model_info"]
    assert (own["input_cost_per_token"], own["output_cost_per_image"]) == ("0.000009", "0.3")
    assert cheap["model_info"]["input_cost_per_token"] == "0.0000001"
    # a model_info value read from the environment: its reference, never its value
    assert cheap["model_info"]["contact"] == "os.environ/L19_UPSTREAM_KEY"
    assert cheap["model_info"]["notes"] == {"owners": ["os.environ/L19_UPSTREAM_KEY", "ops"]}
    assert cheap["model_info"]["output_cost_per_image_by_size"] == {
        "1024x1024": "0.01",
        "1024x1536/high": "0.02",
    }


@pytest.mark.parametrize("path", PATHS)
def test_one_deployment_by_litellm_model_id(app, path):
    answer = _get(app, path, litellm_model_id="own-prices")
    assert answer.status_code == 200, answer.text
    assert [d["model_info"]["id"] for d in answer.json()["data"]] == ["own-prices"]
    unknown = _get(app, path, litellm_model_id="no-such-id")
    assert unknown.status_code == 400, unknown.text  # LiteLLM's status for an unknown id
    error = unknown.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "litellm_model_id")
    assert "not found on litellm proxy" in error["message"]


def test_model_group_info_sums_limits_and_gives_the_dearest_prices(app):
    answer = _get(app, "/model_group/info")
    assert answer.status_code == 200, answer.text
    assert SECRET not in answer.text and ENV_SECRET not in answer.text
    groups = {g["model_group"]: g for g in answer.json()["data"]}
    assert list(groups) == ["gpt-image-1", "cheap"]
    image = groups["gpt-image-1"]
    entry = billing_entry("gpt-image-1")
    assert entry is not None
    assert (image["providers"], image["mode"], image["rpm"], image["tpm"]) == (
        ["openai"],
        "image_generation",
        15,
        None,
    )
    assert (image["max_input_tokens"], image["max_output_tokens"]) == (None, None)
    assert image["input_cost_per_token"] == "0.000009"  # the dearer deployment's
    assert image["output_cost_per_image_token"] == _per_token(entry.tokens["output_image"])
    assert image["output_cost_per_image"] == "0.3"
    assert image["priced"] is True
    one = _get(app, "/model_group/info", model_group="cheap").json()["data"]
    assert [g["model_group"] for g in one] == ["cheap"]
    assert one[0]["input_cost_per_token"] == "0.0000001" and one[0]["rpm"] is None
    assert _get(app, "/model_group/info", model_group="nope").json() == {"data": []}


def test_a_key_with_models_sees_only_those(app):
    key = _key(app, models=["cheap"])
    for path in PATHS:
        data = _get(app, path, key=key).json()["data"]
        assert [d["model_info"]["id"] for d in data] == ["cheap-1"]
        hidden = _get(app, path, key=key, litellm_model_id="table-priced")
        assert hidden.status_code == 400, hidden.text  # as unknown as an id that does not exist
    groups = _get(app, "/model_group/info", key=key).json()["data"]
    assert [g["model_group"] for g in groups] == ["cheap"]
    assert _get(app, "/model_group/info", key=key, model_group="gpt-image-1").json() == {"data": []}
    every = _get(app, "/model/info", key=_key(app)).json()["data"]  # a key without models
    assert len(every) == 3


@pytest.mark.parametrize("path", [*PATHS, "/model_group/info"])
def test_a_caller_without_a_key_is_refused(app, path):
    for key in (None, "sk-not-a-key"):
        refused = _get(app, path, key=key)
        assert refused.status_code == 401, refused.text
        assert "error" in refused.json()


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/model/info", "litellm_model_id=a%0Ab", "litellm_model_id"),
        ("/model/info", "litellm_model_id=" + "x" * 5000, "litellm_model_id"),
        ("/model/info", "litellm_model_id=a&litellm_model_id=b", "litellm_model_id"),
        ("/v1/model/info", "model_group=x", "model_group"),
        ("/model_group/info", "model_group=%00", "model_group"),
        ("/model_group/info", "litellm_model_id=x", "litellm_model_id"),
        ("/model_group/info", "model_group=" + "y" * 5000, "model_group"),
    ],
)
def test_hostile_input_is_an_openai_shaped_400(app, path, query, param):
    answer = _get(app, f"{path}?{query}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


def test_the_routes_are_in_the_openapi_document(app):
    document = json.loads(_get(app, "/openapi.json", key=None).text)
    for path in [*PATHS, "/model_group/info", "/spend/tags", "/global/spend/tags"]:
        assert "get" in document["paths"][path], path
        assert document["paths"][path]["get"]["summary"] != path  # described, not a bare path


def test_one_price_for_any_size_of_the_only_quality_is_output_cost_per_image(tmp_path):
    # xAI's packaged entry is {"standard": {"any": "0.02"}}: it was shown as
    # output_cost_per_image_by_size {"any/standard": "0.02"}, our wildcard in LiteLLM's field.
    config = {
        "model_list": [
            {
                "model_name": "grok",
                "litellm_params": {
                    "model": "xai/grok-imagine-image",
                    "api_key": SECRET,
                    "api_base": "http://127.0.0.1:9/v1",
                },
            }
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        },
    }
    with in_process_proxy(config) as app:
        (entry,) = _get(app, "/model/info").json()["data"]
    assert entry["model_info"]["output_cost_per_image"] == "0.02"
    assert "output_cost_per_image_by_size" not in entry["model_info"]
