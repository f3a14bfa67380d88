"""A stream whose events are named for the other operation is an upstream protocol error.

OpenAI names a streamed edit's events ``image_edit.partial_image`` / ``image_edit.completed``
and a streamed generation's ``image_generation.*``. Either kind was taken from either call, so
an upstream answering a generation with an edit's events (or the reverse) was taken as a good
answer. It now fails as other malformed events do: as the answer's first event an answer that
cannot be read (``invalid_response``), after other events a stream that broke off
(``stream_interrupted``), the events before it delivered.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import edits_upstream, make_png
from tests.recorder import EventRecorder
from tracking.pricing import reset_prices

MODEL = "gpt-image-2"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
OTHER = {"image_edit": "image_generation", "image_generation": "image_edit"}


def _frame(kind: str, **extra: Any) -> bytes:
    payload = {"type": kind, "b64_json": PNG_B64, "size": "1024x1024", **extra}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


def _upstream(prefix: str, first_own: bool) -> Any:
    """An upstream answering edits and generations with events named ``prefix.*`` (after one
    partial image named for the call's own operation when ``first_own``)."""

    async def answer_it(request: web.Request) -> web.StreamResponse:
        await request.read()
        own = "image_generation" if request.path.endswith("/generations") else "image_edit"
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        if first_own:
            await answer.write(_frame(f"{own}.partial_image", partial_image_index=0))
        await answer.write(_frame(f"{prefix}.partial_image", partial_image_index=1))
        await answer.write(_frame(f"{prefix}.completed"))
        await answer.write_eof()
        return answer

    return edits_upstream(answer_it, "other-operation-events", generations=True)


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    tracking.register_prices(MODEL, tokens_per_million={"output_image": "30", "input_text": "5"})
    yield
    reset_prices()


def _read(operation: str, api_base: str, use_async: bool) -> tuple[list[str], BaseException]:
    params: dict[str, Any] = {
        "model": MODEL,
        "prompt": "a hat",
        "api_base": api_base,
        "api_key": "sk-test",
        "stream": True,
        "partial_images": 2,
        "max_retries": 0,
    }
    if operation == "image_edit":
        params["image"] = make_png(16, 16)
    sync_call = getattr(tracking, operation)
    async_call = getattr(tracking, f"a{operation}")
    seen: list[str] = []

    async def consume() -> None:
        async for event in await async_call(**params):
            seen.append(event.type)

    try:
        if use_async:
            asyncio.run(consume())
        else:
            seen.extend(event.type for event in sync_call(**params))
    except tracking.TrackingError as exc:
        return seen, exc
    raise AssertionError(f"the call took the other operation's events: {seen}")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("first_own", [False, True], ids=["first-event", "after-its-own"])
@pytest.mark.parametrize("operation", sorted(OTHER))
def test_an_event_of_the_other_operation_is_an_upstream_failure(
    recorder: EventRecorder, operation: str, first_own: bool, use_async: bool
) -> None:
    with _upstream(OTHER[operation], first_own) as api_base:
        seen, error = _read(operation, api_base, use_async)
    if first_own:  # the events before it delivered, then a stream that broke off
        assert isinstance(error, tracking.StreamInterruptedError), error
        assert seen == [f"{operation}.partial_image"]
    else:
        assert type(error) is tracking.APIResponseError, error
        assert seen == []
    assert f"{OTHER[operation]}.partial_image event answering" in str(error)
    (event,) = recorder.events
    error_type = "stream_interrupted" if first_own else "invalid_response"
    assert (event.status, event.error_type, event.operation) == ("failure", error_type, operation)
    assert event.cost_source == "estimate" and event.cost_usd and event.cost_usd > 0


@pytest.mark.parametrize("operation", sorted(OTHER))
def test_events_of_the_calls_own_operation_are_taken(
    recorder: EventRecorder, operation: str
) -> None:
    with _upstream(operation, first_own=True) as api_base:
        params: dict[str, Any] = {"model": MODEL, "prompt": "a hat", "api_base": api_base}
        params |= {"api_key": "sk-test", "stream": True, "partial_images": 2, "max_retries": 0}
        if operation == "image_edit":
            params["image"] = make_png(16, 16)
        seen = [event.type for event in getattr(tracking, operation)(**params)]
    assert seen == [f"{operation}.partial_image"] * 2 + [f"{operation}.completed"]
    (event,) = recorder.events
    assert (event.status, event.operation) == ("success", operation)
