"""A provider-reported charge too small to be a bill is not believed (a QA pass's finding).

A charge above ``MAX_REPORTED_USD`` was already a fault, not a bill, but nothing bounded it from
below: Recraft's ``credits: 1e-20`` was booked as $1E-23 and xAI's ``cost_in_usd_ticks: 1`` as
$1E-10, both ``cost_source="usage"``, for images the table prices at $0.04 and $0.02. Below
``MIN_REPORTED_USD`` ($0.0001) the charge is now ignored as one above the maximum is: a success
is priced from the table, a failure estimated.

A charge whose exponent no decimal context can divide (``"1e999999999"``, a later QA pass's
finding) overflowed its conversion to USD: the ``decimal.Overflow`` left the provider's parser
as a fault of ours, so an answer holding good images failed as unreadable (a 502 at the proxy).
It is now as much a fault as one above ``MAX_REPORTED_USD``: the images are kept and the table
prices them; a failure without an image is estimated.
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
    [
        ("recraft", _recraft(1e-20), "0.04"),
        ("recraft", _recraft("0.000000001"), "0.04"),
        ("recraft", _recraft("0.09"), "0.04"),  # $0.00009
        ("xai", _xai(1), "0.02"),
        ("xai", _xai(999_999), "0.02"),  # $0.0000999999
    ],
)
def test_a_charge_below_the_floor_gives_way_to_the_table(
    monkeypatch, upstream, provider, answer, table
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    tracking.image_edit(image=PNG, **upstream.params(provider))
    event = events.last
    assert (event.cost_usd, event.cost_source) == (Decimal(table), "table")


@pytest.mark.parametrize(
    ("provider", "answer", "charged"),
    [
        ("recraft", _recraft(40), "0.04"),
        ("recraft", _recraft("0.1"), "0.0001"),  # the floor itself is believed
        ("xai", _xai(200_000_000), "0.02"),
        ("xai", _xai(1_000_000), "0.0001"),
    ],
)
def test_a_charge_at_or_above_the_floor_is_the_cost(
    monkeypatch, upstream, provider, answer, charged
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    tracking.image_edit(image=PNG, **upstream.params(provider))
    event = events.last
    assert (event.cost_usd, event.cost_source) == (Decimal(charged), "usage")


@pytest.mark.parametrize(
    ("provider", "answer"),
    [("recraft", _recraft(1e-20, image=False)), ("xai", _xai(1, image=False))],
)
def test_a_failure_reporting_a_charge_below_the_floor_is_estimated(
    monkeypatch, upstream, provider, answer
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    with pytest.raises(APIResponseError):
        tracking.image_edit(image=PNG, **upstream.params(provider))
    event = events.last
    assert event.cost_source == "estimate" and event.cost_usd >= Decimal("0.02")


HUGE = "1e999999999"


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
