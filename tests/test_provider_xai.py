"""xAI (Grok Imagine) edits and generations against the fake: the JSON request, sizes mapped to
xAI's aspect ratios and resolutions, costs from the ticks xAI reports, the table price when it
reports none, errors and retries, the proxy with the official client, and a router fallback to
OpenAI.

The fake bills 200,000,000 ticks per output image (xAI's $0.02; 10^10 ticks per USD) and
20,000,000 per input image; a generation has none. Generations go to ``images/generations``
(the proxy's ``/v1/images/generations`` driven by the official ``openai`` client, with its
ledger rows); xAI answers whole, so no stream.

Grok Imagine Image 2.0 (``xai/grok-imagine-image-2.0``; xAI's release notes and its migration
guide, read 2026-12-07) takes ``quality`` (``low``, ``medium`` or ``auto``, the default, served
at ``low`` for a generation and ``medium`` for an edit), up to five source images for an edit,
and bills each image at the quality served and its resolution. The fake bills, per output image,
400,000,000 ticks at low 1k ($0.04), 600,000,000 at medium 1k or low 2k ($0.06), 800,000,000 at
medium 2k ($0.08); the price table's own figures are the same four. ``grok-imagine-image-quality``
was retired on 2026-11-02."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

import tracking
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.proxy_support import (
    ProxyProcess,
    edit_through_proxy,
    ledger_row,
    one_deployment_config,
    write_config,
)
from tests.recorder import record_events
from tests.router_support import deployment
from tracking.errors import (
    APIResponseError,
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    UnsupportedParamsError,
    ValidationError,
)
from tracking.pricing import price_call, shutdown_date
from tracking.providers.xai import XAIProvider, _charged, output_shape
from tracking.request import parse_call
from tracking.router import Router
from tracking.testing import FakeOpenAI
from tracking.testing.fake_xai import INPUT_TICKS, OUTPUT_TICKS, FakeXAI

KEY = "xai-test-key-0123456789"
MODEL = "xai/grok-imagine-image"
MODEL_2 = "xai/grok-imagine-image-2.0"
AUDIT_DAY = date(2026, 12, 7)
PNG = make_png(64, 64)
MASTER_KEY = "sk-master-xai-generations-0123456789"
PNG_SIGNATURE = b"\x89PNG"


@pytest.fixture(scope="module")
def xai() -> Iterator[FakeXAI]:
    with FakeXAI(api_keys=[KEY]) as server:
        yield server


@pytest.fixture
def upstream(xai: FakeXAI) -> dict[str, str]:
    return {"api_base": xai.url, "api_key": KEY}


def _sent_image(url: str) -> bytes:
    header, _, encoded = url.partition(",")
    assert header == "data:image/png;base64"
    return base64.b64decode(encoded)


def test_one_image_goes_as_a_data_uri_and_the_reported_ticks_are_the_cost(
    monkeypatch, xai, upstream
):
    events = record_events(monkeypatch)
    response = tracking.image_edit(image=PNG, prompt="a hat", model=MODEL, n=2, **upstream)
    sent = xai.requests[-1]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Content-Type"] == "application/json"
    assert _sent_image(sent.body["image"]["url"]) == PNG and "images" not in sent.body
    assert (sent.body["model"], sent.body["n"], sent.body["response_format"]) == (
        "grok-imagine-image",
        2,
        "b64_json",
    )
    assert "size" not in sent.body and "aspect_ratio" not in sent.body
    assert response.images_returned == 2
    assert base64.b64decode(response.data[0].b64_json or "").startswith(b"\x89PNG")
    # the fake bills 2 outputs x 200,000,000 + 1 input x 20,000,000 = 420,000,000 ticks;
    # 420,000,000 / 10,000,000,000 ticks per USD = $0.042
    assert response.cost_usd == Decimal("0.042")
    assert (events.last.provider, events.last.cost_usd) == ("xai", Decimal("0.042"))


async def test_three_references_go_as_images_async(xai, upstream):
    refs = [make_png(64, 64), make_png(32, 32), make_png(48, 16)]
    response = await tracking.aimage_edit(
        image=refs, prompt="<IMAGE_0> wearing <IMAGE_1>", model=MODEL, size="1024x1536", **upstream
    )
    sent = xai.requests[-1]
    assert "image" not in sent.body
    assert [_sent_image(item["url"]) for item in sent.body["images"]] == refs
    assert (sent.body["aspect_ratio"], sent.body["resolution"]) == ("2:3", "1k")
    # 1 output x 200,000,000 + 3 inputs x 20,000,000 = 260,000,000 ticks = $0.026
    assert response.cost_usd == Decimal("0.026")


def test_four_references_are_refused_before_sending(xai, upstream):
    before = len(xai.requests)
    with pytest.raises(ValidationError, match="at most 3"):
        tracking.image_edit(image=[PNG] * 4, prompt="p", model=MODEL, **upstream)
    assert len(xai.requests) == before


@pytest.mark.parametrize(
    ("size", "shape"),
    [
        (None, {}),
        ("auto", {}),
        ("1024x1024", {"aspect_ratio": "1:1", "resolution": "1k"}),
        ("1536x1024", {"aspect_ratio": "3:2", "resolution": "1k"}),
        ("1920x1080", {"aspect_ratio": "16:9", "resolution": "2k"}),
        ("2000x900", {"aspect_ratio": "20:9", "resolution": "2k"}),
        ("600x1300", {"aspect_ratio": "9:19.5", "resolution": "1k"}),
    ],
)
def test_sizes_become_xais_aspect_ratio_and_resolution(size, shape):
    assert output_shape(size) == shape


@pytest.mark.parametrize(
    ("size", "rule"),
    [("3000x1000", "aspect"), ("3072x3072", "max_pixels"), ("big", "format"), ("0x10", "format")],
)
def test_sizes_xai_cannot_make_are_typed_errors(size, rule):
    with pytest.raises(ValidationError) as caught:
        output_shape(size)
    assert (caught.value.param, caught.value.rule) == ("size", rule)


def test_extra_body_adds_members_but_never_replaces_the_calls_own(xai, upstream):
    """The aspect ratio and resolution a size became, and the images, are the call's: an
    extra_body replacing them would make another picture than the one recorded."""
    before = len(xai.requests)
    for extra in ({"resolution": "2k"}, {"aspect_ratio": "16:9"}, {"image": {"url": "x"}}):
        with pytest.raises(ValidationError, match="extra_body") as caught:
            tracking.image_edit(
                image=PNG, prompt="p", model=MODEL, size="1024x1024", extra_body=extra, **upstream
            )
        assert (caught.value.param, caught.value.rule) == ("extra_body", "unsupported")
    assert len(xai.requests) == before
    # what the call left unset is the caller's to add: with size auto, xAI's own aspect ratio
    tracking.image_edit(
        image=PNG, prompt="p", model=MODEL, extra_body={"aspect_ratio": "16:9"}, **upstream
    )
    assert xai.requests[-1].body["aspect_ratio"] == "16:9"


def test_a_size_beyond_xai_is_refused_before_sending(xai, upstream):
    before = len(xai.requests)
    with pytest.raises(ValidationError, match="size") as caught:
        tracking.image_edit(image=PNG, prompt="p", model=MODEL, size="4096x1024", **upstream)
    assert caught.value.param == "size"
    assert len(xai.requests) == before


def test_a_mask_is_unsupported_or_dropped(xai, upstream):
    before = len(xai.requests)
    with pytest.raises(UnsupportedParamsError, match="mask"):
        tracking.image_edit(image=PNG, mask=make_half_mask(), prompt="p", model=MODEL, **upstream)
    assert len(xai.requests) == before
    tracking.image_edit(
        image=PNG, mask=make_half_mask(), prompt="p", model=MODEL, drop_params=True, **upstream
    )
    assert "mask" not in xai.requests[-1].body


def test_models_outside_the_rule_table_get_the_providers_own_checks(monkeypatch, xai, upstream):
    events = record_events(monkeypatch)
    before = len(xai.requests)
    with pytest.raises(ValidationError, match="no wider than 20:9") as caught:
        tracking.image_edit(
            image=PNG, prompt="p", model="xai/grok-imagine-next", size="5000x1000", **upstream
        )
    assert caught.value.param == "size"
    with pytest.raises(UnsupportedParamsError, match="mask"):
        tracking.image_edit(
            image=PNG, mask=make_half_mask(), prompt="p", model="xai/grok-imagine-next", **upstream
        )
    assert len(xai.requests) == before
    assert [e.error_type for e in events.events] == ["validation_error", "unsupported_param"]
    with pytest.raises(NotFoundError, match="does not exist"):  # the fake knows no such model
        tracking.image_edit(
            image=PNG,
            mask=make_half_mask(),
            prompt="p",
            model="xai/grok-imagine-next",
            drop_params=True,
            **upstream,
        )
    assert "mask" not in xai.requests[-1].body


def test_a_url_answer_is_passed_through_when_asked(xai, upstream):
    response = tracking.image_edit(
        image=PNG, prompt="p", model=MODEL, response_format="url", **upstream
    )
    assert xai.requests[-1].body["response_format"] == "url"
    assert (response.data[0].url or "").startswith(f"http://{xai.host}:{xai.port}/imgen/")


@pytest.mark.parametrize(
    ("ticks", "usd"),
    [
        (200_000_000, Decimal("0.02")),
        ("37756000", Decimal("0.0037756")),
        (None, None),
        (True, None),
        (-5, None),
        (1.5, None),
        ("12.5", None),
    ],
)
def test_only_a_whole_positive_tick_count_is_a_charge(ticks, usd):
    assert _charged(ticks) == usd


def test_without_reported_ticks_the_table_prices_the_output_images():
    # An answer in the shape xAI documents, without its usage: the table price applies.
    image = {"b64_json": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    body = json.dumps({"created": 1, "data": [image] * 3, "block_reason": None}).encode()
    response = XAIProvider().parse(200, {}, body)
    assert response.billed_usd is None and response.images_returned == 3
    request, options = parse_call(image=PNG, prompt="p", model=MODEL, n=3, api_key=KEY)
    # the call flow gives the answer the price key its request was prepared with
    response.price_size = XAIProvider().prepare(request, options).price_size
    cost = price_call(request, response)
    # no ticks: 3 output images x $0.02 (xAI's per-image price) = $0.06, from the table
    assert (cost.usd, cost.source) == (Decimal("0.06"), "table")


def test_a_data_uri_is_checked_as_an_image_once_it_is_bare_base64():
    """xAI may answer ``b64_json`` as a data URI: its base64 is what must be an image."""

    def answer(content: bytes) -> bytes:
        uri = "data:image/png;base64," + base64.b64encode(content).decode()
        return json.dumps({"created": 1, "data": [{"b64_json": uri}]}).encode()

    response = XAIProvider().parse(200, {}, answer(PNG))
    assert response.data[0].b64_json == base64.b64encode(PNG).decode()
    with pytest.raises(APIResponseError, match=r"data\[0\]\.b64_json is not base64 of an image"):
        XAIProvider().parse(200, {}, answer(b"<html><body>Bad gateway</body></html>"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"b64_json": base64.b64encode(b"<html>Bad gateway</html>").decode()}], "not base64"),
        ([], "has no image"),
    ],
    ids=["not-an-image", "no-image"],
)
def test_an_unusable_answer_costs_the_ticks_it_reports(data, message):
    """A 200 without a usable image that says what xAI charged (``cost_in_usd_ticks``) costs
    that; without the figure, the call is estimated (an unreadable 2xx)."""
    request, _ = parse_call(image=PNG, prompt="p", model=MODEL, api_key=KEY)
    usage = {"cost_in_usd_ticks": 200_000_000}  # $0.02
    for reported, expected in ((True, (Decimal("0.02"), "usage")), (False, None)):
        answer = {"created": 1, "data": data, **({"usage": usage} if reported else {})}
        with pytest.raises(APIResponseError, match=message) as raised:
            XAIProvider().parse(200, {}, json.dumps(answer).encode())
        cost = price_call(request, None, failure=raised.value)
        if expected is not None:
            assert (cost.usd, cost.source, cost.price_ref) == (*expected, "provider:xai")
        else:
            assert cost.source == "estimate" and cost.usd is not None and cost.usd > 0


@pytest.mark.parametrize(
    ("fault", "charged"),
    [
        ("code=moderation", Decimal(0)),  # an error answer: nothing billed
        # a 200 withholding the image but reporting cost_in_usd_ticks: what xAI charged
        ("code=blocked", Decimal(OUTPUT_TICKS + INPUT_TICKS) / 10**10),
    ],
)
def test_xais_moderation_is_a_content_policy_error(monkeypatch, xai, upstream, fault, charged):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(
            image=PNG,
            prompt="p",
            model=MODEL,
            extra_headers={"x-fake-fault": fault},
            **upstream,
        )
    assert events.last.error_type == "content_policy"
    assert (events.last.status, events.last.cost_usd) == ("failure", charged)
    if charged:
        assert (events.last.cost_source, events.last.price_ref) == ("usage", "provider:xai")


def test_an_incorrect_key_sent_back_as_400_is_an_authentication_error(xai):
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        tracking.image_edit(
            image=PNG, prompt="p", model=MODEL, api_base=xai.url, api_key="xai-wrong-0000000"
        )


def test_xais_own_refusals_are_bad_requests_with_its_message(xai, upstream):
    with pytest.raises(BadRequestError, match="Argument not supported: style"):
        tracking.image_edit(
            image=PNG, prompt="p", model=MODEL, extra_body={"style": "vivid"}, **upstream
        )


def test_rate_limits_are_rate_limit_errors(xai, upstream):
    with pytest.raises(RateLimitError):
        tracking.image_edit(
            image=PNG,
            prompt="p",
            model=MODEL,
            max_retries=0,
            extra_headers={"x-fake-fault": "status=429;retry_after=0;message=slow down"},
            **upstream,
        )


def test_a_5xx_is_retried_and_billed_once(monkeypatch, upstream):
    events = record_events(monkeypatch)
    with FakeXAI(api_keys=[KEY], faults=["status=503;retry_after=0"]) as server:
        response = tracking.image_edit(
            image=PNG, prompt="p", model=MODEL, max_retries=1, api_base=server.url, api_key=KEY
        )
        assert len(server.requests) == 2
        server.inject("status=500;always")
        with pytest.raises(InternalServerError):
            tracking.image_edit(
                image=PNG, prompt="p", model=MODEL, max_retries=1, api_base=server.url, api_key=KEY
            )
        assert len(server.requests) == 4
    assert response.cost_usd == Decimal("0.022")  # 200,000,000 + 20,000,000 ticks
    assert events.events[-2].cost_usd == Decimal("0.022")


def test_the_official_client_through_the_proxy(xai, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    params = {"model": MODEL, "api_key": KEY, "api_base": xai.url}
    raw = edit_through_proxy(tmp_path, "grok", params, image=image, prompt="a hat", n=2)
    assert len(raw.parse().data) == 2 and raw.parse().data[0].b64_json
    assert xai.requests[-1].headers["Content-Type"] == "application/json"
    # 2 x 200,000,000 + 1 x 20,000,000 ticks = $0.042
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.042")


def test_the_proxy_answers_a_size_xai_cannot_make_with_a_400(xai, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    params = {"model": "xai/grok-imagine-next", "api_key": KEY, "api_base": xai.url}
    before = len(xai.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        edit_through_proxy(tmp_path, "grok", params, image=image, prompt="p", size="5000x1000")
    assert caught.value.status_code == 400 and "20:9" in caught.value.message
    assert len(xai.requests) == before


def test_a_router_falls_back_from_xai_to_openai(monkeypatch):
    events = record_events(monkeypatch)
    with (
        FakeXAI(api_keys=[KEY], faults=["status=503;always"]) as server,
        FakeOpenAI(api_keys=[API_KEY]) as openai_fake,
    ):
        router = Router(
            [
                deployment("grok", server.url, id="x", model=MODEL, api_key=KEY),
                deployment("backup", openai_fake.url, id="o", model="gpt-image-1"),
            ],
            fallbacks=[{"grok": ["backup"]}],
            num_retries=0,
            allowed_fails=9,
        )
        response = router.image_edit(image=PNG, prompt="a hat", model="grok")
        assert len(server.requests) >= 1
        assert openai_fake.requests[-1].fields["model"] == "gpt-image-1"
    assert response.images_returned == 1
    event = events.last
    assert (event.model_group, event.fallback_from, event.deployment_id) == (
        "backup",
        ("grok",),
        "o",
    )


def test_an_absurd_reported_charge_is_not_the_cost():
    """``cost_in_usd_ticks`` of 10**40 ($1e30) became the call's cost, which the ledger then
    refused (its rows stop below $1e10): the spend was missing from ``spend_logs``. Above
    ``MAX_REPORTED_USD`` the figure is a fault: the table prices a success, a failure is
    estimated, flagged."""
    image = {"b64_json": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    usage = {"cost_in_usd_ticks": "1" + "0" * 40}
    request, options = parse_call(image=PNG, prompt="p", model=MODEL, api_key=KEY)
    answer = json.dumps({"created": 1, "data": [image], "usage": usage}).encode()
    response = XAIProvider().parse(200, {}, answer)
    response.price_size = XAIProvider().prepare(request, options).price_size
    cost = price_call(request, response)
    assert (cost.usd, cost.source) == (Decimal("0.02"), "table")  # one image at xAI's price
    empty = json.dumps({"created": 1, "data": [], "usage": usage}).encode()
    with pytest.raises(APIResponseError) as raised:
        XAIProvider().parse(200, {}, empty)
    cost = price_call(request, None, failure=raised.value)
    assert cost.source == "estimate" and cost.usd is not None and 0 < cost.usd < 1


# -- generations: the SDK --------------------------------------------------------------------------


def test_a_generation_sends_xais_json_without_images_and_costs_the_reported_ticks(
    monkeypatch, xai, upstream
):
    events = record_events(monkeypatch)
    response = tracking.image_generation(
        prompt="a red fox on snow", model=MODEL, n=2, size="1536x1024", user="alice", **upstream
    )
    sent = xai.requests[-1]
    assert sent.path == "/v1/images/generations"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == {
        "model": "grok-imagine-image",
        "prompt": "a red fox on snow",
        "response_format": "b64_json",
        "n": 2,
        "user": "alice",
        "aspect_ratio": "3:2",  # 1536x1024 is 3:2, its long side within 1k's 1536
        "resolution": "1k",
    }
    assert response.images_returned == 2
    assert base64.b64decode(response.data[0].b64_json or "").startswith(PNG_SIGNATURE)
    # 2 output images x 200,000,000 ticks = 400,000,000 ticks / 10^10 per USD = $0.04
    assert response.cost_usd == Decimal("0.04")
    event = events.last
    assert (event.call_type, event.operation, event.provider) == (
        "image_generation",
        "image_generation",
        "xai",
    )
    assert (event.status, event.cost_usd, event.cost_source, event.price_ref) == (
        "success",
        Decimal("0.04"),
        "usage",
        "provider:xai",
    )
    assert event.end_user == "alice"


async def test_an_async_generation_answered_with_a_url(monkeypatch, xai, upstream):
    events = record_events(monkeypatch)
    response = await tracking.aimage_generation(
        prompt="a lighthouse at dusk", model=MODEL, response_format="url", **upstream
    )
    sent = xai.requests[-1]
    assert sent.path == "/v1/images/generations" and sent.body["response_format"] == "url"
    assert "aspect_ratio" not in sent.body and "resolution" not in sent.body  # xAI's own choice
    url = response.data[0].url or ""
    assert url.startswith(f"http://{xai.host}:{xai.port}/imgen/") and not response.data[0].b64_json
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url)).content.startswith(PNG_SIGNATURE)
    assert response.cost_usd == Decimal("0.02")  # 1 x 200,000,000 ticks
    assert events.last.call_type == "aimage_generation"


def test_without_reported_ticks_the_table_prices_a_generation_as_an_edit():
    """An answer in xAI's shape without ``usage``: $0.02 per output image from the price table,
    as an edit's output images are priced."""
    image = {"b64_json": base64.b64encode(make_png(8, 8)).decode(), "mime_type": "image/png"}
    body = json.dumps({"created": 1, "data": [image] * 3, "block_reason": None}).encode()
    provider = XAIProvider()
    response = provider.parse(200, {}, body)
    assert response.billed_usd is None
    request, options = parse_call(
        prompt="p", model=MODEL, n=3, api_key=KEY, operation="image_generation"
    )
    prepared = provider.prepare(request, options)
    assert prepared.url.endswith("/images/generations")
    response.price_size = prepared.price_size
    cost = price_call(request, response)
    # 3 output images x $0.02 (xAI's per-image price) = $0.06
    assert (cost.usd, cost.source) == (Decimal("0.06"), "table")


