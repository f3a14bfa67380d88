"""A call the provider serves with another model than the one asked is priced as that model on
every path, a failed or lost attempt's estimate too (a QA pass's finding).

A FLUX Kontext edit with a mask runs on FLUX Fill, and a Stability outpaint with a mask runs as
inpaint: a success was priced as the model that ran, but a billed job that then failed (its
status ``Error``, its result lost) and an answer that could not be read were estimated at the
price of the model asked: a Fill job recorded at Kontext [pro]'s $0.04 (Fill costs $0.05) or
Kontext [max]'s $0.08, an inpaint at outpaint's $0.04.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import make_half_mask, make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import APIResponseError
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
PNG = make_png(64, 64)
FILL_PRICE = Decimal("0.05")  # flux-pro-1.0-fill, one image (prices.json)
INPAINT_PRICE = Decimal("0.05")  # stability/inpaint, 5 credits (prices.json)


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.mark.parametrize("model", ["flux-kontext-pro", "flux-kontext-max"])
@pytest.mark.parametrize("fault", ["code=error", "code=expired"])
def test_a_billed_fill_job_that_fails_is_estimated_at_fills_price(monkeypatch, bfl, model, fault):
    events = record_events(monkeypatch)
    with pytest.raises(APIResponseError):
        tracking.image_edit(
            image=PNG,
            mask=make_half_mask(),
            prompt="a hat",
            model=f"black_forest_labs/{model}",
            api_base=bfl.url,
            api_key=BFL_KEY,
            extra_headers={"x-fake-fault": fault},
        )
    event = events.last
    assert (event.status, event.cost_source) == ("failure", "estimate")
    assert event.cost_usd == FILL_PRICE
    assert event.price_ref is not None and "flux-pro-1.0-fill" in event.price_ref
    assert event.model == f"black_forest_labs/{model}"  # the event still names the model asked


def test_an_unreadable_inpaint_answer_to_an_outpaint_is_estimated_at_inpaints_price(
    monkeypatch, upstream
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(b"<html>bad gateway</html>")
    with pytest.raises(APIResponseError):
        tracking.image_edit(
            image=PNG,
            mask=make_half_mask(),
            **upstream.params("stability", model="stability/outpaint"),
        )
    event = events.last
    assert (event.status, event.cost_source) == ("failure", "estimate")
    assert event.cost_usd == INPAINT_PRICE
    assert event.price_ref is not None and "stability/inpaint" in event.price_ref
