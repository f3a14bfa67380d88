"""Masks converted for FLUX Fill, Stability and Recraft (``tracking.providers.masks``): a mask
that cannot be decoded whole, or one with more pixels than ``MAX_MASK_PIXELS`` (refused from its
header, however small its upload), is a ValidationError on ``mask`` before anything is sent,
through the SDK and the proxy (a 400, never a 500); what is converted keeps only its alpha."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

import tracking
from tests.conftest import make_png
from tests.proxy_support import edit_through_proxy
from tracking.images import read_image
from tracking.providers.masks import MAX_MASK_PIXELS, white_means_edit
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_recraft import FakeRecraft
from tracking.testing.fake_stability import FakeStability

KEY = "sk-mask-test-0123456789"
PNG = make_png(64, 64)


def _transparent_png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(out, format="PNG", optimize=True)
    return out.getvalue()


_GOOD = _transparent_png()
_IDAT = _GOOD.find(b"IDAT")
#: a sound header, then the pixel data cut short
TRUNCATED = _GOOD[: _IDAT + 12]
#: a sound header, the pixel data zeroed, the end chunk kept
CORRUPT = _GOOD[: _IDAT + 8] + b"\x00" * 40 + _GOOD[-12:]
#: just over the limit: a small upload that would decode to 21 million pixels
OVER = 4600


@functools.cache
def _huge() -> bytes:
    return _transparent_png(OVER, OVER)


@functools.cache
def _huge_image() -> bytes:  # FLUX takes only a mask of its image's dimensions
    return make_png(OVER, OVER)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeBFL(api_keys=[KEY], polls=0) as bfl,
        FakeStability(api_keys=[KEY]) as stability,
        FakeRecraft(api_keys=[KEY]) as recraft,
    ):
        yield {"black_forest_labs": bfl, "stability": stability, "recraft": recraft}


MODELS = ["black_forest_labs/flux-kontext-pro", "stability/inpaint", "recraft/recraftv3"]


def _sent(fakes: dict[str, Any], model: str) -> int:
    fake = fakes[model.split("/", 1)[0]]
    return len(fake.jobs) if isinstance(fake, FakeBFL) else len(fake.requests)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("kind", "rule"),
    [("truncated", "malformed"), ("corrupt", "malformed"), ("too many pixels", "dimensions")],
)
def test_a_bad_mask_is_refused_before_sending(fakes, model, kind, rule):
    api_base = fakes[model.split("/", 1)[0]].url
    image, mask = {
        "truncated": (PNG, TRUNCATED),
        "corrupt": (PNG, CORRUPT),
        "too many pixels": (_huge_image(), _huge()),
    }[kind]
    before = _sent(fakes, model)
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(
            image=image, mask=mask, prompt="a hat", model=model, api_base=api_base, api_key=KEY
        )
    assert caught.value.param == "mask" and caught.value.rule == rule
    assert _sent(fakes, model) == before  # nothing reached the upstream


def test_the_pixel_limit_is_read_from_the_header():
    assert len(_huge()) < 1024 * 1024 < OVER * OVER  # the upload is small, the pixels are not
    width = 4096
    height = MAX_MASK_PIXELS // width
    at_limit = read_image(_transparent_png(width, height), param="mask")
    assert Image.open(io.BytesIO(white_means_edit(at_limit))).size == (width, height)
    over = read_image(_transparent_png(width, height + 1), param="mask")
    with pytest.raises(tracking.ValidationError, match="more than the 20,971,520") as caught:
        white_means_edit(over)
    assert caught.value.rule == "dimensions"


def _reference(mask: bytes) -> list[int]:
    """What the mask means, read the plain way: white where its alpha is 0."""
    with Image.open(io.BytesIO(mask)) as image:
        alpha = image.convert("RGBA").getchannel("A")
    return [255 if value == 0 else 0 for value in alpha.tobytes()]


def _saved(image: Image.Image, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, **options)
    return out.getvalue()


def _masks() -> dict[str, bytes]:
    rgba = Image.new("RGBA", (8, 4), (10, 20, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 4, 4))
    rgba.putpixel((5, 1), (1, 2, 3, 128))
    la = rgba.convert("LA")
    palette = rgba.convert("RGB").convert("P")
    palette.putpixel((0, 0), 7)
    keyed = Image.new("RGB", (8, 4), (9, 9, 9))
    keyed.paste((1, 2, 3), (0, 0, 2, 4))
    grey = Image.new("L", (8, 4), 5)
    grey.paste(200, (0, 0, 3, 4))
    return {
        "rgba": _saved(rgba, format="PNG"),
        "la": _saved(la, format="PNG"),
        "palette with a transparent index": _saved(palette, format="PNG", transparency=7),
        "rgb with a colour key": _saved(keyed, format="PNG", transparency=(1, 2, 3)),
        "grey with a colour key": _saved(grey, format="PNG", transparency=200),
        "opaque rgb": _saved(keyed, format="PNG"),
        "jpeg": _saved(keyed, format="JPEG"),
        "webp with alpha": _saved(rgba, format="WEBP", lossless=True),
        "gif": _saved(palette, format="GIF", transparency=7),
    }


@pytest.mark.parametrize("name", list(_masks()))
def test_each_kind_of_mask_converts_as_its_alpha_says(name):
    mask = _masks()[name]
    converted = Image.open(io.BytesIO(white_means_edit(read_image(mask, param="mask"))))
    assert converted.mode == "L"
    assert list(converted.tobytes()) == _reference(mask)


def test_a_mask_in_another_format_is_refused():
    bmp = _saved(Image.new("RGBA", (8, 8)), format="BMP")
    with pytest.raises(tracking.ValidationError) as caught:
        white_means_edit(read_image(bmp, param="mask"))
    assert caught.value.param == "mask" and caught.value.rule == "malformed"


@pytest.mark.parametrize("kind", ["truncated", "too many pixels"])
def test_the_proxy_answers_a_bad_mask_with_a_400(fakes, tmp_path, kind):
    import openai

    params = {"model": "stability/inpaint", "api_key": KEY, "api_base": fakes["stability"].url}
    with pytest.raises(openai.BadRequestError) as caught:
        edit_through_proxy(
            tmp_path,
            "sd",
            params,
            image=("in.png", PNG, "image/png"),
            mask=("mask.png", TRUNCATED if kind == "truncated" else _huge(), "image/png"),
            prompt="a hat",
        )
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "mask"
