"""A `tracking` member the upstream puts in a streamed event never reaches the client as ours.

`tracking` is the proxy's name: it adds the call's figures under it to the completed event
(and to an `error` event). The partial image events were relayed as their bytes came, so an
upstream's own `tracking` member (a made-up cost, another request id) reached the client looking
like the proxy's; the completed event carried the upstream's member beside the proxy's (a
duplicate key, which a parser resolves as it likes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import API_KEY, edits_upstream, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.sse import SSEDecoder

MODEL = "gpt-image-2"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
FORGED = {"request_id": "forged-by-the-upstream", "response_cost": "0", "cost_source": "usage"}
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
    "output_tokens": 300,
    "total_tokens": 310,
}
#: A completed event of this many bytes or more is written again off the proxy's event loop.
LARGE = 5 * 1024 * 1024


def _events(large: bool) -> list[dict[str, Any]]:
    image = PNG_B64 + ("A" * LARGE if large else "")  # only its start is checked as an image
    common = {"b64_json": PNG_B64, "size": "1024x1024", "quality": "low", "tracking": FORGED}
    return [
        {"type": "image_edit.partial_image", "partial_image_index": 0, **common},
        {"type": "image_edit.partial_image", "partial_image_index": 1, **common},
        {"type": "image_edit.completed", **common, "b64_json": image, "usage": USAGE},
    ]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, list[bool]]]:
    """The proxy in front of an upstream that puts its own `tracking` in every event; the test
    says by the list whether the completed event is large."""
    large = [False]

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for event in _events(large[0]):
            await answer.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await answer.write_eof()
        return answer

    folder = tmp_path_factory.mktemp("upstream-tracking")
    with edits_upstream(edit, "tracking-member") as api_base:
        config = write_config(
            folder / "config.yaml",
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": MODEL,
                            "api_key": API_KEY,
                            "api_base": api_base,
                            "max_retries": 0,
                        },
                    }
                ],
                "prices": {
                    MODEL: {"tokens_per_million": {"output_image": "30", "input_text": "5"}}
                },
                "general_settings": {
                    "master_key": MASTER_KEY,
                    "database_url": f"sqlite:///{folder / 'ledger.db'}",
                },
            },
        )
        with ProxyProcess(config) as process:
            yield process, large


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a member named twice: {names}"
    return dict(pairs)


@pytest.mark.parametrize("large", [False, True], ids=["small", "large-completed"])
def test_the_upstreams_tracking_member_is_taken_out_of_every_relayed_event(
    proxy: tuple[ProxyProcess, list[bool]], large: bool
) -> None:
    process, size = proxy
    size[0] = large
    with httpx.stream(
        "POST",
        f"{process.url}/v1/images/edits",
        data={"model": MODEL, "prompt": "p", "stream": "true", "partial_images": "2"},
        files={"image": ("photo.png", make_png(16, 16), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-tracking-request-id"]
        decoder = SSEDecoder()
        frames = [frame for chunk in response.iter_bytes() for frame in decoder.feed(chunk)]
    relayed = [json.loads(frame.data) for frame in frames]
    sent = _events(large)
    assert [event["type"] for event in relayed] == [event["type"] for event in sent]
    *partials, completed = relayed
    for got, upstream in zip(partials, sent, strict=False):
        assert "tracking" not in got
        assert got == {name: value for name, value in upstream.items() if name != "tracking"}
    json.loads(frames[-1].data, object_pairs_hook=_no_duplicates)  # one `tracking`: ours
    ours = completed.pop("tracking")
    assert ours["request_id"] == request_id and ours != FORGED
    assert ours["cost_source"] == "custom" and ours["response_cost"] != "0"
    assert completed == {name: value for name, value in sent[-1].items() if name != "tracking"}