@pytest.mark.parametrize(
    ("fault", "charged"),
    [
        ("code=moderation", Decimal(0)),  # an error answer: nothing billed
        ("code=blocked", Decimal(OUTPUT_TICKS) / 10**10),  # withheld, but xAI reports a charge
    ],
)
def test_a_moderated_generation_is_a_content_policy_error(
    monkeypatch, xai, upstream, fault, charged
):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        tracking.image_generation(
            prompt="p", model=MODEL, extra_headers={"x-fake-fault": fault}, **upstream
        )
    assert xai.requests[-1].path == "/v1/images/generations"
    assert (events.last.call_type, events.last.error_type) == ("image_generation", "content_policy")
    assert (events.last.status, events.last.cost_usd) == ("failure", charged)


# -- refused before sending ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error", "param", "rule"),
    [
        ({"quality": "high"}, UnsupportedParamsError, "quality", "unsupported"),
        ({"background": "transparent"}, UnsupportedParamsError, "background", "unsupported"),
        ({"output_format": "png"}, UnsupportedParamsError, "output_format", "unsupported"),
        ({"output_compression": 50}, UnsupportedParamsError, "output_compression", "unsupported"),
        ({"moderation": "low"}, UnsupportedParamsError, "moderation", "unsupported"),
        ({"n": 11}, ValidationError, "n", "range"),
        ({"size": "3000x1000"}, ValidationError, "size", "aspect"),
        ({"size": "3072x3072"}, ValidationError, "size", "pixels"),
        ({"response_format": "png"}, ValidationError, "response_format", "enum"),
        ({"stream": True}, UnsupportedParamsError, "stream", "unsupported"),
        ({"stream": True, "drop_params": True}, UnsupportedParamsError, "stream", "unsupported"),
        ({"extra_body": {"aspect_ratio": "1:1"}, "size": "1024x1024"}, ValidationError,
         "extra_body", "unsupported"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else None,
)  # fmt: skip
def test_parameters_xai_cannot_take_are_refused_before_sending(
    monkeypatch, xai, upstream, params, error, param, rule
):
    events = record_events(monkeypatch)
    before = len(xai.requests)
    with pytest.raises(error) as raised:
        tracking.image_generation(prompt="a fox", model=MODEL, **params, **upstream)
    assert (raised.value.param, raised.value.rule) == (param, rule)
    assert param in str(raised.value)
    assert len(xai.requests) == before
    assert (events.last.status, events.last.cost_usd) == ("failure", 0)
    assert events.last.call_type == "image_generation"


def test_edit_only_parameters_and_streams_of_unlisted_models_are_refused(xai, upstream):
    before = len(xai.requests)
    edit_only: dict[str, Any] = {"mask": make_half_mask()}
    with pytest.raises(ValidationError) as raised:
        tracking.image_generation(prompt="p", model=MODEL, **edit_only, **upstream)
    assert raised.value.param == "mask"
    # a model the rule table does not list: the provider itself refuses a stream (xAI answers
    # whole), so nothing is made and billed unseen
    with pytest.raises(UnsupportedParamsError, match="does not stream") as streamed:
        tracking.image_generation(
            prompt="p", model="xai/grok-imagine-next", stream=True, **upstream
        )
    assert streamed.value.param == "stream"
    assert len(xai.requests) == before


def test_extra_body_adds_xais_other_fields(xai, upstream):
    tracking.image_generation(
        prompt="p", model=MODEL, extra_body={"aspect_ratio": "16:9", "resolution": "2k"}, **upstream
    )
    sent = xai.requests[-1].body
    assert (sent["aspect_ratio"], sent["resolution"]) == ("16:9", "2k")


def test_the_fake_checks_a_generation_as_xai_documents_it(xai):
    """The fake's own rules, from xAI's reference: ``size`` and ``style`` are "Argument not
    supported", a generation takes no input image, ``quality`` is low, medium or high."""
    url = f"{xai.url}/images/generations"
    headers = {"Authorization": f"Bearer {KEY}"}
    cases = [
        ({"prompt": "p", "size": "1024x1024"}, 400, "Argument not supported: size"),
        ({"prompt": "p", "style": "vivid"}, 400, "Argument not supported: style"),
        ({"prompt": "p", "image": {"url": "data:"}}, 400, "no input image"),
        ({"prompt": "p", "quality": "ultra"}, 400, "quality"),
        ({"prompt": "p", "n": 0}, 400, "n:"),
        ({"model": "grok-imagine-image"}, 422, "prompt"),
    ]
    with httpx.Client(timeout=30) as client:
        for body, status, message in cases:
            answer = client.post(url, json=body, headers=headers)
            assert answer.status_code == status and message in answer.json()["error"], body
        assert client.post(url, json={"prompt": "p"}).status_code == 401
        good = client.post(url, json={"prompt": "p", "quality": "high", "n": 3}, headers=headers)
    assert good.status_code == 200
    assert len(good.json()["data"]) == 3
    assert good.json()["usage"] == {"cost_in_usd_ticks": 3 * OUTPUT_TICKS}


# -- the proxy, with the official openai client -------------------------------------------------


@pytest.fixture(scope="module")
def proxy(xai: FakeXAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("xai-generations-proxy")
    ledger = {"master_key": MASTER_KEY, "database_url": f"sqlite:///{folder / 'ledger.db'}"}
    config = one_deployment_config(
        xai.url, model_name="grok", model=MODEL, api_key=KEY, general_settings=ledger
    )
    grok_2 = {"model": MODEL_2, "api_base": xai.url, "api_key": KEY}
    config["model_list"].append({"model_name": "grok-2", "litellm_params": grok_2})
    with ProxyProcess(write_config(folder / "config.yaml", config)) as process:
        yield process


def _client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_openai_client_generates_with_xai_through_the_proxy(proxy, xai):
    with _client(proxy) as client:
        raw = client.images.with_raw_response.generate(
            model="grok", prompt="a red fox", n=2, size="1024x1536", user="carol"
        )
    result = raw.parse()
    assert len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json or "").startswith(PNG_SIGNATURE)
    sent = xai.requests[-1]
    assert sent.path == "/v1/images/generations"
    assert (sent.body["aspect_ratio"], sent.body["resolution"], sent.body["n"]) == ("2:3", "1k", 2)
    assert "size" not in sent.body and "image" not in sent.body
    # 2 x 200,000,000 ticks = $0.04
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.04")
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert (row["call_type"], row["status"], row["end_user"]) == (
        "aimage_generation",
        "success",
        "carol",
    )
    assert row["model"] == MODEL or row["model_group"] == "grok"
    assert Decimal(str(row["cost_usd"])) == Decimal("0.04")


def test_async_openai_client_gets_xais_urls_through_the_proxy(proxy, xai):
    async def main() -> Any:
        async with openai.AsyncOpenAI(
            base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0
        ) as client:
            return await client.images.with_raw_response.generate(
                model="grok", prompt="a lighthouse", response_format="url"
            )

    raw = asyncio.run(main())
    assert xai.requests[-1].body["response_format"] == "url"  # xAI takes it: passed on
    url = raw.parse().data[0].url or ""
    assert url.startswith(f"http://{xai.host}:{xai.port}/imgen/")
    assert httpx.get(url, timeout=30).content.startswith(PNG_SIGNATURE)
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert row["call_type"] == "aimage_generation"
    assert Decimal(str(row["cost_usd"])) == Decimal("0.02")
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"])
    assert metadata["response_format"] == "url"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"quality": "high"}, "quality"),
        ({"size": "3000x1000"}, "aspect ratio"),
        ({"stream": True}, "stream"),
    ],
)
def test_the_proxy_refuses_what_xai_cannot_make_with_a_400(proxy, xai, params, words):
    before = len(xai.requests)
    with _client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="grok", prompt="p", **params)
    assert raised.value.status_code == 400 and words in raised.value.message
    assert len(xai.requests) == before


# -- Grok Imagine Image 2.0 ------------------------------------------------------------------------


def test_a_generation_sends_its_quality_and_costs_the_ticks_xai_reports(monkeypatch, xai, upstream):
    events = record_events(monkeypatch)
    response = tracking.image_generation(
        prompt="a poster", model=MODEL_2, quality="medium", size="2048x2048", n=2, **upstream
    )
    sent = xai.requests[-1]
    assert sent.path == "/v1/images/generations"
    assert sent.body == {
        "model": "grok-imagine-image-2.0",
        "prompt": "a poster",
        "response_format": "b64_json",
        "n": 2,
        "quality": "medium",
        "aspect_ratio": "1:1",
        "resolution": "2k",
    }
    assert response.images_returned == 2
    # 2 outputs x 800,000,000 ticks (medium, 2k) = 1,600,000,000 / 10^10 = $0.16
    assert response.cost_usd == Decimal("0.16")
    assert (events.last.cost_usd, events.last.cost_source) == (Decimal("0.16"), "usage")


def test_an_edit_takes_five_references_at_xais_default_quality(monkeypatch, xai, upstream):
    refs = [make_png(64, 64), make_png(32, 32), make_png(48, 16), make_png(16, 48), PNG]
    response = tracking.image_edit(
        image=refs, prompt="<IMAGE_0> in a room", model=MODEL_2, **upstream
    )
    sent = xai.requests[-1]
    assert sent.path == "/v1/images/edits" and len(sent.body["images"]) == 5
    assert "quality" not in sent.body  # xAI's auto: an edit is served at medium
    # 1 output x 600,000,000 (medium, 1k) + 5 inputs x 20,000,000 = 700,000,000 ticks = $0.07
    assert response.cost_usd == Decimal("0.07")


