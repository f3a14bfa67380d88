"""An upstream that answers something unusable where the image should be: a FLUX result URL that
serves an HTML page or has expired (404), a Gemini ``inlineData`` that is not base64 of an image.
Each is an ``APIResponseError`` (never an image passed on, never a 404 that says the model is not
there), recorded with its cost since the work was billed, and the proxy answers 502. Everything
runs against the fake upstreams on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tracking
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, write_config
from tests.recorder import record_events
from tracking.errors import APIResponseError
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_gemini import FakeGemini

BFL_KEY = "bfl-test-key-0123456789abcdef"
GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
FLUX = "black_forest_labs/flux-kontext-pro"
PNG = make_png(64, 64)


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=0) as server:
        yield server


@pytest.mark.parametrize(
    ("fault", "status"),
    [("code=html_result", 200), ("code=expired", 404)],
)
def test_a_flux_result_that_is_no_image_is_unreadable_billed_and_not_submitted_again(
    monkeypatch, bfl, fault, status
):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(APIResponseError) as caught:
        tracking.image_edit(
            image=PNG,
            prompt="a hat",
            model=FLUX,
            api_base=bfl.url,
            api_key=BFL_KEY,
            max_retries=2,
            extra_headers={"x-fake-fault": fault},
        )
    assert caught.value.status_code == status
    assert len(bfl.jobs) == before + 1  # the job ran and was billed: submitted once
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.images_returned == 0
    assert event.cost_source == "estimate"  # the job's price, flagged as an estimate
    assert event.cost_usd is not None and event.cost_usd > 0


@pytest.fixture(scope="module")
def broken_upstreams() -> Iterator[dict[str, str]]:
    """Upstreams that answer every call with a broken result, by public model name."""
    with (
        FakeBFL(api_keys=[BFL_KEY], polls=0, faults=["code=expired"]) as expired,
        FakeBFL(api_keys=[BFL_KEY], polls=0, faults=["code=html_result"]) as html,
        FakeGemini(api_keys=[GEMINI_KEY], faults=["code=bad_base64"]) as gemini,
    ):
        yield {"flux-expired": expired.url, "flux-html": html.url, "gemini-broken": gemini.url}


@pytest.fixture(scope="module")
def proxy(
    broken_upstreams: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("unusable-results")
    models = {"flux-expired": (FLUX, BFL_KEY), "flux-html": (FLUX, BFL_KEY)}
    models["gemini-broken"] = ("gemini/gemini-3.1-flash-image", GEMINI_KEY)
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": model,
                        "api_key": key,
                        "api_base": broken_upstreams[name],
                    },
                }
                for name, (model, key) in models.items()
            ],
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


@pytest.mark.parametrize("model", ["flux-expired", "flux-html", "gemini-broken"])
def test_the_proxy_answers_an_unusable_result_with_502_not_the_result_urls_404(proxy, model):
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat"},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response"
    assert response.headers["x-should-retry"] == "false"  # billed: a retry would pay again
    assert response.headers["x-tracking-request-id"]
