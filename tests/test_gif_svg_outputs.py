"""GPT Image 2.6's animated GIF and SVG outputs, end to end: the SDK and the proxy (official
client and ``curl -F``-style multipart) against the fake upstream, which answers them from
OpenAI's documentation with its own rules.

A gif is priced from its usage like any call; an SVG is also billed by OpenAI for an
SVG-authoring model the table cannot price, so its cost is recorded as an estimate (a lower
bound), never as the whole bill.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

import tracking
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tracking.errors import BadRequestError, ValidationError
from tracking.testing import FakeOpenAI, recording
from tracking.testing.fake_openai import IMAGE_INPUT_TOKENS, OUTPUT_TOKENS_2

MASTER_KEY = "sk-master-gif-svg"
PNG = make_png(64, 64, alpha=False)
#: ``price_ref`` prefix of an SVG answer (tracking.pricing.SVG_AUTHORING_REF)
SVG_AUTHORING_REF = "estimate:svg-authoring-unpriced"
FLARE = "gpt-image-2.6-flare"
SUNBURST = "gpt-image-2.6-sunburst"


def _cost(text: int, image_in: int, out: int) -> Decimal:
    """Both 2.6 models: $5 text in, $8 image in, $30 image out per 1M tokens."""
    return (Decimal(text) * 5 + Decimal(image_in) * 8 + Decimal(out) * 30) / 1_000_000


# -- the SDK ------------------------------------------------------------------------------------


def test_a_gif_edit_is_sent_answered_and_priced_from_its_usage(fake, upstream):
    with recording() as events:
        response = tracking.image_edit(
            model=FLARE,
            image=PNG,
            prompt="wave hello",  # 10 characters: 3 text tokens
            size="1024x1024",
            quality="low",
            output_format="gif",
            extra_body={"frame_count": 4, "frame_duration_ms": 120, "complexity": "low"},
            **upstream,
        )
    sent = fake.requests[-1].fields
    assert sent["output_format"] == "gif" and sent["frame_count"] == "4"
    assert sent["frame_duration_ms"] == "120" and sent["complexity"] == "low"
    gif = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json or "")))
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.info["duration"] == 120
    # (3 * 5 + 323 * 8 + 200 * 30) / 1M = 8,599 / 1M
    expected = _cost(3, IMAGE_INPUT_TOKENS, OUTPUT_TOKENS_2["low"]["1024x1024"])
    assert expected == Decimal("0.008599") and response.cost_usd == expected
    assert events.last.cost_source == "usage" and events.last.output_format == "gif"


async def test_an_svg_generation_is_recorded_as_an_estimate_never_the_whole_bill(fake, upstream):
    with recording() as events:
        response = await tracking.aimage_generation(
            model=SUNBURST,
            prompt="an icon",  # 2 text tokens
            size="1024x1024",
            quality="low",
            output_format="svg",
            **upstream,
        )
    svg = base64.b64decode(response.data[0].b64_json or "")
    assert svg.startswith(b"<svg") and response.output_format == "svg"
    event = events.last
    # The image tokens it reports, (2 * 5 + 200 * 30) / 1M, as a lower bound: the SVG-authoring
    # model OpenAI bills beside them is in no usage and no price table.
    assert event.status == "success" and event.cost_usd == Decimal("0.00601")
    assert event.cost_source == "estimate"
    assert event.price_ref == f"{SVG_AUTHORING_REF}:packaged:{SUNBURST}#official"


@pytest.mark.parametrize("frame_ms", [655_351, 10**23])
def test_a_frame_longer_than_a_gif_can_hold_is_refused_before_sending(fake, upstream, frame_ms):
    """OpenAI documents no upper bound for frame_duration_ms; a GIF holds a frame's delay in
    16 bits of hundredths of a second (GIF89a), so 655,350 ms is the longest frame there is.
    A longer one was sent as it came (``10**23`` included)."""
    hits = fake.hits
    with pytest.raises(ValidationError) as caught:
        _two_frames(frame_ms, upstream)
    assert (caught.value.param, caught.value.rule) == ("frame_duration_ms", "range")
    assert "takes 20 to 655350" in str(caught.value)
    assert fake.hits == hits


def test_the_longest_frame_a_gif_can_hold_is_sent_and_made(fake, upstream):
    response = _two_frames(655_350, upstream)
    gif = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json or "")))
    assert gif.n_frames == 2 and gif.info["duration"] == 655_350


def _two_frames(frame_ms: int, upstream: dict[str, str]) -> tracking.ImageResponse:
    """A gif edit of two frames of ``frame_ms`` each."""
    extra = {"frame_count": 2, "frame_duration_ms": frame_ms}
    return tracking.image_edit(
        model=FLARE, image=PNG, prompt="wave", output_format="gif", extra_body=extra, **upstream
    )


def test_the_fake_holds_a_longer_frame_at_the_longest_a_gif_can_say(fake):
    """The fake follows OpenAI's pages, which bound nothing: it answers, at 655,350 ms."""
    answer = httpx.post(
        f"{fake.url}/images/edits",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data={
            "model": FLARE,
            "prompt": "x",
            "output_format": "gif",
            "frame_duration_ms": "10" * 12,
        },
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    gif = Image.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"])))
    assert gif.info["duration"] == 655_350


def test_a_png_of_the_same_model_is_priced_from_usage_as_before(fake, upstream):
    with recording() as events:
        tracking.image_generation(model=SUNBURST, prompt="an icon", quality="low", **upstream)
    assert events.last.cost_source == "usage"
    assert events.last.price_ref == f"packaged:{SUNBURST}#official"


@pytest.mark.parametrize(
    ("params", "param", "said"),
    [
        ({"output_format": "gif", "stream": True}, "stream", "'gif' is not streamed"),
        (
            {"output_format": "gif", "stream": True, "partial_images": 1},
            "partial_images",
            "has no partial images",
        ),
        ({"output_format": "gif", "mask": make_half_mask()}, "mask", "takes no mask"),
        ({"output_format": "gif", "output_compression": 50}, "output_compression", "only for"),
        ({"output_format": "svg"}, "output_format", "only for a generation"),
        ({"extra_body": {"frame_count": 3}}, "frame_count", "only for output_format 'gif'"),
        ({"output_format": "gif", "extra_body": {"frame_count": 17}}, "frame_count", "2 to 16"),
        ({"output_format": "gif", "extra_body": {"frame_count": 1}}, "frame_count", "2 to 16"),
        (
            {"output_format": "gif", "extra_body": {"frame_duration_ms": 19}},
            "frame_duration_ms",
            "takes 20 to 655350",
        ),
        ({"extra_body": {"complexity": "extreme"}}, "complexity", "'low', 'medium'"),
        ({"extra_body": {"complexity": 3}}, "complexity", "expected a string"),
        (
            {"output_format": "gif", "extra_body": {"frame_count": "six"}},
            "frame_count",
            "expected an integer",
        ),
        (
            {"output_format": "gif", "extra_body": {"frame_count": True}},
            "frame_count",
            "expected an integer",
        ),
    ],
)
def test_a_broken_gif_or_svg_rule_is_a_typed_error_before_sending(
    fake, upstream, params, param, said
):
    hits = fake.hits
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(model=FLARE, image=make_png(), prompt="wave", **params, **upstream)
    assert param in {v.param for v in caught.value.violations} or caught.value.param == param
    assert said in str(caught.value)
    assert fake.hits == hits  # nothing was sent


def test_an_svg_generation_makes_one_image(fake, upstream):
    with pytest.raises(ValidationError, match="makes one image, got 2") as caught:
        tracking.image_generation(model=FLARE, prompt="x", n=2, output_format="svg", **upstream)
    assert caught.value.param == "n"


def test_a_gif_generation_streamed_is_refused_too(fake, upstream):
    with pytest.raises(ValidationError, match="not streamed"):
        tracking.image_generation(
            model=SUNBURST, prompt="x", output_format="gif", stream=True, **upstream
        )


def test_other_models_are_unchanged(fake, upstream):
    # gif and svg stay refused for the 2.5 models, by our rules, before sending
    for output_format in ("gif", "svg"):
        with pytest.raises(ValidationError, match="takes 'jpeg', 'png', 'webp'"):
            tracking.image_edit(
                model="gpt-image-2.5-flare",
                image=PNG,
                prompt="x",
                output_format=output_format,
                **upstream,
            )
    # and their extra_body members stay theirs to judge: sent, and the upstream refuses it
    with pytest.raises(BadRequestError, match="Unknown parameter: 'complexity'"):
        tracking.image_edit(
            model="gpt-image-2", image=PNG, prompt="x", extra_body={"complexity": 9}, **upstream
        )
    assert fake.requests[-1].fields["complexity"] == "9"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"output_format": "gif", "frame_count": "30"}, "frame_count"),
        ({"output_format": "png", "frame_count": "3"}, "frame_count"),
        ({"output_format": "gif", "frame_duration_ms": "5"}, "frame_duration_ms"),
        ({"complexity": "extreme"}, "complexity"),
        ({"output_format": "gif", "stream": "true"}, "stream"),
        ({"output_format": "svg"}, "output_format"),
    ],
)
def test_the_fake_refuses_what_openai_documents_for_gif_and_svg(fake, fields, param):
    answer = httpx.post(
        f"{fake.url}/images/edits",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data={"model": FLARE, "prompt": "x", **fields},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


# -- the proxy --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("gif-svg-proxy")
    params = {"api_key": API_KEY, "api_base": fake.url}
    config = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": name, **params}}
            for name in (FLARE, SUNBURST)
        ]
        + [
            {  # an Azure deployment of its own name, priced (and known) by its base model
                "model_name": "svg-azure",
                "litellm_params": {
                    "model": "azure/my-svg-deployment",
                    "api_key": API_KEY,
                    "api_base": fake.base_url,
                    "api_version": "2025-04-01-preview",
                },
                "model_info": {"base_model": SUNBURST},
            }
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
        },
    }
    with ProxyProcess(write_config(folder / "config.yaml", config)) as process:
        yield process


