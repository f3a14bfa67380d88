"""LiteLLM's ``input_cost_per_image`` in a deployment's ``model_info`` or ``litellm_params``.

It was read and kept but priced nothing: a deployment written with it billed its calls from the
table (or recorded them unpriced), without a word. LiteLLM's cost map gives the name two
meanings (read 2026-12-07): a price per input image of a vision chat model, and the *output*
image's price of some image-generation entries (the importer reads those as such, see
tracking/pricing/litellm_import.py). Either reading would bill a config meaning the other one
wrong, so it is refused at start, naming the key and the names to write instead.
"""

from __future__ import annotations

from typing import Any

import pytest

import tracking
from tests.proxy_support import serve_once, write_config
from tracking.config import parse_config
from tracking.errors import ConfigurationError


def _document(where: str) -> dict[str, Any]:
    deployment: dict[str, Any] = {
        "model_name": "images",
        "litellm_params": {"model": "gpt-image-1", "api_key": "sk-x"},
    }
    deployment.setdefault(where, {})["input_cost_per_image"] = 0.01
    return {"model_list": [deployment]}


@pytest.mark.parametrize("where", ["model_info", "litellm_params"])
def test_the_proxy_config_refuses_it_naming_the_key_and_what_to_write(where):
    with pytest.raises(ConfigurationError) as refused:
        parse_config(_document(where))
    message = str(refused.value)
    assert f"model_list[0].{where}.input_cost_per_image: not priced" in message
    assert "output_cost_per_image" in message and "input_cost_per_image_token" in message


@pytest.mark.parametrize("where", ["model_info", "litellm_params"])
def test_the_sdk_router_refuses_it_too(where):
    with pytest.raises(ConfigurationError, match=rf"{where}\.input_cost_per_image: not priced"):
        tracking.Router(model_list=_document(where)["model_list"])


def test_tracking_serve_refuses_it_before_listening(tmp_path):
    ended = serve_once(write_config(tmp_path / "config.yaml", _document("model_info")), tmp_path)
    assert ended.returncode != 0
    assert "model_info.input_cost_per_image" in ended.stderr + ended.stdout


# LiteLLM's other price names no call here is billed by were dropped the same way: in
# model_info without a word, in litellm_params with an "unknown key, ignored" warning, and the
# calls billed at the price table's price, not the one written (dall-e-2's input_cost_per_pixel
# in LiteLLM's cost map; output_cost_per_image, read from model_info only).
UNREAD = [
    ("model_info", "input_cost_per_pixel", "price per pixel"),
    ("model_info", "output_cost_per_pixel", "price per pixel"),
    ("litellm_params", "input_cost_per_pixel", "price per pixel"),
    ("litellm_params", "output_cost_per_image", "read from model_info only"),
    ("model_info", "cache_creation_input_token_cost", "not a price this proxy bills"),
]


def _priced(where: str, key: str) -> dict[str, Any]:
    document = _document(where)
    prices = document["model_list"][0][where]
    del prices["input_cost_per_image"]
    prices[key] = 0.00000002
    return document


@pytest.mark.parametrize(("where", "key", "why"), UNREAD)
def test_a_price_name_no_call_is_billed_by_fails_the_proxy_config(where, key, why):
    with pytest.raises(ConfigurationError) as refused:
        parse_config(_priced(where, key))
    message = str(refused.value)
    assert f"model_list[0].{where}.{key}: LiteLLM's price name, refused" in message
    assert why in message


@pytest.mark.parametrize(("where", "key", "why"), UNREAD)
def test_a_price_name_no_call_is_billed_by_fails_the_sdk_router(where, key, why):
    with pytest.raises(ConfigurationError, match=rf"{where}\.{key}: LiteLLM's price name") as e:
        tracking.Router(model_list=_priced(where, key)["model_list"])
    assert e.value.param == key and why in str(e.value)


def test_the_price_names_billed_by_still_load():
    info = {"output_cost_per_image": 0.05, "input_cost_per_token": 0.000005}
    params = {"model": "gpt-image-1", "api_key": "sk-x", "output_cost_per_image_token": 0.00004}
    model_list = [{"model_name": "images", "litellm_params": params, "model_info": info}]
    assert parse_config({"model_list": model_list}).model_list[0].model_name == "images"
    assert tracking.Router(model_list=model_list).deployments[0].model_name == "images"


def test_tracking_serve_refuses_a_price_per_pixel_before_listening(tmp_path):
    document = _priced("model_info", "input_cost_per_pixel")
    ended = serve_once(write_config(tmp_path / "config.yaml", document), tmp_path)
    assert ended.returncode != 0
    assert "model_info.input_cost_per_pixel" in ended.stderr + ended.stdout
