"""An answer's body is read up to a cap (``TRACKING_MAX_RESPONSE_BYTES``, default 512 MiB),
never past it, on the sync (httpx) and async (aiohttp) paths alike: a larger success answer is
an ``APIResponseError``, not retried, and recorded like any unreadable 2xx, with an estimated
cost (it may have been billed)."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, edit_with_fault, edits_upstream
from tests.recorder import record_events
from tracking.http import DEFAULT_MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES_ENV
from tracking.testing.fake_images import solid_png

PNG = solid_png(256, 256, (10, 20, 30))
PARAMS = {"model": "gpt-image-2", "prompt": "x", "quality": "low", "size": "1024x1024"}
CAP = 1_000_000


def _call(fake, use_async: bool, fault: str, **kwargs: Any) -> Any:
    return edit_with_fault(fake, fault, use_async=use_async, **{"image": PNG, **PARAMS, **kwargs})


@pytest.mark.parametrize("use_async", [False, True])
def test_an_answer_over_the_cap_is_not_read_past_it_and_is_recorded_as_maybe_billed(
    fake, monkeypatch, use_async
):
    monkeypatch.setenv(MAX_RESPONSE_BYTES_ENV, str(CAP))
    recorder = record_events(monkeypatch)
    under = _call(fake, use_async, f"big_body={CAP - 1000}")  # under the cap: read whole
    assert len(under.data[0].b64_json) > CAP - 2000

    hits = fake.hits
    tracemalloc.start()
    try:
        with pytest.raises(
            tracking.APIResponseError, match="larger than 1,000,000 bytes"
        ) as caught:
            _call(fake, use_async, "big_body=200000000", max_retries=2)  # 200 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * CAP  # a few chunks past the cap at most, never the 200 MB
    assert caught.value.status_code == 200
    assert fake.hits == hits + 1  # a success answer: not retried (it was likely billed)
    event = recorder.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.attempts == 1 and event.http_status == 200
    assert event.cost_source == "estimate" and event.cost_usd and event.cost_usd > 0
    with pytest.raises(tracking.APIResponseError):  # a 2xx cut in the middle, for comparison
        _call(fake, use_async, "malformed", max_retries=2)
    unreadable = recorder.last
    assert (event.cost_usd, event.cost_source, event.price_ref) == (
        unreadable.cost_usd,
        unreadable.cost_source,
        unreadable.price_ref,
    )


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("value", ["0", "-5", "lots", "1e9"])
def test_a_cap_that_is_not_a_positive_number_of_bytes_is_a_configuration_error(
    fake, monkeypatch, use_async, value
):
    monkeypatch.setenv(MAX_RESPONSE_BYTES_ENV, value)
    with pytest.raises(tracking.ConfigurationError, match=MAX_RESPONSE_BYTES_ENV):
        _call(fake, use_async, "latency=0")


def test_the_default_cap_holds_the_largest_legitimate_answer():
    # ten 3840x2160 RGBA images, incompressible PNG, in base64
    largest = 10 * (3840 * 2160 * 4) * 4 // 3
    assert largest < DEFAULT_MAX_RESPONSE_BYTES <= 2 * largest


@pytest.mark.parametrize("use_async", [False, True])
def test_a_streamed_calls_error_answer_is_read_only_as_far_as_its_message(use_async):
    """An error answer to a streamed call was read whole, however large: an upstream sending
    an endless error body held all of it in memory."""
    from aiohttp import web

    async def endless_error(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(status=400, headers={"content-type": "application/json"})
        await answer.prepare(request)
        await answer.write(b'{"error": {"message": "no", "type": "invalid_request_error"}}')
        chunk = b" " * 65536
        for _ in range(3200):  # 200 MB unless the reader stops
            await answer.write(chunk)
        await answer.write_eof()
        return answer

    params: dict[str, Any] = {"image": PNG, "api_key": API_KEY, "stream": True, **PARAMS}
    params["max_retries"] = 0

    async def open_async() -> None:
        await tracking.aimage_edit(**params)

    def open_stream() -> None:
        if use_async:
            asyncio.run(open_async())
        else:
            tracking.image_edit(**params)

    with edits_upstream(endless_error, "endless-error") as api_base:
        params["api_base"] = api_base
        tracemalloc.start()
        try:
            with pytest.raises(tracking.BadRequestError, match="no"):
                open_stream()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak
