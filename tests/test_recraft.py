"""Recraft edits and generations against the fake: image-to-image, inpainting and JSON
generations, costs from the credits Recraft reports, the table price when it reports none
(V4 and V4.1 generations at the prices of Recraft's model pages), errors, and the proxy."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image

import tracking
from tests.conftest import make_half_mask, make_png
from tests.proxy_support import edit_through_proxy
from tests.recorder import record_events
from tracking.errors import APIResponseError, AuthenticationError, BadRequestError
from tracking.pricing import price_call
from tracking.providers.recraft import RecraftProvider, _charged
from tracking.request import parse_call
from tracking.testing.fake_recraft import FakeRecraft

KEY = "recraft-test-token-0123456789"
PNG = make_png(64, 64)


@pytest.fixture(scope="module")
def recraft() -> Iterator[FakeRecraft]:
    with FakeRecraft(api_keys=[KEY]) as server:
        yield server


@pytest.fixture
def upstream(recraft: FakeRecraft) -> dict[str, str]:
    return {"api_base": recraft.url, "api_key": KEY}


def test_image_to_image_is_priced_from_the_credits_recraft_reports(recraft, upstream):
    response = tracking.image_edit(
        image=PNG, prompt="a hat", model="recraft/recraftv3", n=2, **upstream
    )
    sent = recraft.requests[-1]
    assert sent.endpoint == "imageToImage"
    assert (sent.fields["strength"], sent.fields["response_format"]) == ("0.5", "b64_json")
    assert response.images_returned == 2
    assert response.cost_usd == Decimal("0.08")  # 80 credits / 1,000 per USD


async def test_inpainting_sends_recrafts_mask(recraft, upstream):
    response = await tracking.aimage_edit(
        image=PNG, mask=make_half_mask(), prompt="sky", model="recraft/recraftv3_vector", **upstream
    )
    sent = recraft.requests[-1]
    assert sent.endpoint == "inpaint" and "strength" not in sent.fields
    mask = Image.open(io.BytesIO(sent.files["mask"]))
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0
    assert response.cost_usd == Decimal("0.08")


@pytest.mark.parametrize(
    ("credits", "usd"),
    [(40, Decimal("0.04")), ("12.5", Decimal("0.0125")), (None, None), (True, None), (-3, None)],
)
def test_only_a_plain_positive_credit_count_is_a_charge(credits, usd):
    assert _charged(credits) == usd


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
#: SVG documents as vector models may write them: the root element after what XML allows first.
SVGS = {
    "bare": SVG,
    "declared": b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + SVG,
    "doctype": b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
    b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n' + SVG,
    "commented": b"\xef\xbb\xbf  <!-- made by a vector model -->\n" + SVG,
}
#: What an upstream may put where the image should be: none of it is an image.
NOT_IMAGES = {
    "html": b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
    "html_with_svg": b"<html><body><svg width='8' height='8'></svg></body></html>",
    "xml_error": b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>',
    "text": b"The image could not be generated, please try again later.",
}


def _answer(content: bytes, credits: object = 80) -> bytes:
    encoded = base64.b64encode(content).decode()
    return json.dumps({"created": 1, "credits": credits, "data": [{"b64_json": encoded}]}).encode()


@pytest.mark.parametrize("name", sorted(SVGS))
def test_a_vector_models_svg_answer_is_handed_on(name):
    """Recraft's vector models answer SVG, which the base64 check of other answers (PNG, JPEG,
    WebP, GIF) does not know: a Recraft answer is checked for an image or an SVG document."""
    response = RecraftProvider().parse(200, {}, _answer(SVGS[name]))
    assert response.data[0].b64_json == base64.b64encode(SVGS[name]).decode()
    assert response.billed_usd == Decimal("0.08")


def test_a_raster_models_png_answer_is_handed_on():
    response = RecraftProvider().parse(200, {}, _answer(PNG))
    assert response.data[0].b64_json == base64.b64encode(PNG).decode()


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_an_answer_that_is_neither_image_nor_svg_is_refused_at_the_credits_it_reports(name):
    """HTML, another XML document or text where the image should be was handed on as a success:
    now an ``APIResponseError`` (not retried: the edit was charged), which costs the credits
    the answer reports, or the estimate when it reports none."""
    request, _ = parse_call(image=PNG, prompt="p", model="recraft/recraftv3", api_key=KEY)
    for credits, expected in ((40, (Decimal("0.04"), "usage")), (None, None)):
        with pytest.raises(APIResponseError, match=r"PNG, JPEG, WebP, GIF or SVG") as raised:
            RecraftProvider().parse(200, {}, _answer(NOT_IMAGES[name], credits))
        cost = price_call(request, None, failure=raised.value)
        if expected is not None:
            assert (cost.usd, cost.source, cost.price_ref) == (*expected, "provider:recraft")
        else:
            assert cost.source == "estimate" and cost.usd is not None and cost.usd > 0


def test_an_answer_without_an_image_costs_the_credits_it_reports():
    body = json.dumps({"created": 1, "credits": 40, "data": [{"revised_prompt": "p"}]})
    with pytest.raises(APIResponseError, match="holds no image") as raised:
        RecraftProvider().parse(200, {}, body.encode())
    assert raised.value.billed_usd == Decimal("0.04")


def test_recrafts_errors_map_into_the_tree(recraft, upstream):
    with pytest.raises(BadRequestError, match="unknown model recraftv0"):
        tracking.image_edit(image=PNG, prompt="a hat", model="recraft/recraftv0", **upstream)
    with pytest.raises(AuthenticationError):
        tracking.image_edit(
            image=PNG,
            prompt="a hat",
            model="recraft/recraftv3",
            api_base=recraft.url,
            api_key="recraft-wrong-000000",
        )


def test_the_official_client_through_the_proxy(recraft, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    params = {"model": "recraft/recraftv3", "api_key": KEY, "api_base": recraft.url}
    raw = edit_through_proxy(tmp_path, "recraft", params, image=image, prompt="a hat")
    assert raw.parse().data[0].b64_json
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.04")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"image": [PNG, PNG]}, "image"),
        ({"n": 7}, "n"),
        ({"extra_body": {"strength": 5}}, "strength"),
        ({"size": "1536x1024"}, "size"),
        ({"quality": "high"}, "quality"),
        ({"response_format": "url"}, "response_format"),
    ],
)
def test_what_recraft_cannot_take_is_refused_before_sending(recraft, upstream, params, param):
    """Three images went as the first alone (the event said 3), n=7 was sent and billed (Recraft
    documents 1 to 6), size and quality were dropped while the event recorded them."""
    from tracking.errors import ValidationError

    before = len(recraft.requests)
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(
            **{"image": PNG, "prompt": "a hat", "model": "recraft/recraftv3", **params}, **upstream
        )
    assert caught.value.param == param
    assert len(recraft.requests) == before


# -- generations: POST /images/generations with JSON (Recraft's endpoint reference) -------------


def test_a_v4_1_generation_sends_json_and_costs_the_credits_recraft_reports(
    monkeypatch, recraft, upstream
):
    events = record_events(monkeypatch)
    response = tracking.image_generation(
        prompt="a fox logo",
        model="recraft/recraftv4_1",
        n=2,
        size="1024x1024",
        extra_body={"style": "vector_illustration"},
        **upstream,
    )
    sent = recraft.requests[-1]
    assert sent.endpoint == "generations" and not sent.files
    assert sent.fields == {
        "prompt": "a fox logo",
        "model": "recraftv4_1",
        "response_format": "b64_json",
        "n": "2",
        "size": "1024x1024",
        "style": "vector_illustration",
    }
    assert response.images_returned == 2
    # 2 images x 35 units (V4.1's $0.035) = 70 units / 1,000 per USD = $0.07
    assert response.cost_usd == Decimal("0.07")
    assert (events.last.operation, events.last.cost_source) == ("image_generation", "usage")


@pytest.mark.parametrize(
    ("model", "n", "usd"),
    [
        ("recraftv4", 1, "0.04"),
        ("recraftv4_vector", 2, "0.16"),  # 2 x $0.08
        ("recraftv4_pro", 1, "0.25"),
        ("recraftv4_pro_vector", 1, "0.30"),
        ("recraftv4_1", 3, "0.105"),  # 3 x $0.035
        ("recraftv4_1_utility", 1, "0.035"),  # billed as recraftv4_1
        ("recraftv4_1_vector", 1, "0.08"),
        ("recraftv4_1_pro", 2, "0.42"),  # 2 x $0.21
        ("recraftv4_pro_raster", 1, "0.25"),  # the raster alias of recraftv4_pro
    ],
)
def test_without_credits_a_v4_generation_is_priced_from_recrafts_list(model, n, usd):
    image = {"b64_json": base64.b64encode(PNG).decode()}
    body = json.dumps({"created": 1, "data": [image] * n}).encode()
    response = RecraftProvider().parse(200, {}, body)
    assert response.billed_usd is None
    request, options = parse_call(
        prompt="p", model=f"recraft/{model}", n=n, api_key=KEY, operation="image_generation"
    )
    response.price_size = RecraftProvider().prepare(request, options).price_size
    cost = price_call(request, response)
    assert (cost.usd, cost.source) == (Decimal(usd), "table")


def test_a_v4_edit_without_credits_is_priced_at_its_generation_price(recraft, upstream):
    """Recraft's pages give V4's generation price alone; as its pricing page bills V3's edits
    at V3's generation prices, an edit answer without credits is priced at V4's $0.04."""
    request, _ = parse_call(image=PNG, prompt="p", model="recraft/recraftv4", n=2, api_key=KEY)
    image = {"b64_json": base64.b64encode(PNG).decode()}
    response = RecraftProvider().parse(200, {}, json.dumps({"data": [image] * 2}).encode())
    response.price_size = "any"
    cost = price_call(request, response)
    assert (cost.usd, cost.price_ref) == (Decimal("0.08"), "packaged:recraft/recraftv4#official")


def test_a_generation_refuses_what_recraft_cannot_take(recraft, upstream):
    before = len(recraft.requests)
    with pytest.raises(tracking.UnsupportedParamsError) as refused:
        tracking.image_generation(
            prompt="p", model="recraft/recraftv4_1", quality="high", **upstream
        )
    assert refused.value.param == "quality"
    with pytest.raises(tracking.ValidationError) as refused:
        tracking.image_generation(prompt="p", model="recraft/recraftv4_1", n=7, **upstream)
    assert refused.value.param == "n"
    assert len(recraft.requests) == before