def _form(proxy: ProxyProcess, **fields: Any) -> httpx.Response:
    """``curl -F`` as a user would: every field a text part, the image a file part."""
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        data={"model": FLARE, "prompt": "wave hello", **fields},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )


def test_a_multipart_gif_edit_goes_through_the_proxy(proxy, fake):
    answer = _form(proxy, output_format="gif", frame_count="5", size="1024x1024", quality="low")
    assert answer.status_code == 200, answer.text
    assert fake.requests[-1].fields["frame_count"] == "5"
    gif = Image.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"])))
    assert gif.n_frames == 5
    assert answer.headers["x-tracking-cost-source"] == "usage"
    assert Decimal(answer.headers["x-tracking-response-cost"]) == Decimal("0.008599")
    row = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    assert row["cost_source"] == "usage" and Decimal(str(row["cost_usd"])) == Decimal("0.008599")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"output_format": "gif", "frame_count": "30"}, "frame_count"),
        ({"output_format": "gif", "frame_count": "6x"}, "frame_count"),
        ({"frame_duration_ms": "200"}, "frame_duration_ms"),
        ({"output_format": "gif", "frame_duration_ms": "655351"}, "frame_duration_ms"),
        ({"output_format": "svg"}, "output_format"),
        ({"output_format": "bmp"}, "output_format"),
    ],
)
def test_a_broken_multipart_gif_edit_is_an_openai_shaped_400(proxy, fake, fields, param):
    hits = fake.hits
    answer = _form(proxy, **fields)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fake.hits == hits


