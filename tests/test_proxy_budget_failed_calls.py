"""A proxied call that ends with an exception that is no typed failure of the SDK still counts on
the budgets what its ledger row records.

Before, such a call (a cancellation: the client gone under an ASGI server that cancels its
handler; a bug of ours after the upstream was called) settled its budget hold at 0: the exception
carried no cost, so a call the upstream may well have billed counted nothing, while its ledger row
said what it was estimated to cost. Now the hold settles at the cost of the call's event; a call
that broke before its event was made keeps its hold (the most it was expected to cost) counted.

The app is driven through httpx's ASGI transport, which runs it in the client's task: cancelling
that task cancels the handler, as such a server does. The upstream is a fake on loopback; the
budget is the whole proxy's, counted in the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import one_deployment_config
from tracking.config import parse_config
from tracking.pricing.estimate import max_expected_cost
from tracking.proxy.app import ProxyApp, create_app
from tracking.proxy.shared_counters import to_units
from tracking.testing import FakeOpenAI, recording

FORM = {"model": "gpt-image-2", "prompt": "a hat", "quality": "low", "size": "1024x1024"}


@pytest.fixture
def slow() -> Iterator[FakeOpenAI]:
    """A fake of this test's own that answers every request after 30 s (it is never waited for)."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=30;always"]) as server:
        yield server


def _app(upstream: str) -> tuple[ProxyApp, str]:
    config = parse_config(
        one_deployment_config(
            upstream,
            model_name="gpt-image-2",
            max_retries=0,
            litellm_settings={"max_budget": 100, "budget_duration": "1d"},
            general_settings={"image_store": {"type": "off"}},
        )
    )
    app = create_app(config)
    started = datetime.now(UTC)
    app.clock = lambda: started
    return app, f"proxy:d{started:%Y-%m-%d}"


def _counter(app: ProxyApp, name: str) -> int | None:
    """A budget counter's value (None: never used), read by reserving nothing on it."""
    return asyncio.run(app.accounts.counters.reserve(name, 0, 10**18, None))


def _assert_estimated_and_counted(event: Any, error_type: str, app: ProxyApp, name: str) -> None:
    """A failed call estimated as an unknown outcome, and its budget counting that estimate
    (what its ledger row records; it counted 0)."""
    assert (event.status, event.cost_source) == ("failure", "estimate")
    assert event.error_type == error_type
    assert event.cost_usd is not None and event.cost_usd > 0
    assert event.price_ref is not None and event.price_ref.startswith("estimate:outcome-unknown")
    assert _counter(app, name) == to_units(event.cost_usd)


async def _post(app: ProxyApp, form: dict[str, str] = FORM) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        return await client.post(
            "/v1/images/edits",
            data=form,
            files={"image": ("a.png", make_png(32, 32), "image/png")},
        )


def test_a_call_cancelled_with_its_request_upstream_counts_its_estimate(slow):
    app, counter = _app(slow.url)

    async def scenario() -> None:
        call = asyncio.create_task(_post(app))
        while slow.hits < 1:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    try:
        with recording() as recorder:
            asyncio.run(scenario())
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    (event,) = recorder.events
    _assert_estimated_and_counted(event, "cancelled", app, counter)


def test_a_bug_of_ours_reading_a_billed_answer_counts_its_estimate(fake, monkeypatch):
    """The upstream answered 2xx (it billed the image) and reading the answer raised an
    exception of ours: the call's event is estimated (it was recorded as not billed, $0) and
    the budget counts that estimate."""

    def broken(*args: Any) -> Any:
        raise TypeError("a bug while reading the answer")

    monkeypatch.setattr("tracking.flow._read_answer", broken)
    app, counter = _app(fake.url)
    try:
        with recording() as recorder:
            answer = asyncio.run(_post(app))
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    assert answer.status_code == 500, answer.text
    (event,) = recorder.events
    _assert_estimated_and_counted(event, "internal_error", app, counter)


def test_a_call_that_broke_before_its_event_keeps_its_hold(fake, monkeypatch):
    """No event says what the call cost (the bug broke the event itself): the upstream was
    called, so its hold, the most it was expected to cost, stays counted rather than 0."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug while making the event")

    monkeypatch.setattr("tracking.flow._make_event", broken)
    app, counter = _app(fake.url)
    try:
        answer = asyncio.run(_post(app))
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    assert answer.status_code == 500, answer.text
    held = max_expected_cost(["gpt-image-2"], {**FORM, "image": b"png"})
    assert held is not None and held > 0
    assert _counter(app, counter) == to_units(held)


def test_a_call_refused_before_it_started_counts_nothing(fake):
    """A guard: a call refused by the SDK before anything was sent (an invalid size) gives its
    hold back."""
    app, counter = _app(fake.url)
    hits = fake.hits
    try:
        answer = asyncio.run(_post(app, {**FORM, "size": "13x7"}))
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    assert answer.status_code == 400, answer.text
    assert fake.hits == hits
    assert _counter(app, counter) in (0, None)


def test_a_streamed_call_whose_relay_is_cancelled_as_it_closes_is_settled(fake, monkeypatch):
    """The relay is cancelled while it closes the stream (a second cancellation: a server
    shutting down): the call's event is made, and its hold is settled at that event's cost.
    Before, the settling came after the close and was skipped: the hold stayed at the call's
    worst case, and stayed in flight."""
    from tracking.streaming import AsyncImageEditStream

    close = AsyncImageEditStream.aclose

    async def cancelled_closing(self: AsyncImageEditStream) -> None:
        await close(self)
        raise asyncio.CancelledError

    monkeypatch.setattr(AsyncImageEditStream, "aclose", cancelled_closing)
    app, counter = _app(fake.url)
    try:
        with recording() as recorder, pytest.raises(asyncio.CancelledError):
            asyncio.run(_post(app, {**FORM, "stream": "true"}))
    finally:
        app.dispatcher.close()  # type: ignore[attr-defined]
    (event,) = recorder.events
    assert event.status == "success" and event.cost_usd is not None
    assert _counter(app, counter) == to_units(event.cost_usd)
