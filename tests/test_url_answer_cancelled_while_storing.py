"""A URL answer cancelled while its images are being stored says in its row that nothing went out.

The proxy stores a URL answer's images before the call's event is made, so the row says how the
answer was served (``response_format: url``, or ``b64_json`` and why). A call cancelled during
that storing (the proxy shutting down) answers nothing, yet its row kept the
``response_format: url`` the proxy wrote when the call began: an answer no client ever had.

The proxy's app is driven in this process through ASGI, its call task cancelled while the image
store (an S3 endpoint on loopback that holds the upload until the test lets it go) is writing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import API_KEY, S3_ENV, make_png
from tests.proxy_support import MASTER_KEY, one_deployment_config
from tracking.config import parse_config
from tracking.proxy.app import create_app
from tracking.testing import FakeOpenAI, recording
from tracking.testing.app_thread import AppThread


class _HeldUploads:
    """An S3 endpoint that holds each upload until :attr:`release` is set."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def put(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.set()
        await asyncio.to_thread(self.release.wait, 30)
        return web.Response(status=200, headers={"ETag": '"0"'})


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, _HeldUploads]]:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    uploads = _HeldUploads()
    app = web.Application()
    app.router.add_put("/{tail:.*}", uploads.put)
    server = AppThread(app, name="held-uploads", shutdown_timeout=0.1)
    url = f"http://127.0.0.1:{server.start()}"
    try:
        yield url, uploads
    finally:
        uploads.release.set()
        server.stop()


def _scope_and_body() -> tuple[dict[str, Any], bytes]:
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": "a hat", "response_format": "url"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    body = request.read()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/images/edits",
        "raw_path": b"/v1/images/edits",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4000),
    }
    return scope, body


def receive_then_stay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` that gives the request's body, then waits: a client that stays
    (only the call's task is cancelled, as a server shutting down cancels its requests)."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def cancel_when(
    app: Any,
    scope: dict[str, Any],
    body: bytes,
    reached: threading.Event,
    sent: list[dict[str, Any]],
) -> None:
    """Run the request through ``app`` and cancel its task once ``reached`` is set, as a server
    shutting down cancels its requests; what the app sent goes to ``sent``."""

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(app(scope, receive_then_stay(body), send))
    while not reached.is_set():
        assert not task.done(), sent
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_call_cancelled_while_its_images_are_stored_records_that_nothing_was_answered(
    held: tuple[str, _HeldUploads], tmp_path: Path
) -> None:
    endpoint, uploads = held
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        config = one_deployment_config(
            fake.url,
            model_name="gpt-image-2",
            general_settings={
                "master_key": MASTER_KEY,
                "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
                "image_store": {
                    "type": "s3",
                    "bucket": "images",
                    "endpoint_url": endpoint,
                    "signing_secret": "a-signing-secret-of-32-characters!",
                },
            },
        )
        app = create_app(parse_config(config))
        scope, body = _scope_and_body()
        sent: list[dict[str, Any]] = []

        async def call() -> None:
            # cancelled while the images are being stored
            await cancel_when(app, scope, body, uploads.arrived, sent)
            uploads.release.set()  # the store's thread ends its write (the loop waits for it)

        try:
            with recording() as recorder:
                asyncio.run(call())
        finally:
            uploads.release.set()
            app.accounts.store.close()
            app.dispatcher.close()  # type: ignore[attr-defined]
    assert sent == []  # nothing was answered
    (event,) = recorder.events
    assert event.status == "success" and event.cost_usd  # billed: the upstream answered
    assert event.metadata["response_format"] == "none"
    assert event.metadata["url_fallback"] == "cancelled"
