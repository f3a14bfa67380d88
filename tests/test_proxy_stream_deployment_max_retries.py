"""A deployment's ``litellm_params.max_retries`` bounds a streamed edit's attempts too: a stream
that the upstream ends before its first event (``stream=True`` through the proxy) is sent to a
deployment with ``max_retries: 0`` once, never ``1 + num_retries`` times, and the group's
fallback still serves the stream.

A real proxy (``tracking serve``) over loopback, in front of an upstream that accepts each
stream and closes it at once, and the fake OpenAI upstream as the fallback.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.testing.app_thread import AppThread

MODEL = "gpt-image-2"


class _EndsAtOnce:
    """Answers each edit with a 200 event stream that ends before its first event."""

    def __init__(self) -> None:
        self.hits = 0
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/edits", self._answer)
        self._thread = AppThread(app, name="stream-ends-at-once", shutdown_timeout=0.1)
        self.url = f"http://127.0.0.1:{self._thread.start()}/v1"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write_eof()
        return answer

    def stop(self) -> None:
        self._thread.stop()


@pytest.fixture
def broken() -> Iterator[_EndsAtOnce]:
    upstream = _EndsAtOnce()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.mark.parametrize(("max_retries", "sent"), [(0, 1), (1, 2)])
def test_a_streamed_edit_goes_to_a_deployment_1_plus_max_retries_times_then_the_fallback(
    tmp_path, fake, broken, max_retries, sent
):
    def deployment(name: str, api_base: str, **params: int) -> dict[str, object]:
        litellm = {"model": MODEL, "api_key": API_KEY, "api_base": api_base, **params}
        return {"model_name": name, "litellm_params": litellm}

    document = {
        "model_list": [
            deployment("primary", broken.url, max_retries=max_retries),
            deployment("backup", fake.url),
        ],
        "router_settings": {"num_retries": 3, "fallbacks": [{"primary": ["backup"]}]},
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        },
    }
    with ProxyProcess(write_config(tmp_path / "config.yaml", document)) as proxy:
        served_before = fake.hits
        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/images/edits",
            data={"model": "primary", "prompt": "a hat", "stream": "true"},
            files={"image": ("photo.png", make_png(16, 16), "image/png")},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=120,
        ) as answer:
            body = answer.read().decode()
        assert answer.status_code == 200, body
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert "image_edit.completed" in body  # the fallback's whole stream
        assert broken.hits == sent  # not 1 + num_retries = 4
        assert fake.hits == served_before + 1
