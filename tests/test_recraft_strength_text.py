"""Recraft's ``strength`` as decimal text, as a form field through the proxy carries it (a QA
pass's finding).

The official clients send ``extra_body`` as form fields, so through the proxy ``strength``
arrives as text (``"0.3"``) and was refused as "a number from 0 to 1, got '0.3'": the documented
parameter could not be used through the proxy at all. Decimal text from 0 to 1 is now taken and
sent as it came; anything else (out of range, NaN, infinity, padded, not a number) is still a
``ValidationError(param="strength")`` before sending.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tracking
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, write_config
from tracking.errors import ValidationError
from tracking.testing.fake_recraft import FakeRecraft

KEY = "recraft-test-key-0123456789"
PNG = make_png(64, 64)
GOOD = ["0.3", "0", "1", "1.0", "0.25", ".5"]
BAD = ["5", "-0.1", "1.01", "nan", "NaN", "inf", "-inf", "", " 0.3", "0.3 ", "0_3", "abc", "1e5"]


@pytest.fixture(scope="module")
def recraft() -> Iterator[FakeRecraft]:
    with FakeRecraft(api_keys=[KEY]) as server:
        yield server


def _edit(recraft: FakeRecraft, strength: object) -> object:
    return tracking.image_edit(
        image=PNG,
        prompt="a hat",
        model="recraft/recraftv3",
        api_base=recraft.url,
        api_key=KEY,
        max_retries=0,
        extra_body={"strength": strength},
    )


@pytest.mark.parametrize("strength", GOOD)
def test_decimal_text_from_0_to_1_is_sent_as_it_came(recraft, strength):
    _edit(recraft, strength)
    assert recraft.requests[-1].fields["strength"] == strength


@pytest.mark.parametrize("strength", BAD)
def test_other_text_is_refused_before_sending(recraft, strength):
    before = len(recraft.requests)
    with pytest.raises(ValidationError) as caught:
        _edit(recraft, strength)
    assert caught.value.param == "strength"
    assert len(recraft.requests) == before


@pytest.fixture(scope="module")
def proxy(recraft: FakeRecraft, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("recraft-strength-proxy")
    deployment = {"model": "recraft/recraftv3", "api_key": KEY, "api_base": recraft.url}
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [{"model_name": "rc", "litellm_params": deployment}],
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


@pytest.mark.parametrize(("strength", "status"), [("0.3", 200), ("5", 400), ("nan", 400)])
def test_strength_through_the_proxy(recraft, proxy, strength, status):
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "rc", "prompt": "a hat", "strength": strength},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == status, response.text
    if status == 200:
        assert recraft.requests[-1].fields["strength"] == strength
    else:
        assert response.json()["error"]["param"] == "strength"
