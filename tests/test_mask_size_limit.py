"""OpenAI's images.edit reference says the mask must be "a valid PNG file, less than 4MB" (the
images themselves: under 50 MB), for every GPT image model. The SDK let masks up to 50 MB through
to OpenAI, which refuses them: each was an upload of up to 50 MB for a certain 400. Now the SDK
refuses one of 4 MB or more before sending (a ``ValidationError``, ``rule="max_bytes"``), the
proxy with an OpenAI-shaped 400, and the fake upstream as OpenAI does. Other providers keep
their own limits (FLUX Fill's 20 MB mask)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import tracking
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.proxy_support import ProxyProcess, write_config
from tracking.families import family_for
from tracking.request import parse_call
from tracking.testing import FakeOpenAI

MB = 1024 * 1024
IMAGE = make_png(64, 64)
#: A valid mask with alpha, padded past the end of the PNG to 4 MB exactly: refused.
TOO_BIG = make_half_mask() + b"\0" * (4 * MB - len(make_half_mask()))
#: One byte less: taken.
LARGEST = TOO_BIG[:-1]
MASTER_KEY = "sk-master-mask-limit"
GPT_IMAGE_MODELS = ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst", "gpt-image-1"]


@pytest.mark.parametrize("model", GPT_IMAGE_MODELS)
def test_a_mask_of_4_mb_is_refused_before_sending(fake, upstream, model):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(image=IMAGE, mask=TOO_BIG, prompt="p", model=model, **upstream)
    assert (caught.value.param, caught.value.rule) == ("mask", "max_bytes")
    assert f"mask: {model} takes files under 4 MB" in str(caught.value)
    assert fake.hits == hits


def test_a_mask_just_under_4_mb_is_sent(fake, upstream):
    response = tracking.image_edit(
        image=IMAGE, mask=LARGEST, prompt="p", model="gpt-image-2", **upstream
    )
    assert response.data and fake.requests[-1].path == "/v1/images/edits"


def test_images_keep_their_50_mb_limit():
    rule = family_for("gpt-image-2", "image_edit")
    assert rule is not None and rule.image.max_bytes == 50 * MB
    parse_call(image=IMAGE + b"\0" * (5 * MB), prompt="p", model="gpt-image-2")  # taken


def test_flux_fill_keeps_its_own_20_mb_mask_limit():
    rule = family_for("flux-kontext-pro", "image_edit")
    assert rule is not None and rule.mask is not None and rule.mask.max_bytes == 20 * MB
    parse_call(image=IMAGE, mask=TOO_BIG, prompt="p", model="black_forest_labs/flux-kontext-pro")


def _masked_edit(url: str, key: str) -> httpx.Response:
    """A multipart edit with the 4 MB mask, as ``curl -F`` sends one."""
    return httpx.post(
        url,
        headers={"Authorization": f"Bearer {key}"},
        data={"model": "gpt-image-2", "prompt": "p"},
        files=[
            ("image", ("a.png", IMAGE, "image/png")),
            ("mask", ("m.png", TOO_BIG, "image/png")),
        ],
        timeout=60,
    )


def test_the_fake_refuses_a_mask_of_4_mb_as_openai_does(fake):
    answer = _masked_edit(f"{fake.url}/images/edits", API_KEY)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "mask"


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("mask-limit-proxy")
    params = {"model": "gpt-image-2", "api_key": API_KEY, "api_base": fake.url}
    config = {
        "model_list": [{"model_name": "gpt-image-2", "litellm_params": params}],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
        },
    }
    with ProxyProcess(write_config(folder / "config.yaml", config)) as process:
        yield process


def test_the_proxy_answers_a_mask_of_4_mb_with_an_openai_shaped_400(proxy, fake):
    hits = fake.hits
    answer = _masked_edit(f"{proxy.url}/v1/images/edits", MASTER_KEY)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "mask" and error["type"] == "invalid_request_error"
    assert "under 4 MB" in error["message"]
    assert fake.hits == hits
