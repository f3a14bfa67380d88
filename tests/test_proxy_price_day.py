"""A call is priced at the prices in force on the day it started, from its budget hold to its
ledger row: a price change at midnight while it runs does not split it.

Before, the budget hold was worked out at the prices of the moment it was taken, and the call's
event (its ledger row, its settled cost) at those of the moment the call ended: a price change
between the two made the hold and the cost disagree (and a call admitted on one day's prices was
refused, or charged, at the next day's). The call's start (the proxy's one clock reading per
call, its event's ``start_time``) now chooses the prices of both.

The price table is a prices file whose one model changes price at midnight between 2026-03-01
and 2026-03-02: $0.01 an image up to the first, $5 from the second (and so today). The proxy's
clock says 2026-03-01 23:59:59.999; its app is driven through httpx's ASGI transport in front of
the session's fake upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import one_deployment_config
from tracking.call_control import CallControl, controlled
from tracking.config import parse_config
from tracking.pricing import use_prices_file
from tracking.proxy.app import ProxyApp, create_app
from tracking.proxy.shared_counters import to_units
from tracking.testing import FakeOpenAI, recording

MODEL = "house-image"
BEFORE = datetime(2026, 3, 1, 23, 59, 59, 999_000, tzinfo=UTC)
OLD, NEW = Decimal("0.01"), Decimal("5.00")


def _entry(usd: Decimal, start: str | None, end: str | None) -> dict[str, Any]:
    figure = {
        "usd": str(usd),
        "source": "https://example.com/house-prices",
        "retrieved": "2026-02-01",
        "confidence": "secondary",
    }
    return {
        "model": MODEL,
        "effective_from": start,
        "effective_to": end,
        "shutdown": None,
        "per_image": {"low": {"1024x1024": figure}},
    }


@pytest.fixture
def prices(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "prices.json"
    document = {
        "schema": 1,
        "currency": "USD",
        "entries": [_entry(OLD, None, "2026-03-01"), _entry(NEW, "2026-03-02", None)],
    }
    path.write_text(json.dumps(document))
    use_prices_file(path)
    try:
        yield path
    finally:
        use_prices_file(None)


@pytest.fixture(scope="module")
def house() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=(MODEL,)) as server:
        yield server


def _app(upstream: str, prices: Path) -> ProxyApp:
    config = parse_config(
        one_deployment_config(
            upstream,
            model_name=MODEL,
            max_retries=0,
            # the whole proxy's daily budget: $1 fits the old price, not the new one
            litellm_settings={"max_budget": 1, "budget_duration": "1d"},
            general_settings={"prices_file": str(prices), "image_store": {"type": "off"}},
        )
    )
    app = create_app(config)
    app.clock = lambda: BEFORE
    return app


async def _post(app: ProxyApp) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        return await client.post(
            "/v1/images/edits",
            data={"model": MODEL, "prompt": "a hat", "quality": "low", "size": "1024x1024"},
            files={"image": ("a.png", make_png(32, 32), "image/png")},
        )


def test_a_call_started_before_a_price_change_is_held_and_priced_at_that_days_prices(house, prices):
    assert datetime.now(UTC).date() > date(2026, 3, 2)  # today, the new price is in force
    app = _app(house.url, prices)
    try:
        with recording() as recorder:
            answer = asyncio.run(_post(app))
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    # admitted: its worst case at the day's price fits the budget (at today's it did not)
    assert answer.status_code == 200, answer.text
    (event,) = recorder.events
    assert event.start_time == BEFORE
    assert (event.cost_usd, event.cost_source) == (OLD, "table")
    assert answer.headers["x-tracking-response-cost"] == str(OLD)
    # and the budget counts the same figure on the day's counter
    counter = asyncio.run(app.accounts.counters.reserve("proxy:d2026-03-01", 0, 10**18, None))
    assert counter == to_units(OLD)


def test_an_estimate_is_at_the_prices_of_the_day_the_call_started(prices):
    """A call whose answer was lost (the upstream dropped the connection after reading the
    request) is estimated at the prices of its start, as its hold was."""
    with (
        FakeOpenAI(api_keys=[API_KEY], extra_models=(MODEL,), faults=["drop"]) as dropping,
        recording() as recorder,
        controlled(CallControl(start_time=BEFORE)),
        pytest.raises(tracking.APIConnectionError),
    ):
        tracking.image_edit(
            image=make_png(32, 32),
            prompt="a hat",
            model=MODEL,
            quality="low",
            size="1024x1024",
            max_retries=0,
            api_base=dropping.url,
            api_key=API_KEY,
        )
    (event,) = recorder.events
    assert (event.status, event.cost_source) == ("failure", "estimate")
    assert event.cost_usd == OLD


def test_a_stream_broken_mid_way_is_estimated_at_the_prices_of_its_start(prices):
    """A streamed call accepted upstream that broke off after its partial image: its estimate
    is at the prices of the day it started, as its hold was."""
    with (
        FakeOpenAI(api_keys=[API_KEY], extra_models=(MODEL,), faults=["break_after=1"]) as broken,
        recording() as recorder,
        controlled(CallControl(start_time=BEFORE)),
    ):
        stream = tracking.image_edit(
            image=make_png(32, 32),
            prompt="a hat",
            model=MODEL,
            quality="low",
            size="1024x1024",
            stream=True,
            partial_images=1,
            max_retries=0,
            api_base=broken.url,
            api_key=API_KEY,
        )
        with pytest.raises(tracking.StreamInterruptedError):
            list(stream)
    (event,) = recorder.events
    assert (event.status, event.cost_source) == ("failure", "estimate")
    assert event.cost_usd == OLD


def test_an_intent_recovered_after_a_crash_is_estimated_at_the_prices_of_its_start(prices):
    """The row recovery makes of an open intent (its process killed mid-call) is estimated at
    the prices of the day the call started, as the call's own row would have been priced: the
    intent written at 23:59:59 on the old price is recovered (today, on the new one) at $0.01."""
    from tracking.integration import CallStart
    from tracking.integrations.sql._codec import decode_row
    from tracking.integrations.sql._intents import intent_line, priced
    from tracking.request import parse_call

    request, options = parse_call(
        model=MODEL,
        prompt="a hat",
        image=make_png(32, 32),
        api_key="sk-x",
        quality="low",
        size="1024x1024",
    )
    call = CallStart("req-midnight", "aimage_edit", request, options, None, BEFORE)
    row = decode_row(priced(intent_line(call)))
    assert row["cost_source"] == "estimate"
    assert row["cost_usd"] == OLD
