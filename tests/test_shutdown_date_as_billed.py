"""A retired-model warning or counter names the price entry billing would use.

``tracking.pricing.shutdown_date`` reads the shutdown day from the entry :func:`billing_entry`
finds, not from a looser lookup of its own. Two names where the two used to differ:

- ``tenant-7/gpt-image-1`` on an OpenAI-compatible server: ``tenant-7`` names no provider, so
  billing never prices it as ``gpt-image-1`` (it is recorded unpriced), and neither is it
  counted as a call to the retired ``gpt-image-1``;
- ``gpt-image-1`` with a price registered under ``openai/gpt-image-1``: billing takes that
  registered price (which gives no shutdown date), so no retirement is warned of or counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date

import pytest
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY, make_png
from tracking.integrations.prometheus import PrometheusLogger
from tracking.pricing import billing_entry, reset_prices, shutdown_date
from tracking.testing import FakeOpenAI

RETIRED = "image_edit_retired_model_requests_total"
SLASHED = "tenant-7/gpt-image-1"


@pytest.fixture(autouse=True)
def _fresh_prices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TRACKING_PRICES_FILE", raising=False)
    reset_prices()
    yield
    reset_prices()


@pytest.fixture
def compatible() -> Iterator[dict[str, str]]:
    """A fake OpenAI-compatible upstream that also serves the slashed name."""
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[SLASHED]) as server:
        yield {"api_base": server.url, "api_key": API_KEY}


def _prometheus(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    monkeypatch.setattr(tracking, "failure_callback", [logger])
    return registry


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
    registry = _prometheus(monkeypatch)
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
    registry = _prometheus(monkeypatch)
    response = tracking.image_edit(
        image=make_png(), prompt="x", model="gpt-image-1", quality="low", **compatible
    )
    assert response.cost_usd is not None  # billed from the registered price
    assert tracking.flush(5)
    assert registry.get_sample_value(RETIRED, {"model": "gpt-image-1"}) is None
    assert not [r for r in caplog.records if "shut down" in r.getMessage()]