def test_six_references_and_a_quality_2_0_lacks_are_refused_before_sending(xai, upstream):
    before = len(xai.requests)
    with pytest.raises(ValidationError, match="at most 5"):
        tracking.image_edit(image=[PNG] * 6, prompt="p", model=MODEL_2, **upstream)
    with pytest.raises(ValidationError) as raised:
        tracking.image_generation(prompt="p", model=MODEL_2, quality="high", **upstream)
    assert raised.value.param == "quality"
    assert len(xai.requests) == before


@pytest.mark.parametrize(
    ("quality", "size", "n", "expected"),
    [
        ("low", "1024x1024", 3, "0.12"),  # 3 x $0.04 (low, 1K)
        ("low", "1536x1024", 1, "0.04"),  # 1536 wide is xAI's 1k: $0.04
        ("low", "2048x2048", 1, "0.06"),  # low, 2K
        ("medium", None, 1, "0.06"),  # no size: xAI's default 1k, medium
        ("medium", "1920x1080", 2, "0.16"),  # 2 x $0.08 (medium, 2K)
        # auto: the dearer of low and medium at 1K, an estimate (the quality served is xAI's)
        (None, "1024x1024", 1, "0.06"),
    ],
)
def test_without_reported_ticks_the_table_prices_quality_and_resolution(quality, size, n, expected):
    image = {"b64_json": base64.b64encode(make_png(8, 8)).decode(), "mime_type": "image/png"}
    body = json.dumps({"created": 1, "data": [image] * n, "block_reason": None}).encode()
    provider = XAIProvider()
    response = provider.parse(200, {}, body)
    assert response.billed_usd is None
    request, options = parse_call(
        prompt="p",
        model=MODEL_2,
        n=n,
        size=size,
        quality=quality,
        api_key=KEY,
        operation="image_generation",
    )
    response.price_size = provider.prepare(request, options).price_size
    cost = price_call(request, response, day=AUDIT_DAY)
    source = "table" if quality else "estimate"
    assert (cost.usd, cost.source) == (Decimal(expected), source)


