"""The router and the price table: the served deployment's cost, and lowest-cost routing from it."""

from __future__ import annotations

from decimal import Decimal

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import Recorder
from tracking.router import Router

API_VERSION = "2025-04-01-preview"


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(tracking, "success_callback", [rec])
    monkeypatch.setattr(tracking, "failure_callback", [rec])
    return rec


def test_an_azure_deployment_is_priced_as_its_base_model(recorder, fake):
    router = Router(
        [
            {
                "model_name": "edits",
                "litellm_params": {
                    "model": "azure/team-edits-eu",
                    "api_base": fake.base_url,
                    "api_key": API_KEY,
                    "api_version": API_VERSION,
                },
                "model_info": {"id": "eu", "base_model": "gpt-image-1"},
            }
        ]
    )
    response = router.image_edit(
        image=make_png(), prompt="hello", model="edits", size="1024x1024", quality="low"
    )
    assert fake.requests[-1].path == "/openai/deployments/team-edits-eu/images/edits"
    event = recorder.events[-1]
    # gpt-image-1 per 1M tokens: $5 text in, $10 image in, $40 image out. The fake bills
    # ceil(5 / 4) = 2 text tokens, 323 image tokens, 272 output tokens (low, 1024x1024).
    expected = (2 * Decimal(5) + 323 * Decimal(10) + 272 * Decimal(40)) / Decimal(1_000_000)
    assert event.cost_usd == expected == Decimal("0.01412")
    assert event.cost_source == "usage"
    assert event.price_ref == "packaged:gpt-image-1#official"
    assert response.cost_usd == expected
    assert (event.model, event.deployment_id, event.provider) == ("edits", "eu", "azure")


def test_without_a_base_model_the_azure_deployment_is_unpriced(recorder, fake):
    router = Router(
        [
            {
                "model_name": "edits",
                "litellm_params": {
                    "model": "azure/team-edits-eu",
                    "api_base": fake.base_url,
                    "api_key": API_KEY,
                    "api_version": API_VERSION,
                },
            }
        ]
    )
    response = router.image_edit(image=make_png(), prompt="hello", model="edits")
    assert response.cost_usd is None
    assert recorder.events[-1].cost_source == "unpriced"


def test_lowest_cost_routing_reads_the_price_table(recorder, fake):
    """Without model_info prices, the packaged table decides: gpt-image-1-mini is cheaper."""
    common = {"api_base": fake.url, "api_key": API_KEY}
    router = Router(
        [
            {
                "model_name": "edits",
                "litellm_params": {"model": "gpt-image-1", **common},
                "model_info": {"id": "full"},
            },
            {
                "model_name": "edits",
                "litellm_params": {"model": "gpt-image-1-mini", **common},
                "model_info": {"id": "mini"},
            },
        ],
        routing_strategy="lowest-cost",
    )
    for quality in ("low", "medium", "high") * 2:  # a random pick would match 1 time in 64
        router.image_edit(
            image=make_png(), prompt="p", model="edits", size="1024x1024", quality=quality
        )
    assert [e.deployment_id for e in recorder.events] == ["mini"] * 6
    assert [r.fields["model"] for r in fake.requests[-6:]] == ["gpt-image-1-mini"] * 6


def _priced_azure(fake, info: dict[str, object], **params: object) -> dict[str, object]:
    return {
        "model_name": "edits",
        "litellm_params": {
            "model": "azure/team-edits-us",
            "api_base": fake.base_url,
            "api_key": API_KEY,
            "api_version": API_VERSION,
            **params,
        },
        "model_info": {"id": "us", **info},
    }


def test_model_info_prices_bill_the_sdk_routers_calls(recorder, fake):
    """The prices a deployment is routed by are the prices its calls are billed at, in the SDK
    as in the proxy: LiteLLM's output_cost_per_image, and its per-token keys in litellm_params."""
    router = Router([_priced_azure(fake, {"output_cost_per_image": "0.07"})])
    response = router.image_edit(image=make_png(), prompt="p", model="edits", n=2)
    assert response.cost_usd == Decimal("0.14")
    assert recorder.events[-1].cost_source != "unpriced"

    per_token = {"input_cost_per_token": "0.000005", "output_cost_per_token": "0.00004"}
    router = Router([_priced_azure(fake, {}, **per_token)])
    response = router.image_edit(
        image=make_png(), prompt="hello", model="edits", size="1024x1024", quality="low"
    )
    # the fake bills 2 text and 323 image tokens in ($5 / 1M each), 272 out ($40 / 1M)
    expected = (325 * Decimal(5) + 272 * Decimal(40)) / Decimal(1_000_000)
    assert response.cost_usd == expected


def test_a_router_told_not_to_leaves_the_price_table_alone(recorder, fake):
    router = Router([_priced_azure(fake, {"output_cost_per_image": "0.07"})], register_prices=False)
    assert router.image_edit(image=make_png(), prompt="p", model="edits").cost_usd is None


def test_a_bad_price_fails_the_router_and_registers_nothing(recorder, fake):
    good = _priced_azure(fake, {"output_cost_per_image": "0.07"})
    bad = {**_priced_azure(fake, {}, input_cost_per_token="cheap"), "model_info": {"id": "b"}}
    with pytest.raises(tracking.ConfigurationError, match=r"model_list\[1\].*input_cost_per_token"):
        Router([good, bad])
    router = Router([_priced_azure(fake, {})])  # the same model, unpriced
    assert router.image_edit(image=make_png(), prompt="p", model="edits").cost_usd is None


@pytest.mark.parametrize("key", ["redis_port", "redis_password"])
def test_from_config_refuses_a_redis_port_or_password_without_a_host(fake, key):
    value = 6380 if key == "redis_port" else "secret"
    config = {"model_list": [_priced_azure(fake, {})], "router_settings": {key: value}}
    with pytest.raises(tracking.ConfigurationError, match=f"router_settings.{key}: has no effect"):
        Router.from_config(config)
