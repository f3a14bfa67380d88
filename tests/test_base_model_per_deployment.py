"""Deployments of one upstream model, each priced by its own ``model_info``: every call is billed
by the configuration of the deployment that served it, whatever the config's order.

Two deployments of ``openai/house-edit-1`` billed as ``gpt-image-1`` and ``gpt-image-2``
(``model_info.base_model`` alone) were both billed at the base model of the one written last:
the proxy registered the differing prices under the model's name too, and a registered price
won over the base model each call carried. The SDK's ``Router`` did the same to a
``base_model``-only deployment beside one with prices of its own written after it. A price one
deployment registers now never changes another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tracking.config import parse_config
from tracking.pricing import billing_entry
from tracking.pricing.estimate import max_expected_cost
from tracking.proxy.models import build_dispatcher, router_deployments
from tracking.proxy.prices import priced_models, register_config_prices
from tracking.router import Router
from tracking.testing import FakeOpenAI

MODEL = "openai/house-edit-1"  # no price in the packaged table
#: group (and deployment id) -> its model_info
BASE_ONLY = {
    "one": {"base_model": "gpt-image-1"},
    "two": {"base_model": "gpt-image-2"},
}
MIXED = {
    "one": {"base_model": "gpt-image-1"},
    "flat": {"output_cost_per_image": "0.07"},
}
ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["as-written", "reversed"])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=["house-edit-1"]) as served:
        yield served


def _model_list(fake: FakeOpenAI, infos: dict[str, dict[str, Any]], reverse: bool) -> list[Any]:
    entries = [
        {
            "model_name": group,
            "litellm_params": {"model": MODEL, "api_base": fake.url, "api_key": API_KEY},
            "model_info": {"id": group, **info},
        }
        for group, info in infos.items()
    ]
    return entries[::-1] if reverse else entries


def _billed_as(fake: FakeOpenAI, base_model: str) -> Decimal:
    """What one call to the model costs billed as ``base_model``: its only deployment's
    (nothing registered)."""
    alone = Router(_model_list(fake, {"alone": {"base_model": base_model}}, False))
    response = alone.image_edit(image=make_png(), prompt="a hat", model="alone")
    assert response.cost_usd is not None
    return response.cost_usd


def _expected(fake: FakeOpenAI, infos: dict[str, dict[str, Any]]) -> dict[str, Decimal]:
    """group -> what one call to it costs: its base model's price, or its own per image."""
    return {
        group: _billed_as(fake, info["base_model"])
        if "base_model" in info
        else Decimal(info["output_cost_per_image"])
        for group, info in infos.items()
    }


def test_the_two_base_models_price_a_call_differently(fake):
    """The premise: were both billed alike, the tests below would prove nothing."""
    costs = _expected(fake, BASE_ONLY)
    assert costs["one"] != costs["two"]


@ORDERS
@pytest.mark.parametrize("infos", [BASE_ONLY, MIXED], ids=["base-models", "mixed"])
def test_the_sdk_router_bills_each_deployment_by_its_own_model_info(fake, infos, reverse):
    expected = _expected(fake, infos)
    router = Router(_model_list(fake, infos, reverse))
    for group in (*infos, *infos):
        response = router.image_edit(image=make_png(), prompt="a hat", model=group)
        assert response._hidden_params["deployment_id"] == group
        assert response.cost_usd == expected[group], group
    for deployment in router.deployments:
        base = infos[deployment.id].get("base_model")
        entry = deployment.price_entry()
        assert entry is not None
        if base is not None:
            assert entry.ref == billing_entry(base).ref


@ORDERS
def test_a_router_registering_nothing_bills_a_base_model_deployment_as_its_base(fake, reverse):
    """``register_prices=False``: the model_info-priced deployment's calls are unpriced, as
    documented; the base_model-only one's carry their base model, which prices them."""
    expected = _expected(fake, MIXED)
    router = Router(_model_list(fake, MIXED, reverse), register_prices=False)
    one = router.image_edit(image=make_png(), prompt="a hat", model="one")
    assert one.cost_usd == expected["one"]
    flat = router.image_edit(image=make_png(), prompt="a hat", model="flat")
    assert flat.cost_usd is None
    priced = {d.id: d.priced() for d in router.deployments}
    assert priced == {"one": True, "flat": False}


@ORDERS
@pytest.mark.parametrize("infos", [BASE_ONLY, MIXED], ids=["base-models", "mixed"])
def test_the_proxys_deployments_bill_hold_and_report_each_at_its_own(fake, infos, reverse):
    """In process: the dispatcher's calls, ``/health``'s and the start warning's price entry
    (``Deployment.price_entry``) and a budget's hold all take each deployment's own price."""
    expected = _expected(fake, infos)
    config = parse_config({"model_list": _model_list(fake, infos, reverse)})
    register_config_prices(config)
    for deployment in router_deployments(config):
        base = infos[deployment.id].get("base_model")
        entry = deployment.price_entry()
        assert entry is not None
        assert entry.ref == (billing_entry(base).ref if base else f"custom:{MODEL}@flat")
    dispatcher = build_dispatcher(config)

    async def cost(group: str) -> Decimal | None:
        response = await dispatcher.aimage_edit(model=group, image=make_png(), prompt="a hat")
        return response.cost_usd

    try:
        costs = {group: asyncio.run(cost(group)) for group in infos}
    finally:
        dispatcher.close()
    assert costs == expected
    params = {"n": 1, "prompt": "a hat"}
    for group, info in infos.items():
        held = max_expected_cost(priced_models(config, group), params)
        alone = max_expected_cost([info["base_model"]], params) if "base_model" in info else None
        assert held == (alone if alone is not None else expected[group]), group


def _proxy_rows(folder: Path, model_list: list[Any], groups: Any) -> dict[str, dict[str, Any]]:
    """One call to each group through ``tracking serve`` over loopback; group -> its ledger row."""
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": model_list,
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    rows = {}
    with ProxyProcess(config) as proxy, httpx.Client(timeout=30) as client:
        for group in groups:
            answer = client.post(
                f"{proxy.url}/v1/images/edits",
                files={"image": ("in.png", make_png(), "image/png")},
                data={"model": group, "prompt": "a hat"},
            )
            assert answer.status_code == 200, answer.text
            rows[group] = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    return rows


@ORDERS
def test_the_proxy_bills_each_base_model_deployment_at_its_own_base_model(fake, tmp_path, reverse):
    expected = _expected(fake, BASE_ONLY)
    rows = _proxy_rows(tmp_path, _model_list(fake, BASE_ONLY, reverse), BASE_ONLY)
    for group, row in rows.items():
        assert row["status"] == "success"
        assert Decimal(row["cost_usd"]) == expected[group], group
        assert row["price_ref"] == billing_entry(BASE_ONLY[group]["base_model"]).ref


@ORDERS
def test_the_proxy_bills_a_base_model_deployment_beside_one_with_prices_of_its_own(
    fake, tmp_path, reverse
):
    expected = _expected(fake, MIXED)
    rows = _proxy_rows(tmp_path, _model_list(fake, MIXED, reverse), MIXED)
    assert {group: Decimal(row["cost_usd"]) for group, row in rows.items()} == expected
    assert rows["one"]["price_ref"] == billing_entry("gpt-image-1").ref
    assert rows["flat"]["price_ref"] == f"custom:{MODEL}@flat"
