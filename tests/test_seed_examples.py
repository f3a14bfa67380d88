"""The seed's four SDK examples, each against the fake upstream over loopback.

Where the real API would refuse a parameter the seed passes (``response_format="url"`` and
``size="512x512"`` for a GPT image model), a test asserts the SDK's clear error, and another runs
the corrected call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import tracking
from tests.conftest import make_png


@pytest.fixture
def image_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in ("original_image", "mask_image", "portrait"):
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(make_png(128, 128))
    return paths


def test_basic_image_edit(fake, upstream, image_files):
    with open(image_files["original_image"], "rb") as image:
        response = tracking.image_edit(
            model="gpt-image-1",
            image=image,
            prompt="Add a red hat to the person in the image",
            n=1,
            size="1024x1024",
            **upstream,
        )
    assert len(response.data) == 1
    assert response.data[0].b64_json
    assert response.size == "1024x1024"
    assert response.usage is not None and response.usage.output_tokens == 1056
    sent = fake.requests[-1]
    assert sent.fields == {
        "model": "gpt-image-1",
        "prompt": "Add a red hat to the person in the image",
        "n": "1",
        "size": "1024x1024",
    }
    assert [f[:3] for f in sent.files] == [("image", "original_image.png", "image/png")]


def test_mask_example_as_written_is_refused_before_the_network(fake, upstream, image_files):
    """The seed asks gpt-image-1 for 512x512 url output: both are refused, in one error."""
    before = fake.hits
    with (
        open(image_files["original_image"], "rb") as image,
        open(image_files["mask_image"], "rb") as mask,
        pytest.raises(tracking.ValidationError) as caught,
    ):
        tracking.image_edit(
            model="gpt-image-1",
            image=image,
            mask=mask,
            prompt="Replace the background with a beach scene",
            n=2,
            size="512x512",
            response_format="url",
            **upstream,
        )
    assert caught.value.param == "size"
    assert [(v.param, v.rule) for v in caught.value.violations] == [
        ("size", "enum"),
        ("response_format", "unsupported"),
    ]
    assert "got '512x512'" in str(caught.value)
    assert "drop_params=True" in str(caught.value)
    assert fake.hits == before


def test_mask_example_with_only_response_format_wrong_is_an_unsupported_param(
    upstream, image_files
):
    with pytest.raises(tracking.UnsupportedParamsError) as caught:
        tracking.image_edit(
            model="gpt-image-1",
            image=image_files["original_image"],
            mask=image_files["mask_image"],
            prompt="Replace the background with a beach scene",
            n=2,
            size="1024x1024",
            response_format="url",
            **upstream,
        )
    assert caught.value.param == "response_format"
    assert caught.value.rule == "unsupported"


def test_mask_example_corrected(fake, upstream, image_files):
    with (
        open(image_files["original_image"], "rb") as image,
        open(image_files["mask_image"], "rb") as mask,
    ):
        response = tracking.image_edit(
            model="gpt-image-1",
            image=image,
            mask=mask,
            prompt="Replace the background with a beach scene",
            n=2,
            size="1024x1024",
            **upstream,
        )
    assert len(response.data) == 2
    assert {f[0] for f in fake.requests[-1].files} == {"image", "mask"}


def test_mask_example_with_drop_params_drops_response_format(fake, upstream, image_files):
    response = tracking.image_edit(
        model="gpt-image-1",
        image=image_files["original_image"],
        mask=image_files["mask_image"],
        prompt="Replace the background with a beach scene",
        n=2,
        size="1024x1024",
        response_format="url",
        drop_params=True,
        **upstream,
    )
    assert len(response.data) == 2
    assert "response_format" not in fake.requests[-1].fields


def test_async_example(fake, upstream, image_files):
    async def edit_image():
        with open(image_files["original_image"], "rb") as image:
            return await tracking.aimage_edit(
                model="gpt-image-1",
                image=image,
                prompt="Make the image look like a painting",
                n=1,
                size="1024x1024",
                response_format="b64_json",
                **upstream,
            )

    response = asyncio.run(edit_image())
    assert len(response.data) == 1
    # b64_json is what GPT image models return anyway: accepted, and not sent.
    assert "response_format" not in fake.requests[-1].fields


def test_custom_parameters_example_corrected(fake, upstream, image_files):
    with open(image_files["portrait"], "rb") as image:
        response = tracking.image_edit(
            model="gpt-image-1",
            image=image,
            prompt="Add sunglasses and a smile",
            n=3,
            size="1024x1024",
            user="user-123",
            timeout=60,
            extra_headers={"Custom-Header": "value"},
            **upstream,
        )
    assert len(response.data) == 3
    sent = fake.requests[-1]
    assert sent.headers["Custom-Header"] == "value"
    assert sent.fields["user"] == "user-123"
    assert sent.fields["n"] == "3"


def test_custom_parameters_example_as_written_names_the_parameter(upstream, image_files):
    with pytest.raises(tracking.ValidationError, match="response_format"):
        tracking.image_edit(
            model="gpt-image-1",
            image=image_files["portrait"],
            prompt="Add sunglasses and a smile",
            n=3,
            size="1024x1024",
            response_format="url",
            user="user-123",
            timeout=60,
            extra_headers={"Custom-Header": "value"},
            **upstream,
        )


def test_dall_e_2_returns_urls_the_fake_serves(fake, upstream):
    import httpx

    response = tracking.image_edit(
        model="dall-e-2",
        image=make_png(256, 256),
        prompt="Add a beautiful sunset in the background",
        n=2,
        size="512x512",
        response_format="url",
        **upstream,
    )
    urls = [item.url for item in response.data]
    assert len(urls) == 2 and all(urls)
    assert fake.requests[-1].fields["response_format"] == "url"
    fetched = httpx.get(urls[0])
    assert fetched.status_code == 200
    assert fetched.content.startswith(b"\x89PNG")
