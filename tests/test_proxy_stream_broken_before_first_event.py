"""A stream the upstream accepted (200, ``text/event-stream``) that ends before its first event is
a 502 ``stream_interrupted`` through the proxy, never "the upstream could not be reached".

The SDK raises :class:`~tracking.errors.StreamInterruptedError` (a kind of connection error) for
such a stream, and the proxy answered it as a connection refused: ``upstream_unreachable``, "the
upstream could not be reached", though the upstream had answered and may bill the call (its row
is estimated as a stream that broke off).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.testing.app_thread import AppThread

MODEL = "gpt-image-2"
#: What the upstream streams before closing: nothing, or lines that never end an event.
BODIES = {"nothing": b"", "unended": b'data: {"type": "image_edit.partial_image"\r'}


async def _answer(request: web.Request) -> web.StreamResponse:
    await request.read()
    answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await answer.prepare(request)
    await answer.write(BODIES[request.match_info["body"]])
    await answer.write_eof()
    return answer


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("broken-before-first")
    app = web.Application()
    app.router.add_post("/{body}/v1/images/edits", _answer)
    upstream = AppThread(app, name="ends-before-first-event", shutdown_timeout=0.1)
    base = f"http://127.0.0.1:{upstream.start()}"
    entries = "".join(
        f"  - model_name: {body}\n"
        f"    litellm_params: {{model: {MODEL}, api_key: {API_KEY},"
        f" api_base: '{base}/{body}/v1', max_retries: 0}}\n"
        for body in BODIES
    )
    config = folder / "config.yaml"
    config.write_text(f"model_list:\n{entries}general_settings: {{master_key: {MASTER_KEY}}}\n")
    try:
        with ProxyProcess(config) as process:
            yield process
    finally:
        upstream.stop()


@pytest.mark.parametrize("model", sorted(BODIES))
def test_a_stream_that_ends_before_its_first_event_is_a_502_stream_interrupted(proxy, model):
    answer = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat", "stream": "true"},
        files={"image": ("photo.png", make_png(16, 16), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == "stream_interrupted" and error["type"] == "server_error"
    assert "could not be reached" not in error["message"]
