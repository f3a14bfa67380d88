"""Masks converted for FLUX Fill, Stability and Recraft (``tracking.providers.masks``): a mask
that cannot be decoded whole is a ValidationError on ``mask`` before anything is sent, through
the SDK and the proxy (a 400, never a 500)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

import tracking
from tests.conftest import make_png
from tests.proxy_support import edit_through_proxy
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_recraft import FakeRecraft
from tracking.testing.fake_stability import FakeStability

KEY = "sk-mask-test-0123456789"
PNG = make_png(64, 64)


def _transparent_png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(out, format="PNG")
    return out.getvalue()


_GOOD = _transparent_png()
_IDAT = _GOOD.find(b"IDAT")
#: a sound header, then the pixel data cut short
TRUNCATED = _GOOD[: _IDAT + 12]
#: a sound header, the pixel data zeroed, the end chunk kept
CORRUPT = _GOOD[: _IDAT + 8] + b"\x00" * 40 + _GOOD[-12:]


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
@pytest.mark.parametrize("mask", [TRUNCATED, CORRUPT], ids=["truncated", "corrupt"])
def test_an_undecodable_mask_is_refused_before_sending(fakes, model, mask):
    api_base = fakes[model.split("/", 1)[0]].url
    before = _sent(fakes, model)
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(
            image=PNG, mask=mask, prompt="a hat", model=model, api_base=api_base, api_key=KEY
        )
    assert caught.value.param == "mask" and caught.value.rule == "malformed"
    assert _sent(fakes, model) == before  # nothing reached the upstream


def test_the_proxy_answers_an_undecodable_mask_with_a_400(fakes, tmp_path):
    import openai

    params = {"model": "stability/inpaint", "api_key": KEY, "api_base": fakes["stability"].url}
    with pytest.raises(openai.BadRequestError) as caught:
        edit_through_proxy(
            tmp_path,
            "sd",
            params,
            image=("in.png", PNG, "image/png"),
            mask=("mask.png", TRUNCATED, "image/png"),
            prompt="a hat",
        )
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "mask"