def test_the_official_client_generates_an_svg_recorded_as_an_estimate(proxy):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.images.with_raw_response.generate(
            model=SUNBURST, prompt="an icon", size="1024x1024", quality="low", output_format="svg"
        )
    assert base64.b64decode(raw.parse().data[0].b64_json or "").startswith(b"<svg")
    assert raw.headers["x-tracking-cost-source"] == "estimate"
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.00601")
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert row["cost_source"] == "estimate" and row["price_ref"].startswith(SVG_AUTHORING_REF)
    assert Decimal(str(row["cost_usd"])) == Decimal("0.00601")


def test_an_svg_from_a_deployment_known_by_its_base_model_is_an_estimate_too(proxy):
    # It was recorded as the whole bill (cost_source "custom"): the family was looked up by
    # the deployment's own name alone.
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.images.with_raw_response.generate(
            model="svg-azure", prompt="an icon", quality="low", output_format="svg"
        )
    assert base64.b64decode(raw.parse().data[0].b64_json or "").startswith(b"<svg")
    assert raw.headers["x-tracking-cost-source"] == "estimate"
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert row["cost_source"] == "estimate"
    assert row["price_ref"] == f"{SVG_AUTHORING_REF}:custom:azure/my-svg-deployment->{SUNBURST}"


def test_the_official_client_edits_a_gif_with_extra_body(proxy, fake):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        result = client.images.edit(
            model=FLARE,
            image=("in.png", PNG, "image/png"),
            prompt="wave",
            output_format="gif",  # type: ignore[arg-type]  # newer than the client's types
            extra_body={"frame_count": 3, "frame_duration_ms": 40},
        )
    assert fake.requests[-1].fields["frame_duration_ms"] == "40"
    gif = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert gif.n_frames == 3 and gif.info["duration"] == 40


@pytest.mark.parametrize(
    ("output_format", "content_type"), [("gif", "image/gif"), ("svg", "image/svg+xml")]
)
def test_url_answers_serve_gif_and_svg_as_what_they_are(proxy, fake, output_format, content_type):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        result = client.images.generate(
            model=SUNBURST,
            prompt="an icon",
            output_format=output_format,  # type: ignore[arg-type]
            response_format="url",
        )
    url = result.data[0].url
    assert url is not None and f".{output_format}?" in url
    served = httpx.get(url, timeout=10)
    upstream = base64.b64decode(fake.state.responses[-1]["data"][0]["b64_json"])
    assert served.status_code == 200 and served.content == upstream
    assert served.headers["content-type"] == content_type
    if output_format == "svg":  # markup that may hold scripts: never run on the proxy's origin
        assert "sandbox" in served.headers["content-security-policy"]
        assert served.headers["x-content-type-options"] == "nosniff"
