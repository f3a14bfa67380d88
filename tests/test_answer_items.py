"""A 2xx answer whose ``data`` items hold no image (``null``, a number, ``{"b64_json": 5}``,
an empty string), or whose ``b64_json`` is not base64 of an image (text, an HTML error page,
not base64 at all), was handed on as a success: the client got garbage and the event said it was
served. It is an ``APIResponseError`` (an unreadable 2xx: not retried, priced from the
``usage`` the answer reports, as Gemini's inline data that is not an image, else by estimate),
in the SDK and through the proxy (502, OpenAI-shaped). A streamed image event whose ``b64_json``
is not an image ends the stream the same way (priced from the completed event's usage)."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image

import tracking
from tests.conftest import edit_either, make_png
from tests.proxy_support import ProxyProcess, ledger_row, one_deployment_config, write_config
from tests.recorder import record_events
from tracking.errors import APIResponseError
from tracking.testing.app_thread import AppThread

USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
    "output_tokens": 272,
    "total_tokens": 282,
}
#: What USAGE costs, from the price table's entries (``tracking/pricing/prices.json``): 10 text
#: tokens at $5 per 1M plus 272 image tokens at $40 (gpt-image-1) or $30 (gpt-image-2) per 1M.
USAGE_COST = {"gpt-image-1": Decimal("0.01093"), "gpt-image-2": Decimal("0.00821")}
ITEMS: dict[str, Any] = {
    "null": None,
    "number": 5,
    "b64_number": {"b64_json": 5},
    "b64_empty": {"b64_json": ""},
    "nothing": {"revised_prompt": "a hat"},
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _picture(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, format=fmt)
    return out.getvalue()


IMAGE = {"b64_json": _b64(make_png(8, 8))}
#: ``data`` lists of real images, in every format the base64 check knows.
IMAGES: dict[str, list[Any]] = {
    fmt.lower(): [{"b64_json": _b64(_picture(fmt))}] for fmt in ("PNG", "JPEG", "WEBP", "GIF")
}
#: ``data`` lists whose ``b64_json`` is a string, but not base64 of an image.
NOT_IMAGES: dict[str, list[Any]] = {
    "b64_text": [{"b64_json": _b64(b"I could not make that edit, sorry about that.")}],
    "b64_html": [{"b64_json": _b64(b"<html><body><h1>502 Bad Gateway</h1></body></html>")}],
    "not_base64": [{"b64_json": "this is not base64 at all, only words!!"}],
    "short": [{"b64_json": "iVBO"}],  # a PNG's first characters, then nothing
    "second_of_two": [IMAGE, {"b64_json": _b64(b'{"error": "no image"}' * 4)}],
}
#: Streamed answers (as SSE events) whose image event carries base64 that is not an image.
STREAMS: dict[str, list[dict[str, Any]]] = {
    "completed": [
        {
            "type": "image_edit.completed",
            "b64_json": _b64(b"<html>upstream error</html>"),
            "usage": USAGE,
        }
    ],
    "after_a_partial": [
        {"type": "image_edit.partial_image", "partial_image_index": 0, **IMAGE},
        {"type": "image_edit.completed", "b64_json": "not base64 at all!", "usage": USAGE},
    ],
    "without_usage": [
        {"type": "image_edit.completed", "b64_json": _b64(b"<html>upstream error</html>")}
    ],
}


@pytest.fixture(scope="module")
def hits() -> Counter[str]:
    """Requests each route of the ``garbage`` upstream received."""
    return Counter()


@pytest.fixture(scope="module")
def garbage(hits: Counter[str]) -> Iterator[str]:
    async def edit(request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["name"]
        hits[name] += 1
        data = NOT_IMAGES.get(name) or IMAGES.get(name) or [ITEMS[name]]
        answer: dict[str, Any] = {"created": 1_700_000_000, "data": data, "usage": USAGE}
        if request.match_info.get("bare"):  # an answer that reports no usage
            del answer["usage"]
        return web.json_response(answer)

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        name = request.match_info["name"]
        hits[f"stream/{name}"] += 1
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for event in STREAMS[name]:
            await answer.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_post("/{name}/v1/images/edits", edit)
    app.router.add_post("/{bare:bare}/{name}/v1/images/edits", edit)
    app.router.add_post("/stream/{name}/v1/images/edits", stream)
    thread = AppThread(app)
    port = thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        thread.stop()


@pytest.mark.parametrize("reported", [True, False], ids=["usage", "no-usage"])
@pytest.mark.parametrize("name", sorted(ITEMS))
def test_an_answer_item_without_an_image_is_an_unreadable_answer(
    monkeypatch, garbage, name, reported
):
    events = record_events(monkeypatch)
    route = name if reported else f"bare/{name}"
    with pytest.raises(APIResponseError, match=r"data\[0\] holds no image") as raised:
        tracking.image_edit(
            image=make_png(),
            prompt="a hat",
            model="gpt-image-1",
            api_base=f"{garbage}/{route}/v1",
            api_key="sk-test-0123456789abcdef",
        )
    tracking.flush()
    event = events.last
    assert event.status == "failure" and event.images_returned == 0
    if reported:  # the tokens the answer says it billed are the call's cost, as Gemini's are
        assert event.cost_source == "usage" and event.cost_usd == USAGE_COST["gpt-image-1"]
        assert event.usage is not None and event.usage.output_tokens == 272
        assert raised.value.cost_usd == USAGE_COST["gpt-image-1"]
    else:  # nothing said: billed all the same, so estimated, never 0
        assert event.cost_source == "estimate" and event.cost_usd
        assert event.usage is None


#: The proxy's model names, each a deployment of gpt-image-1 on one route of ``garbage``.
PROXIED = {
    "b64-number": "b64_number",
    "b64-html": "b64_html",
    "second-of-two": "second_of_two",
    "stream-completed": "stream/completed",
}


@pytest.fixture(scope="module")
def proxy(garbage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("answer-items")
    document = one_deployment_config(
        api_key="sk-test-0123456789abcdef",
        general_settings={"database_url": f"sqlite:///{folder / 'ledger.db'}"},
    )
    document["model_list"] = [
        {
            "model_name": name,
            "litellm_params": {
                "model": "gpt-image-1",
                "api_key": "sk-test-0123456789abcdef",
                "api_base": f"{garbage}/{route}/v1",
            },
        }
        for name, route in PROXIED.items()
    ]
    with ProxyProcess(write_config(folder / "config.yaml", document)) as process:
        yield process


@pytest.mark.parametrize("model", sorted(PROXIED))
def test_through_the_proxy_it_is_a_502_in_openai_shape(proxy, model):
    fields = {"model": model, "prompt": "a hat"}
    if model.startswith("stream-"):
        fields.update(stream="true", partial_images="1")
    answer = httpx.post(
        f"{proxy.url}/v1/images/edits",
        files={"image": ("in.png", make_png(), "image/png")},
        data=fields,
        timeout=30,
    )
    assert answer.status_code == 502, answer.text  # never a 500, never the image
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["message"] and error["type"] == "server_error"
    assert error["code"] == "upstream_invalid_response"
    assert answer.headers["x-should-retry"] == "false"  # billed: a retry would pay again
    # The answer leaves once its row is on disk (the proxy's durable ledger).
    row = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    assert row["status"] == "failure" and row["error_type"] == "invalid_response"
    # the usage beside the unusable image (streamed or not): what the upstream billed
    assert row["cost_source"] == "usage"
    assert Decimal(row["cost_usd"]) == USAGE_COST["gpt-image-1"]
    assert row["output_tokens"] == 272


def _edit(api_base: str, *, use_async: bool = False, **extra: Any) -> Any:
    params: dict[str, Any] = {
        "image": make_png(),
        "prompt": "a hat",
        "model": "gpt-image-1",
        "api_base": api_base,
        "api_key": "sk-test-0123456789abcdef",
        "max_retries": 2,
        **extra,
    }
    return edit_either(use_async, **params)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_a_b64_json_that_is_not_base64_of_an_image_is_refused_billed_and_not_retried(
    monkeypatch, garbage, hits, name, use_async
):
    events = record_events(monkeypatch)
    before = hits[name]
    index = len(NOT_IMAGES[name]) - 1  # the broken item is the last one
    with pytest.raises(
        APIResponseError, match=rf"data\[{index}\]\.b64_json is not base64 of an image"
    ):
        _edit(f"{garbage}/{name}/v1", use_async=use_async)
    assert hits[name] == before + 1  # a success answer, most likely billed: never sent again
    tracking.flush()
    event = events.last
    # Recorded as any unreadable 2xx (and as Gemini's inline data that is not an image): a
    # failure with the 200 it came with, no image, priced from the usage it reported.
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.http_status == 200 and event.images_returned == 0
    assert event.cost_source == "usage" and event.cost_usd == USAGE_COST["gpt-image-1"]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("reported", [True, False], ids=["usage", "no-usage"])
def test_a_live_models_unusable_answer_costs_its_usage_else_an_estimate(
    monkeypatch, garbage, hits, reported, use_async
):
    """gpt-image-2 (live): the same answer with its usage costs that usage; without one, the
    estimate of the call (never 0); either way it is sent once."""
    events = record_events(monkeypatch)
    route = "b64_html" if reported else "bare/b64_html"
    before = hits["b64_html"]
    with pytest.raises(APIResponseError, match="is not base64 of an image") as raised:
        _edit(f"{garbage}/{route}/v1", use_async=use_async, model="gpt-image-2", quality="high")
    assert hits["b64_html"] == before + 1
    tracking.flush()
    event = events.last
    assert event.status == "failure" and event.resolved_model == "gpt-image-2"
    if reported:
        assert event.cost_source == "usage" and event.cost_usd == USAGE_COST["gpt-image-2"]
        assert event.price_ref is not None and "gpt-image-2" in event.price_ref
    else:
        assert event.cost_source == "estimate"
        assert event.cost_usd is not None and event.cost_usd > USAGE_COST["gpt-image-2"]
    assert raised.value.cost_usd == event.cost_usd


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_a_b64_json_of_each_image_format_is_handed_on_as_it_came(garbage, name):
    response = _edit(f"{garbage}/{name}/v1")
    assert [item.b64_json for item in response.data] == [IMAGES[name][0]["b64_json"]]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_streamed_image_that_is_not_base64_of_an_image_ends_the_stream_billed(
    monkeypatch, garbage, hits, name
):
    events = record_events(monkeypatch)
    before = hits[f"stream/{name}"]
    delivered: list[str] = []
    with pytest.raises(APIResponseError, match="b64_json is not base64 of an image"):
        delivered.extend(
            item.type
            for item in _edit(f"{garbage}/stream/{name}/v1", stream=True, partial_images=1)
        )
    # the good partial image was handed on; the completed event, not an image, never is
    assert delivered == [e["type"] for e in STREAMS[name][:-1]]
    assert hits[f"stream/{name}"] == before + 1  # not retried: the upstream accepted it
    tracking.flush()
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.images_returned == 0
    if "usage" in STREAMS[name][-1]:  # what the completed event says it billed is the cost
        assert event.cost_source == "usage" and event.cost_usd == USAGE_COST["gpt-image-1"]
    else:  # accepted upstream, then unusable, nothing said: maybe billed, so estimated
        assert event.cost_source == "estimate"
        assert event.cost_usd is not None and event.cost_usd > 0


def test_a_failed_streams_reported_usage_adds_to_its_broken_attempts_estimate():
    """A streamed call that failed on an unusable completed event reporting its usage, after
    other accepted attempts broke off: it costs that usage plus their estimate, never only one."""
    from tests.ledger_support import make_event
    from tracking.pricing.estimate import estimate_incomplete_stream
    from tracking.request import parse_call
    from tracking.stream_flow import INCOMPLETE_STREAM_REF, _with_broken_streams

    request, _ = parse_call(
        model="gpt-image-2", prompt="a hat", image=make_png(), api_key="sk-x", stream=True
    )
    usage_cost = USAGE_COST["gpt-image-2"]
    event = make_event(
        model="gpt-image-2",
        status="failure",
        cost=usage_cost,
        cost_source="usage",
        price_ref="openai:gpt-image-2",
    )
    each = estimate_incomplete_stream(request)
    assert each is not None and each > 0
    changes = _with_broken_streams(event, [(request, 0), (request, 0)])
    assert changes["cost_usd"] == 2 * each + usage_cost
    assert changes["cost_source"] == "estimate"  # a part of it is estimated
    assert changes["price_ref"] == f"{INCOMPLETE_STREAM_REF}+openai:gpt-image-2"
