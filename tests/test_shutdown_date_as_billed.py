"""A retired-model warning or counter names the price entry billing would use.

``tracking.pricing.shutdown_date`` reads the shutdown day from the entry :func:`billing_entry`
finds, not from a looser lookup of its own. Two names where the two used to differ:

- ``tenant-7/gpt-image-1`` on an OpenAI-compatible server: ``tenant-7`` names no provider, so
  billing never prices it as ``gpt-image-1`` (it is recorded unpriced), and neither is it
  counted as a call to the retired ``gpt-image-1``;
- ``gpt-image-1`` with a price registered under ``openai/gpt-image-1``: billing takes that
  registered price (which gives no shutdown date), so no retirement is warned of or counted.

A router's deployment is billed as its ``model_info.base_model`` (or its own prices), which the
name of the model it serves may not be priced as: the counter reads a watched router's
deployment's entry (``Deployment.price_entry``), and starts its series at 0. The counter names
the model the calls are billed as (``gpt-image-1``), not the one that served them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.accounts_support import edit
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.recorder import watch_prometheus
from tracking.pricing import billing_entry, shutdown_date
from tracking.testing import FakeOpenAI

RETIRED = "image_edit_retired_model_requests_total"
SLASHED = "tenant-7/gpt-image-1"


pytestmark = pytest.mark.usefixtures("fresh_prices")


@pytest.fixture
def compatible() -> Iterator[dict[str, str]]:
    """A fake OpenAI-compatible upstream that also serves the slashed name."""
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[SLASHED]) as server:
        yield {"api_base": server.url, "api_key": API_KEY}


def test_a_slashed_compatible_name_is_not_the_retired_model_it_ends_with() -> None:
    day = date(2026, 12, 6)
    assert shutdown_date("gpt-image-1", day) == date(2026, 10, 23)
    assert billing_entry(SLASHED, None, day) is None  # billing never prices it as gpt-image-1
    assert shutdown_date(SLASHED, day) is None


def test_a_bare_name_priced_under_openai_takes_that_entrys_date() -> None:
    tracking.register_prices("openai/gpt-image-1", tokens_per_million={"output_image": "40"})
    day = date(2026, 12, 6)
    entry = billing_entry("gpt-image-1", None, day)
    assert entry is not None and entry.custom and entry.shutdown is None
    assert shutdown_date("gpt-image-1", day) is None


def test_calls_to_a_slashed_compatible_name_are_not_counted_retired(
    compatible: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tracking")
    registry = watch_prometheus(monkeypatch)
    for _ in range(2):
        response = tracking.image_edit(
            image=make_png(), prompt="x", model=SLASHED, quality="low", **compatible
        )
        assert response.images_returned == 1 and response.cost_usd is None  # recorded unpriced
    assert tracking.flush(5)
    assert registry.get_sample_value(RETIRED, {"model": SLASHED}) is None
    assert registry.get_sample_value(RETIRED, {"model": "gpt-image-1"}) is None
    assert not [r for r in caplog.records if "shut down" in r.getMessage()]


def test_a_registered_openai_price_is_not_counted_retired(
    compatible: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tracking")
    tracking.register_prices("openai/gpt-image-1", tokens_per_million={"output_image": "40"})
    registry = watch_prometheus(monkeypatch)
    response = tracking.image_edit(
        image=make_png(), prompt="x", model="gpt-image-1", quality="low", **compatible
    )
    assert response.cost_usd is not None  # billed from the registered price
    assert tracking.flush(5)
    assert registry.get_sample_value(RETIRED, {"model": "gpt-image-1"}) is None
    assert not [r for r in caplog.records if "shut down" in r.getMessage()]


#: Two groups served by one model, billed as two base models at a discount: each deployment's
#: prices are registered under a name of its own (``model@id``), which its calls carry; the
#: model's own name is priced as the later one.
BASED = {"house-retired": "gpt-image-1", "house-live": "gpt-image-2"}
HOUSE = "house-edit-1"


def _deployment(group: str, api_base: str, **info: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": f"openai/{HOUSE}", "api_key": API_KEY, "api_base": api_base},
        "model_info": {"id": group, "base_model": BASED[group], **info},
    }


def _retired_series(metrics: str) -> dict[str, float]:
    """The retired-model series of a scrape, by their ``model`` label."""
    prefix = f'{RETIRED}{{model="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(prefix)
    }


@pytest.mark.parametrize("order", [list(BASED), list(reversed(BASED))], ids=["retired", "live"])
def test_a_proxy_deployment_is_counted_by_the_base_model_it_is_billed_as(
    order: list[str], tmp_path: Path
) -> None:
    """Two deployments of one model, each billed as its ``model_info.base_model`` (10% off):
    the calls of the one billed as the retired ``gpt-image-1`` are counted (from 0 at start,
    ``watch_router``), those of the one billed as the live ``gpt-image-2`` are not, whichever
    comes first in the config. The counter read the date from the entry the served model's name
    is priced at (the later deployment's): one group's calls went uncounted, or the other's
    were counted retired."""
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[HOUSE]) as fake:
        config = tmp_path / "config.yaml"
        document = {
            "model_list": [_deployment(group, fake.url, discount="0.1") for group in order],
            "general_settings": {"master_key": MASTER_KEY},
        }
        config.write_text(json.dumps(document))
        with ProxyProcess(config) as proxy, httpx.Client(timeout=30) as client:

            def scrape() -> dict[str, float]:
                return _retired_series(client.get(f"{proxy.url}/metrics").text)

            assert scrape() == {"gpt-image-1": 0}  # named as billed, not as served
            for model in ("house-retired", "house-live", "house-retired", "house-live"):
                answer = edit(client, proxy.url, MASTER_KEY, model=model)
                assert answer.status_code == 200, answer.text
            assert scrape() == {"gpt-image-1": 2}
            # the warning names the model billed as, and the one the call asked
            billed = f"'gpt-image-1' (which 'openai/{HOUSE}' is billed as) was shut down by"
            assert billed in proxy.log()


def test_an_sdk_routers_deployment_billed_as_a_retired_base_model_is_counted_from_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SDK ``Router`` registers no price for a deployment priced by its ``base_model`` alone:
    its calls carry the base model, which bills them. The counter looked the served model's
    name up, which the price table does not know: such calls to the retired ``gpt-image-1``
    were never counted, nor was the series started by ``watch_router``."""
    registry = watch_prometheus(monkeypatch)
    logger = tracking.success_callback[0]
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[HOUSE]) as fake:
        router = tracking.Router(model_list=[_deployment("house-retired", fake.url)])
        try:
            logger.watch_router(router)
            assert registry.get_sample_value(RETIRED, {"model": "gpt-image-1"}) == 0
            for _ in range(2):
                response = router.image_edit(
                    model="house-retired", image=make_png(), prompt="x", quality="low"
                )
                assert response.cost_usd is not None  # billed as gpt-image-1
        finally:
            router.close()
    assert tracking.flush(5)
    assert registry.get_sample_value(RETIRED, {"model": "gpt-image-1"}) == 2
    assert registry.get_sample_value(RETIRED, {"model": HOUSE}) is None


