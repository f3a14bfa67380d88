"""A streamed answer's ``x-request-id`` is masked and bounded as a plain answer's is (a QA pass on
streaming).

The plain call path masks the call's secrets out of the upstream's request id and keeps at most
256 characters of it; the streamed path took the header as it came, so an upstream (or a
reverse proxy in front of it) that echoed the provider key there put the key in the call's
event, its ledger row, ``stream.upstream_request_id`` and, through the proxy, the
``x-upstream-request-id`` header every client of a streamed call received; and a header of
kilobytes went everywhere whole.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

import tracking
from tests.accounts_support import bearer, ledger_env, spend_rows
from tests.conftest import edits_upstream, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tests.recorder import EventRecorder

PROVIDER_KEY = "sk-proj-STREAMECHOprovider7f3a9c1e5b"
MARKER = "STREAMECHO"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
COMPLETED = {
    "type": "image_edit.completed",
    "b64_json": PNG_B64,
    "size": "1024x1024",
    "quality": "low",
    "usage": {"input_tokens": 10, "output_tokens": 200, "total_tokens": 210},
}


async def _echo(request: web.Request) -> web.StreamResponse:
    """Streams one completed event, its ``x-request-id`` the key it was called with, padded."""
    await request.read()
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    headers = {"content-type": "text/event-stream", "x-request-id": f"req-{key}-" + "x" * 4000}
    answer = web.StreamResponse(headers=headers)
    await answer.prepare(request)
    await answer.write(f"event: {COMPLETED['type']}\ndata: {json.dumps(COMPLETED)}\n\n".encode())
    await answer.write_eof()
    return answer


@pytest.fixture
def echoing() -> Iterator[str]:
    with edits_upstream(_echo, "echoing-stream") as api_base:
        yield api_base


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_the_sdk_masks_and_bounds_a_streamed_answers_request_id(
    echoing: str, recorder: EventRecorder, use_async: bool
) -> None:
    params = {
        "model": "gpt-image-2",
        "prompt": "a hat",
        "image": make_png(16, 16),
        "api_base": echoing,
        "api_key": PROVIDER_KEY,
        "stream": True,
    }
    if use_async:

        async def consume() -> str | None:
            async with await tracking.aimage_edit(**params) as stream:
                assert [event.type async for event in stream] == ["image_edit.completed"]
                return stream.upstream_request_id

        seen = asyncio.run(consume())
    else:
        with tracking.image_edit(**params) as stream:
            assert [event.type for event in stream] == ["image_edit.completed"]
            seen = stream.upstream_request_id
    (event,) = recorder.events
    for upstream_id in (seen, event.upstream_request_id):
        assert upstream_id is not None and upstream_id.startswith("req-")
        assert MARKER not in upstream_id and len(upstream_id) <= 256


def test_the_proxy_relays_no_key_in_a_streamed_answers_headers_or_rows(
    echoing: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    params = {"model": "gpt-image-2", "api_key": PROVIDER_KEY, "api_base": echoing}
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [{"model_name": "echo", "litellm_params": {**params, "max_retries": 0}}],
            "litellm_settings": {"success_callback": ["sql"]},
            "general_settings": {"master_key": MASTER_KEY, "database_url": url},
        },
    )
    with ProxyProcess(config, env=ledger_env(url)) as proxy, httpx.Client(timeout=30) as client:
        with client.stream(
            "POST",
            f"{proxy.url}/v1/images/edits",
            headers=bearer(MASTER_KEY),
            data={"model": "echo", "prompt": "a hat", "stream": "true"},
            files={"image": ("a.png", make_png(16, 16), "image/png")},
        ) as answer:
            body = answer.read().decode()
            headers = dict(answer.headers)
        assert answer.status_code == 200 and "image_edit.completed" in body
        assert headers["x-upstream-request-id"].startswith("req-")
        assert MARKER not in json.dumps(headers) and MARKER not in body
        # the row is written before the completed event is relayed
        rows = spend_rows(client, proxy.url)["data"]
    assert len(rows) == 1 and MARKER not in json.dumps(rows)
    assert rows[0]["upstream_request_id"].startswith("req-")
    assert len(rows[0]["upstream_request_id"]) <= 256


@pytest.mark.parametrize("first", [True, False], ids=["first-event", "after-a-partial"])
def test_an_error_event_echoing_the_key_is_masked_in_the_raised_error(
    recorder: EventRecorder, first: bool
) -> None:
    """An ``error`` event's message and code reached the caller's exception as they came (a
    status error's are masked and its code bounded); the event was masked already."""

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        if not first:
            partial = {"type": "image_edit.partial_image", "b64_json": PNG_B64}
            await answer.write(
                f"event: {partial['type']}\ndata: {json.dumps(partial)}\n\n".encode()
            )
        error = {"message": f"bad key {key}", "code": f"c-{key}-" + "z" * 1000}
        await answer.write(f"event: error\ndata: {json.dumps({'error': error})}\n\n".encode())
        await answer.write_eof()
        return answer

    with edits_upstream(edit, "error-event-echo") as api_base:
        params = {"model": "gpt-image-2", "prompt": "a hat", "image": make_png(16, 16)}
        params |= {"api_base": api_base, "api_key": PROVIDER_KEY, "stream": True}
        with pytest.raises(tracking.TrackingError) as failed:
            list(tracking.image_edit(**params, max_retries=0))
    error = failed.value
    kind = tracking.APIResponseError if first else tracking.StreamInterruptedError
    assert isinstance(error, kind) and "bad key" in str(error)
    code = getattr(error, "code", None) or ""
    for text in (str(error), error.message, getattr(error, "upstream_message", None) or "", code):
        assert MARKER not in text
    assert len(code) <= 256
    (event,) = recorder.events
    assert MARKER not in json.dumps(event.to_dict())
