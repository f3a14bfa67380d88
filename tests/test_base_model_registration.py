"""``register_prices(model, base_model=...)`` with a base model no price names.

Its calls were priced as the model's own table entry (``gpt-image-2`` registered as
``base_model="gpt-imag-2"`` was billed at gpt-image-2's list price, the negotiated discount
silently lost), while the proxy refuses such a config at start. The SDK now refuses it when it
is registered, naming the base model, and registers nothing of that call; a base model whose
price goes later (another prices file) leaves the calls unpriced, never priced by another name.
Every call goes to the fake OpenAI upstream on loopback.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest

import tracking
from tests.conftest import make_png
from tracking.errors import ConfigurationError
from tracking.pricing import register_prices, use_prices_file
from tracking.testing import EventRecorder

HOUSE = "openai/acme-image-edit-1"  # the fake serves it; the price table does not know it


def _edit(upstream: dict[str, str], model: str) -> tracking.ImageEditEvent:
    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    try:
        tracking.image_edit(
            image=make_png(), prompt="a hat", model=model, quality="low", **upstream
        )
    finally:
        tracking.callbacks.remove(recorder)
    (event,) = recorder.events
    return event


def test_a_base_model_naming_no_price_is_refused_when_registered(upstream):
    listed = _edit(upstream, "gpt-image-2")
    with pytest.raises(ConfigurationError, match=r"'gpt-imag-2' names no known price"):
        register_prices("gpt-image-2", base_model="gpt-imag-2", discount="0.5")
    with pytest.raises(ConfigurationError, match=r"register_prices\('azure/b'\)\.base_model"):
        register_prices({"azure/a": {"base_model": "gpt-image-2"}, "azure/b": {"base_model": "x"}})
    # nothing of either call was registered: gpt-image-2 is billed at its list price, as before
    after = _edit(upstream, "gpt-image-2")
    assert after.cost_usd == listed.cost_usd and isinstance(after.cost_usd, Decimal)
    assert (after.cost_source, after.price_ref) == ("usage", listed.price_ref)
    assert after.price_ref is not None and after.price_ref.startswith("packaged:gpt-image-2")
    assert "azure/a" not in tracking.pricing._custom


def test_a_base_model_registered_in_the_same_call_or_before_prices_the_calls(upstream):
    prices = {"per_image": {"any": {"any": "0.04"}}}
    register_prices({HOUSE: {"base_model": "house-base", "discount": "0.25"}, "house-base": prices})
    event = _edit(upstream, HOUSE)
    assert event.cost_usd == Decimal("0.03")  # 0.04 less 25%
    assert (event.cost_source, event.price_ref) == ("custom", f"custom:{HOUSE}->house-base")
    register_prices("house-base-2", per_image={"any": {"any": "0.08"}})
    register_prices(HOUSE, base_model="house-base-2")
    assert _edit(upstream, HOUSE).cost_usd == Decimal("0.08")


def test_a_base_model_whose_price_goes_later_leaves_the_calls_unpriced(upstream, tmp_path, caplog):
    """The base model is priced by a prices file, then the file is dropped: the calls of
    gpt-image-2 registered as it were billed at gpt-image-2's own list price."""
    figure = {"usd": "0.02", "source": "https://example.com/contract", "retrieved": "2026-12-07"}
    entry = {
        "model": "contract-image",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "per_image": {"any": {"any": {**figure, "confidence": "secondary"}}},
    }
    path = Path(tmp_path / "prices.json")
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}))
    caplog.set_level(logging.WARNING, logger="tracking")
    try:
        use_prices_file(path)
        register_prices("gpt-image-2", base_model="contract-image")
        billed = _edit(upstream, "gpt-image-2")
        assert billed.cost_usd == Decimal("0.02")
        assert billed.price_ref == "custom:gpt-image-2->contract-image"
    finally:
        use_prices_file(None)
    event = _edit(upstream, "gpt-image-2")
    assert event.images_returned == 1
    assert (event.cost_usd, event.cost_source, event.price_ref) == (None, "unpriced", None)
    assert "registered priced as 'contract-image', which names no known price" in caplog.text