def test_the_warning_names_the_retired_model_a_call_is_billed_as(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It named the model the call asked for (``openai/house-edit-1``, which was never shut
    down), not ``gpt-image-1``, whose prices bill it and which was; a call asking the retired
    model itself is named once, as before."""
    caplog.set_level(logging.WARNING, logger="tracking")
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[HOUSE]) as fake:
        with tracking.Router(model_list=[_deployment("house-retired", fake.url)]) as router:
            for _ in range(2):
                response = router.image_edit(
                    model="house-retired", image=make_png(), prompt="x", quality="low"
                )
                assert response.cost_usd is not None and response.cost_usd > 0
        tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-1", quality="low",
            api_base=fake.url, api_key=API_KEY,
        )  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if "was shut down" in r.getMessage()]
    assert len(warnings) == 2, warnings
    based, direct = warnings
    assert based.startswith(
        f"tracking: 'gpt-image-1' (which 'openai/{HOUSE}' is billed as) was shut down by its "
        "provider on 2026-10-23"
    )
    assert direct.startswith("tracking: 'gpt-image-1' was shut down by its provider on 2026-10-23")


@pytest.mark.parametrize(
    ("model", "base_model", "counted"),
    [
        (f"openai/{HOUSE}", "gpt-image-1", {"gpt-image-1": 2}),  # billed as the retired one
        ("gpt-image-1", "gpt-image-2", {}),  # served by the retired one, billed as a live one
    ],
    ids=["billed-as-retired", "served-by-retired"],
)
def test_an_unwatched_routers_call_is_counted_retired_as_it_is_billed(
    monkeypatch: pytest.MonkeyPatch, model: str, base_model: str, counted: dict[str, int]
) -> None:
    """A ``Router`` the Prometheus logger does not watch: its calls carry the deployment's
    ``base_model``, which the counter now reads (and names) as billing does. It read the served
    model's entry and name: a call billed as the retired ``gpt-image-1`` went uncounted, one
    served by it but billed as ``gpt-image-2`` was counted under ``gpt-image-1``."""
    registry = watch_prometheus(monkeypatch)
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[HOUSE]) as fake:
        deployment = {
            "model_name": "based",
            "litellm_params": {"model": model, "api_key": API_KEY, "api_base": fake.url},
            "model_info": {"base_model": base_model},
        }
        router = tracking.Router(model_list=[deployment])
        try:
            for _ in range(2):
                response = router.image_edit(model="based", image=make_png(), prompt="x")
                assert response.cost_usd is not None
        finally:
            router.close()
    assert tracking.flush(5)
    for name in (HOUSE, "gpt-image-1", "gpt-image-2"):
        assert registry.get_sample_value(RETIRED, {"model": name}) == counted.get(name), name
