"""``moderation`` on an edit: the SDK and the proxy agree.

OpenAI's images.edit reference lists ``moderation`` (``low`` or ``auto``) for the GPT image
models, as images.generate does. The SDK refused ``image_edit(moderation=...)`` as a
generation-only parameter while the proxy sent a multipart ``moderation`` field upstream
unchecked (any value, to any model). Both now check it with the model's rules and send it.
Every call goes over loopback to the fake OpenAI upstream, the proxy in a real ``tracking
serve`` subprocess driven by the official ``openai`` client and by ``curl -F``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import ProxyProcess, ledger_row, same_name_config
from tests.services import require_tool
from tracking.testing import FakeOpenAI
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_gemini import FakeGemini
from tracking.testing.fake_xai import FakeXAI

MASTER_KEY = "sk-master-edit-moderation-0123456789"
PROMPT = "add a hat"


def test_the_sdk_sends_an_edits_moderation_upstream(fake, upstream, recorder):
    response = tracking.image_edit(
        image=make_png(), prompt=PROMPT, model="gpt-image-2", moderation="low", **upstream
    )
    assert fake.requests[-1].path == "/v1/images/edits"
    assert fake.requests[-1].fields["moderation"] == "low"
    assert response.cost_usd is not None and response.cost_usd > 0
    (event,) = recorder.events
    assert event.status == "success"


def test_the_sdk_checks_an_edits_moderation_with_the_models_rules(fake, upstream, recorder):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as wrong:
        tracking.image_edit(
            image=make_png(), prompt=PROMPT, model="gpt-image-2", moderation="off", **upstream
        )
    assert wrong.value.param == "moderation"
    with pytest.raises(tracking.UnsupportedParamsError) as unsupported:
        tracking.image_edit(
            image=make_png(256, 256), prompt=PROMPT, model="dall-e-2", moderation="low", **upstream
        )
    assert unsupported.value.param == "moderation"
    assert fake.hits == hits  # nothing was sent


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("edit-moderation-proxy")
    config = same_name_config(folder, ("gpt-image-2", "dall-e-2"), fake.url, MASTER_KEY)
    with ProxyProcess(config) as process:
        yield process


def test_the_proxy_sends_an_edits_moderation_and_bills_it(proxy, fake):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.images.with_raw_response.edit(
            model="gpt-image-2",
            image=("in.png", make_png(), "image/png"),
            prompt=PROMPT,
            extra_body={"moderation": "low"},
        )
    assert raw.parse().data[0].b64_json
    assert fake.requests[-1].fields["moderation"] == "low"
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert row["status"] == "success"
    assert Decimal(str(row["cost_usd"])) == Decimal(raw.headers["x-tracking-response-cost"])


@pytest.mark.parametrize(
    ("model", "value", "status"), [("gpt-image-2", "off", 400), ("dall-e-2", "low", 400)]
)
def test_the_proxy_refuses_a_moderation_the_model_does_not_take(proxy, fake, model, value, status):
    hits = fake.hits
    image = make_png(256, 256) if model == "dall-e-2" else make_png()
    with (
        openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as refused,
    ):
        client.images.edit(
            model=model,
            image=("in.png", image, "image/png"),
            prompt=PROMPT,
            extra_body={"moderation": value},
        )
    assert refused.value.status_code == status
    body = refused.value.body
    assert isinstance(body, dict) and body.get("param") == "moderation"
    assert fake.hits == hits  # refused before the upstream, so never billed


def test_curl_dash_f_moderation_reaches_the_upstream(proxy, fake, tmp_path):
    require_tool("curl", "curl")
    image = tmp_path / "in.png"
    image.write_bytes(make_png())
    fields = ("model=gpt-image-2", f"image=@{image}", f"prompt={PROMPT}", "moderation=auto")
    command = ["curl", "-s", "-H", f"Authorization: Bearer {MASTER_KEY}"]
    for field in fields:
        command += ["-F", field]
    answer = subprocess.run(
        [*command, f"{proxy.url}/v1/images/edits"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(answer.stdout)["data"][0]["b64_json"]
    assert fake.requests[-1].fields["moderation"] == "auto"


@pytest.mark.parametrize(
    ("model", "fake_kind"),
    [
        ("gemini/gemini-9-flash-image", FakeGemini),
        ("black_forest_labs/flux-9-pro", FakeBFL),
        ("xai/grok-imagine-image-pro", FakeXAI),
    ],
)
def test_a_provider_without_a_moderation_field_refuses_it_for_a_model_of_no_family(
    model, fake_kind
):
    """A model the family table does not know (a newer one) gets only its provider's checks:
    Gemini's, BFL's and xAI's APIs have no field for OpenAI's ``moderation``, which was dropped
    without a word while the event recorded it as applied."""
    with fake_kind(api_keys=[API_KEY]) as other:
        with pytest.raises(tracking.UnsupportedParamsError) as refused:
            tracking.image_edit(
                image=make_png(),
                prompt=PROMPT,
                model=model,
                moderation="low",
                api_key=API_KEY,
                api_base=other.url,
            )
        assert refused.value.param == "moderation"
        assert other.jobs == {} if fake_kind is FakeBFL else other.requests == []
