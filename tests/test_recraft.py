"""Recraft edits against the fake: image-to-image and inpainting, costs from the credits Recraft
reports, the table price when it reports none, errors, and the proxy."""

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
from tracking.errors import AuthenticationError, BadRequestError
from tracking.providers.recraft import RecraftProvider, _charged
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


def test_a_vector_models_svg_answer_is_handed_on():
    """Recraft's vector models answer SVG, which the base64 image check (PNG, JPEG, WebP, GIF)
    does not know: a Recraft answer is not refused for it."""
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    body = json.dumps({"created": 1, "credits": 80, "data": [{"b64_json": svg.decode()}]})
    response = RecraftProvider().parse(200, {}, body.encode())
    assert response.data[0].b64_json == svg.decode()
    assert response.billed_usd == Decimal("0.08")


def test_recrafts_errors_map_into_the_tree(recraft, upstream):
    with pytest.raises(BadRequestError, match="strength must be between 0 and 1"):
        tracking.image_edit(
            image=PNG,
            prompt="a hat",
            model="recraft/recraftv3",
            extra_body={"strength": 3},
            **upstream,
        )
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
