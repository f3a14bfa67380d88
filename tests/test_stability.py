"""Stability AI edits against the fake: each operation, the mask converted and sent to inpaint,
costs per operation, the content filter, error mapping, and the proxy with the official client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image

import tracking
from tests.conftest import make_half_mask, make_png
from tests.proxy_support import edit_through_proxy
from tests.recorder import record_events
from tracking.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentPolicyError,
    ValidationError,
)
from tracking.testing.fake_stability import FakeStability

KEY = "sk-stability-test-0123456789"
PNG = make_png(64, 64)


@pytest.fixture(scope="module")
def stability() -> Iterator[FakeStability]:
    with FakeStability(api_keys=[KEY]) as server:
        yield server


@pytest.fixture
def upstream(stability: FakeStability) -> dict[str, str]:
    return {"api_base": stability.url, "api_key": KEY}


def test_a_masked_edit_runs_as_inpaint_with_stabilitys_mask(monkeypatch, stability, upstream):
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=PNG,
        mask=make_half_mask(),
        prompt="a beach",
        model="stability/search-and-replace",
        **upstream,
    )
    sent = stability.requests[-1]
    assert sent.operation == "inpaint" and sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.fields["prompt"] == "a beach" and sent.files["image"] == PNG
    mask = Image.open(io.BytesIO(sent.files["mask"]))
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0  # white = edit
    assert base64.b64decode(response.data[0].b64_json or "").startswith(b"\x89PNG")
    assert response.cost_usd == Decimal("0.05")  # priced as inpaint, the operation that ran
    assert events.last.provider == "stability"


@pytest.mark.parametrize(
    ("model", "extra", "cost"),
    [
        ("stability/erase", {}, Decimal("0.05")),
        ("stability/search-and-replace", {"search_prompt": "the dog"}, Decimal("0.05")),
        ("stability/outpaint", {"left": 64}, Decimal("0.04")),
    ],
)
async def test_each_operation_is_priced_as_itself(stability, upstream, model, extra, cost):
    response = await tracking.aimage_edit(
        image=PNG, prompt="a cat", model=model, extra_body=extra, **upstream
    )
    sent = stability.requests[-1]
    assert sent.operation == model.split("/", 1)[1]
    assert ("prompt" in sent.fields) is (sent.operation != "erase")
    for name, value in extra.items():
        assert sent.fields[name] == str(value)
    assert response.cost_usd == cost


@pytest.mark.parametrize(
    ("params", "param", "said"),
    [
        ({"n": 2}, "n", "makes 1 image per call, got 2"),
        ({"image": [PNG, PNG, PNG]}, "image", "takes 1 image, got 3"),
    ],
)
def test_more_images_than_one_in_or_out_are_refused_before_sending(
    stability, upstream, params, param, said
):
    # Stability's endpoints take one image and make one: the rest was dropped without a word.
    before = len(stability.requests)
    with pytest.raises(tracking.ValidationError, match=said) as caught:
        tracking.image_edit(
            **{"image": PNG, "prompt": "a cat", **params}, model="stability/erase", **upstream
        )
    assert caught.value.param == param
    assert len(stability.requests) == before


def test_stabilitys_own_errors_keep_their_name(stability, upstream):
    with pytest.raises(BadRequestError, match="search_prompt: cannot be empty") as caught:
        tracking.image_edit(
            image=PNG,
            prompt="a cat",
            model="stability/search-and-replace",
            extra_body={"search_prompt": ""},
            **upstream,
        )
    assert caught.value.code == "bad_request"
    with pytest.raises(AuthenticationError):
        tracking.image_edit(
            image=PNG,
            prompt="a cat",
            model="stability/inpaint",
            api_base=stability.url,
            api_key="sk-wrong-000000000",
        )


@pytest.mark.parametrize(
    ("fault", "cost", "source"),
    [
        # CONTENT_FILTERED is "successful generation, however the output violated our content
        # moderation policy and has been blurred": made and billed (5 credits), by estimate
        ("code=filtered", Decimal("0.05"), "estimate"),
        ("code=moderation", Decimal(0), "table"),  # a 403 before any generation: not billed
    ],
)
def test_the_content_filter_is_a_content_policy_error(
    monkeypatch, stability, upstream, fault, cost, source
):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(
            image=PNG,
            prompt="a cat",
            model="stability/inpaint",
            extra_headers={"x-fake-fault": fault},
            **upstream,
        )
    event = events.last
    assert event.error_type == "content_policy"
    assert (event.cost_usd, event.cost_source) == (cost, source)


def test_an_unknown_operation_is_refused_before_sending(stability, upstream):
    before = len(stability.requests)
    with pytest.raises(ConfigurationError, match="not an edit operation"):
        tracking.image_edit(image=PNG, prompt="a cat", model="stability/upscale", **upstream)
    assert len(stability.requests) == before


def test_the_official_client_through_the_proxy(stability, tmp_path):
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    image.write_bytes(PNG)
    mask.write_bytes(make_half_mask())
    params = {"model": "stability/inpaint", "api_key": KEY, "api_base": stability.url}
    raw = edit_through_proxy(
        tmp_path, "sd-inpaint", params, image=image, mask=mask, prompt="a beach"
    )
    assert raw.parse().data[0].b64_json
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.05")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"size": "1536x1024"}, "size"),
        ({"quality": "high"}, "quality"),
        ({"background": "transparent"}, "background"),
        ({"output_compression": 50, "output_format": "webp"}, "output_compression"),
        ({"response_format": "url"}, "response_format"),
        ({"output_format": "gif"}, "output_format"),
        ({"model": "stability/search-and-replace"}, "search_prompt"),
    ],
)
def test_what_stability_has_no_field_for_is_refused_before_sending(
    stability, upstream, params, param
):
    """Each was dropped without a word (a URL asked, base64 answered) or refused upstream after
    the upload, while the event recorded it as applied."""
    before = len(stability.requests)
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(
            image=PNG, prompt="a cat", **{"model": "stability/inpaint", **params}, **upstream
        )
    assert caught.value.param == param
    assert len(stability.requests) == before
    if param not in ("output_format", "search_prompt"):  # drop_params drops what has no field
        response = tracking.image_edit(
            image=PNG, prompt="a cat", model="stability/inpaint", drop_params=True,
            **params, **upstream,
        )  # fmt: skip
        assert response.data[0].b64_json


def test_the_proxy_answers_a_parameter_stability_lacks_with_a_400(stability, tmp_path):
    import openai

    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    params = {"model": "stability/inpaint", "api_key": KEY, "api_base": stability.url}
    with pytest.raises(openai.BadRequestError) as caught:
        edit_through_proxy(tmp_path, "st", params, image=image, prompt="a cat", size="1024x1024")
    assert caught.value.status_code == 400 and "size" in str(caught.value)
