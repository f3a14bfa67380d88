"""A 2xx answer whose ``data`` items hold no image (``null``, a number, ``{"b64_json": 5}``,
an empty string) was handed on as a success: the client got garbage and the event said it was
served. It is an ``APIResponseError`` (an unreadable 2xx: not retried, priced by estimate), in
the SDK and through the proxy (502, OpenAI-shaped)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

import tracking
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, one_deployment_config, write_config
from tests.recorder import record_events
from tracking.errors import APIResponseError
from tracking.testing.app_thread import AppThread

USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
    "output_tokens": 272,
    "total_tokens": 282,
}
ITEMS: dict[str, Any] = {
    "null": None,
    "number": 5,
    "b64_number": {"b64_json": 5},
    "b64_empty": {"b64_json": ""},
    "nothing": {"revised_prompt": "a hat"},
}


@pytest.fixture(scope="module")
def garbage() -> Iterator[str]:
    async def edit(request: web.Request) -> web.Response:
        await request.read()
        item = ITEMS[request.match_info["name"]]
        return web.json_response({"created": 1_700_000_000, "data": [item], "usage": USAGE})

    app = web.Application()
    app.router.add_post("/{name}/v1/images/edits", edit)
    thread = AppThread(app)
    port = thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        thread.stop()


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_an_answer_item_without_an_image_is_an_unreadable_answer(monkeypatch, garbage, name):
    events = record_events(monkeypatch)
    with pytest.raises(APIResponseError, match=r"data\[0\] holds no image"):
        tracking.image_edit(
            image=make_png(),
            prompt="a hat",
            model="gpt-image-1",
            api_base=f"{garbage}/{name}/v1",
            api_key="sk-test-0123456789abcdef",
        )
    tracking.flush()
    assert events.last.status == "failure"
    assert events.last.cost_source == "estimate" and events.last.cost_usd


def test_through_the_proxy_it_is_a_502_in_openai_shape(garbage, tmp_path):
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            f"{garbage}/b64_number/v1",
            api_key="sk-test-0123456789abcdef",
            general_settings={"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        ),
    )
    with ProxyProcess(config) as proxy:
        answer = httpx.post(
            f"{proxy.url}/v1/images/edits",
            files={"image": ("in.png", make_png(), "image/png")},
            data={"model": "gpt-image-1", "prompt": "a hat"},
            timeout=30,
        )
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"]