def test_a_resolution_from_extra_body_sets_the_tier_priced():
    request, options = parse_call(
        prompt="p",
        model=MODEL_2,
        quality="low",
        extra_body={"resolution": "1.5k"},
        api_key=KEY,
        operation="image_generation",
    )
    # 1.5k is priced at 2K's $0.06 (an upper bound; xAI's own charge comes in its answer)
    assert XAIProvider().prepare(request, options).price_size == "2K"


@pytest.mark.parametrize("resolution", ["4k", "3k", "2K", 2048, None])
def test_a_resolution_xai_does_not_list_is_refused_before_sending(xai, upstream, resolution):
    """A ``4k`` (or any value without a price tier) was priced at 2K's and recorded as a table
    price: refused before sending instead, naming the values taken."""
    before = len(xai.requests)
    with pytest.raises(ValidationError) as caught:
        tracking.image_generation(
            prompt="p",
            model=MODEL_2,
            quality="low",
            extra_body={"resolution": resolution},
            **upstream,
        )
    assert (caught.value.param, caught.value.rule) == ("extra_body", "enum")
    assert "1k, 1.5k, 2k" in caught.value.message
    assert len(xai.requests) == before


def test_grok_imagine_image_quality_is_retired_on_2026_11_02(monkeypatch, xai, caplog):
    for name in ("xai/grok-imagine-image-quality", "xai/grok-imagine-image-pro"):
        assert shutdown_date(name, AUDIT_DAY) == date(2026, 11, 2)
    assert shutdown_date(MODEL_2, AUDIT_DAY) is None
    caplog.set_level(logging.WARNING, logger="tracking")
    request, _ = parse_call(
        prompt="p", model="xai/grok-imagine-image-quality", operation="image_generation"
    )
    before = price_call(request, None, day=date(2026, 11, 1))
    assert before.usd == 0  # an answer refused upstream is not billed, before or after
    price_call(request, None, day=AUDIT_DAY)
    warnings = [r.getMessage() for r in caplog.records if "shut down" in r.getMessage()]
    assert len(warnings) == 1 and "on 2026-11-02" in warnings[0]


