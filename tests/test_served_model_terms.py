"""A deployment's terms follow its calls onto the model that serves them, and a discount applies
to whatever entry prices its model.

A masked edit on a FLUX Kontext deployment runs on FLUX Fill: it is billed at Fill's price less
the deployment's ``discount``; the deployment's own per-call prices are Kontext's, so its masked
calls are billed at Fill's list price (less its discount), flagged an estimate, unless a Fill
price is registered. A ``discount`` registered alone applies to a user's prices file's entry as
to the bundled one. Everything runs against the fake BFL and OpenAI upstreams on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.price_files import write_prices_file
from tests.recorder import record_events
from tracking.config import parse_config
from tracking.pricing import register_prices, use_prices_file
from tracking.proxy.health import unpriced_deployments
from tracking.router import Router
from tracking.testing import FakeOpenAI
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
KONTEXT = "black_forest_labs/flux-kontext-pro"
FILL_PRICE = Decimal("0.05")  # the bundled flux-pro-1.0-fill price


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as server:
        yield server


def _model_list(bfl: FakeBFL) -> list[dict[str, Any]]:
    params = {"model": KONTEXT, "api_key": BFL_KEY, "api_base": bfl.url}
    return [
        {
            "model_name": "disc",
            "litellm_params": params,
            "model_info": {"id": "disc", "discount": "0.2"},
        },
        {
            "model_name": "own",
            "litellm_params": params,
            "model_info": {"id": "own", "output_cost_per_image": "0.03"},
        },
    ]


def _router(bfl: FakeBFL) -> Router:
    return Router(_model_list(bfl))


def _masked(router: Router, group: str, mask: bool = True) -> Any:
    extra = {"mask": make_half_mask()} if mask else {}
    return router.image_edit(model=group, image=make_png(64, 64), prompt="sky", **extra)


def test_a_kontext_deployments_discount_applies_to_its_masked_calls_on_fill(monkeypatch, bfl):
    events = record_events(monkeypatch)
    router = _router(bfl)
    response = _masked(router, "disc")
    assert response.cost_usd == FILL_PRICE * Decimal("0.8")
    event = events.last
    assert (event.cost_usd, event.cost_source) == (Decimal("0.04"), "custom")
    assert event.price_ref == f"custom:{KONTEXT}@disc->flux-pro-1.0-fill"
    assert _masked(router, "disc", mask=False).cost_usd == Decimal("0.032")  # 0.04 less 20%


def test_own_kontext_prices_bill_masked_calls_at_fills_price_flagged(monkeypatch, bfl):
    events = record_events(monkeypatch)
    router = _router(bfl)
    assert _masked(router, "own", mask=False).cost_usd == Decimal("0.03")
    _masked(router, "own")
    event = events.last
    assert (event.cost_usd, event.cost_source) == (FILL_PRICE, "estimate")
    assert event.price_ref == (
        f"estimate:own-prices-not-served-model:custom:{KONTEXT}@own->flux-pro-1.0-fill"
    )
    # a Fill price registered is the user's terms for Fill: taken as it is, not an estimate
    register_prices("flux-pro-1.0-fill", per_image={"any": {"any": "0.045"}})
    _masked(router, "own")
    assert (events.last.cost_usd, events.last.cost_source) == (Decimal("0.045"), "custom")


def test_a_kontext_deployment_whose_fill_calls_are_unpriced_is_not_priced(bfl, tmp_path):
    """Fill registered as a prices file's model that is later dropped: the deployment's own
    calls are priced, its masked ones would be recorded unpriced: it is not ``priced()``."""
    path = _prices_file(tmp_path, "contract-fill", "0.04")
    try:
        use_prices_file(path)
        register_prices("flux-pro-1.0-fill", base_model="contract-fill")
        router = _router(bfl)
        assert all(d.priced() for d in router.deployments)
    finally:
        use_prices_file(None)
    (disc, own) = router.deployments
    assert disc.price_entry() is not None and own.price_entry() is not None
    assert disc.unpriced_routes() == ["flux-pro-1.0-fill"]
    assert not disc.priced() and not own.priced()
    warned = unpriced_deployments(
        parse_config({"model_list": _model_list(bfl)}), router.deployments
    )
    assert len(warned) == 2
    assert warned[0].startswith(
        f"model_list[0] (disc): {KONTEXT}'s calls served by flux-pro-1.0-fill (a masked edit) "
        "have no known price"
    )


def _prices_file(tmp_path: Path, model: str, usd: str) -> Path:
    return write_prices_file(tmp_path, model, {"any": {"any": usd}})


@pytest.fixture
def openai_upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=["house-image-1"]) as served:
        yield served


def test_a_discount_alone_applies_to_a_prices_files_entry(monkeypatch, openai_upstream, tmp_path):
    events = record_events(monkeypatch)
    try:
        use_prices_file(_prices_file(tmp_path, "house-image-1", "0.08"))
        register_prices("house-image-1", discount="0.25")
        tracking.image_edit(
            image=make_png(),
            prompt="a hat",
            model="house-image-1",
            api_base=openai_upstream.url,
            api_key=API_KEY,
        )
    finally:
        use_prices_file(None)
    event = events.last
    assert (event.cost_usd, event.cost_source) == (Decimal("0.06"), "custom")  # 0.08 less 25%
    assert event.price_ref == "custom:house-image-1"
