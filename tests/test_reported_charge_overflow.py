"""A provider-reported charge whose exponent no decimal context can divide (a QA pass's finding).

xAI's ``cost_in_usd_ticks`` and Recraft's ``credits`` are read as text too, and
``"1e999999999"`` is a finite number whose conversion to USD overflowed the decimal context: the
``decimal.Overflow`` left the provider's parser as a fault of ours, so an answer holding good
images failed as unreadable (a 502 at the proxy) and was estimated. Such a figure is as much a
fault as one above ``MAX_REPORTED_USD``: a success keeps its images and is priced from the
table, a failure without an image is estimated, flagged.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import APIResponseError

PNG = make_png(64, 64)
IMAGE = base64.b64encode(PNG).decode()
HUGE = "1e999999999"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


def _recraft(credits: Any, *, image: bool = True) -> dict[str, Any]:
    return {"created": 1, "credits": credits, "data": [{"b64_json": IMAGE}] if image else []}


def _xai(ticks: Any, *, image: bool = True) -> dict[str, Any]:
    data = [{"b64_json": IMAGE, "mime_type": "image/png"}] if image else []
    return {"data": data, "usage": {"cost_in_usd_ticks": ticks}}


@pytest.mark.parametrize(
    ("provider", "answer", "table"),
    [("recraft", _recraft(HUGE), "0.04"), ("xai", _xai(HUGE), "0.02")],
)
def test_an_overflowing_charge_keeps_the_images_and_gives_way_to_the_table(
    monkeypatch, upstream, provider, answer, table
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    response = tracking.image_edit(image=PNG, **upstream.params(provider))
    assert base64.b64decode(response.data[0].b64_json or "") == PNG
    event = events.last
    assert (event.status, event.cost_usd, event.cost_source) == ("success", Decimal(table), "table")


@pytest.mark.parametrize(
    ("provider", "answer"),
    [("recraft", _recraft(HUGE, image=False)), ("xai", _xai(HUGE, image=False))],
)
def test_an_overflowing_charge_without_an_image_is_estimated(
    monkeypatch, upstream, provider, answer
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    with pytest.raises(APIResponseError) as raised:
        tracking.image_edit(image=PNG, **upstream.params(provider))
    assert raised.value.__cause__ is None  # no fault of the parser's
    event = events.last
    assert event.cost_source == "estimate" and event.cost_usd is not None
    assert 0 < event.cost_usd < 1