def test_an_aspect_ratio_only_2_0_takes_goes_in_extra_body(xai, upstream):
    response = tracking.image_generation(
        prompt="a wide banner", model=MODEL_2, extra_body={"aspect_ratio": "21:9"}, **upstream
    )
    assert xai.requests[-1].body["aspect_ratio"] == "21:9"
    # no quality: xAI's auto serves a generation at low, 1k: 400,000,000 ticks = $0.04
    assert response.cost_usd == Decimal("0.04")


def test_the_official_client_sends_a_quality_through_the_proxy(proxy, xai):
    with _client(proxy) as client:
        raw = client.images.with_raw_response.generate(
            model="grok-2", prompt="a red fox", quality="low", size="1920x1080", n=3
        )
        assert len(raw.parse().data) == 3
        sent = xai.requests[-1]
        assert (sent.body["quality"], sent.body["resolution"]) == ("low", "2k")
        # 3 x 600,000,000 ticks (low, 2k) = 1,800,000,000 / 10^10 = $0.18
        assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.18")
        row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
        assert Decimal(str(row["cost_usd"])) == Decimal("0.18")
        before = len(xai.requests)
        with pytest.raises(openai.BadRequestError) as raised:
            client.images.generate(model="grok-2", prompt="a red fox", quality="high")
    assert "quality" in str(raised.value)
    assert len(xai.requests) == before
