"""``markup`` on an edit: a transparent PNG drawn over the first image to guide the edit.

OpenAI's images.edit takes it as a multipart file for GPT Image 2.5 (and 2.6), never with a
mask, a PNG with transparent pixels of the first image's size. The SDK refused it as an unknown
keyword and the proxy answered 400 "file uploads are only accepted for image and mask". Now both
check it with the model's rules, send it as a ``markup`` file part, and bill it as one more input
image, as the upstream reports it. Every call goes over loopback to the fake OpenAI upstream
(whose own checks are written from OpenAI's documentation); the proxy runs in a real ``tracking
serve`` subprocess driven by the official ``openai`` client.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest
from PIL import Image

import tracking
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.proxy_support import ProxyProcess, ledger_row, same_name_config
from tracking.pricing.estimate import INPUT_IMAGE_TOKENS, estimate_max_cost
from tracking.testing import FakeOpenAI
from tracking.testing.fake_gemini import FakeGemini

MASTER_KEY = "sk-master-markup-0123456789abcdef"
PROMPT = "put the hat where the arrow points"
MODEL = "gpt-image-2.5-flare"
#: gpt-image-2.5-flare's packaged token prices, USD per 1M tokens
TEXT, IMAGE, OUTPUT = Decimal("5.00"), Decimal("8.00"), Decimal("30.00")
#: the fake's input image tokens per input image (tracking.testing.fake_openai)
FAKE_IMAGE_TOKENS = 323


def markup_png(width: int = 64, height: int = 64) -> bytes:
    """A transparent overlay with one opaque stroke, as a caller would draw it."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (10, 10, 30, 14))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (255, 0, 0)).save(out, format="JPEG")
    return out.getvalue()


def priced(usage: tracking.TokenUsage) -> Decimal:
    """The cost of ``usage`` at the packaged prices, by hand."""
    total = (
        usage.input_text_tokens * TEXT
        + usage.input_image_tokens * IMAGE
        + usage.output_tokens * OUTPUT
    )
    return total / Decimal(1_000_000)


def _sent_files(fake: FakeOpenAI) -> list[str]:
    return [name for name, *_ in fake.requests[-1].files]


def test_the_sdk_sends_a_markup_and_bills_it_as_an_input_image(fake, upstream, recorder):
    response = tracking.image_edit(
        image=make_png(), prompt=PROMPT, model=MODEL, markup=markup_png(), **upstream
    )
    assert _sent_files(fake) == ["image", "markup"]
    (event,) = recorder.events
    assert event.status == "success" and event.usage is not None
    assert event.usage.input_image_tokens == 2 * FAKE_IMAGE_TOKENS  # the image and the markup
    assert event.input_images == 2 and event.has_markup and not event.has_mask
    assert response.cost_usd == event.cost_usd == priced(event.usage)


async def test_aimage_edit_sends_a_markup_from_a_path(fake, upstream, recorder, tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(markup_png(96, 64))
    response = await tracking.aimage_edit(
        image=[make_png(96, 64), make_png(32, 32)],
        prompt=PROMPT,
        model="gpt-image-2.6-sunburst",
        markup=str(path),
        **upstream,
    )
    assert _sent_files(fake) == ["image[]", "image[]", "markup"]
    (event,) = recorder.events
    assert event.usage is not None
    assert event.usage.input_image_tokens == 3 * FAKE_IMAGE_TOKENS
    assert response.cost_usd == priced(event.usage)


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("gpt-image-2", tracking.UnsupportedParamsError),
        ("dall-e-2", tracking.UnsupportedParamsError),
    ],
)
def test_a_model_without_markup_refuses_it_before_sending(fake, upstream, model, kind):
    hits = fake.hits
    with pytest.raises(kind) as refused:
        tracking.image_edit(
            image=make_png(256, 256),
            prompt=PROMPT,
            model=model,
            markup=markup_png(256, 256),
            **upstream,
        )
    assert refused.value.param == "markup" and model in str(refused.value)
    assert fake.hits == hits


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        ({"markup": markup_png(), "mask": make_half_mask()}, "exclusive"),
        ({"markup": jpeg()}, "format"),
        ({"markup": make_png(alpha=False)}, "alpha"),
        ({"markup": markup_png(32, 32)}, "dimensions"),
    ],
    ids=["with-mask", "jpeg", "no-alpha", "other-size"],
)
def test_a_wrong_markup_is_a_validation_error(fake, upstream, extra, rule):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as refused:
        tracking.image_edit(image=make_png(), prompt=PROMPT, model=MODEL, **extra, **upstream)
    assert refused.value.param == "markup" and refused.value.rule == rule
    assert fake.hits == hits


def test_drop_params_drops_a_markup_the_model_does_not_take(fake, upstream):
    tracking.image_edit(
        image=make_png(),
        prompt=PROMPT,
        model="gpt-image-2",
        markup=markup_png(),
        drop_params=True,
        **upstream,
    )
    assert _sent_files(fake) == ["image"]


def test_other_providers_refuse_a_markup_unless_dropped():
    with FakeGemini(api_keys=[API_KEY]) as gemini:
        target = {"api_base": gemini.url, "api_key": API_KEY}
        with pytest.raises(tracking.UnsupportedParamsError) as refused:
            tracking.image_edit(
                image=make_png(),
                prompt=PROMPT,
                model="gemini/gemini-3.1-flash-image",
                markup=markup_png(),
                **target,
            )
        assert refused.value.param == "markup"
        assert gemini.hits == 0
        response = tracking.image_edit(
            image=make_png(),
            prompt=PROMPT,
            model="gemini/gemini-3.1-flash-image",
            markup=markup_png(),
            drop_params=True,
            **target,
        )
        assert response.data


def test_the_budget_hold_counts_a_markup_as_one_more_input_image():
    params = {"prompt": PROMPT, "image": make_png(), "quality": "high", "size": "1024x1024"}
    without = estimate_max_cost(MODEL, params)
    with_markup = estimate_max_cost(MODEL, {**params, "markup": markup_png()})
    assert without is not None and with_markup is not None
    assert with_markup - without == INPUT_IMAGE_TOKENS * IMAGE / Decimal(1_000_000)


def _post(fake: FakeOpenAI, model: str, files: list[tuple[str, tuple[str, bytes, str]]]):
    return httpx.post(
        f"{fake.url}/images/edits",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data={"model": model, "prompt": PROMPT},
        files=[("image", ("in.png", make_png(), "image/png")), *files],
        timeout=60,
    )


def test_the_fake_upstream_checks_a_markup_as_openai_documents(fake):
    markup = ("markup", ("m.png", markup_png(), "image/png"))
    assert _post(fake, MODEL, [markup]).status_code == 200
    unknown = _post(fake, "gpt-image-2", [markup])
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_parameter"
    both = _post(fake, MODEL, [markup, ("mask", ("k.png", make_half_mask(), "image/png"))])
    assert both.status_code == 400 and both.json()["error"]["param"] == "markup"
    not_png = _post(fake, MODEL, [("markup", ("m.jpg", jpeg(), "image/jpeg"))])
    assert not_png.status_code == 400 and not_png.json()["error"]["param"] == "markup"


@pytest.fixture(scope="module")
def proxy(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("markup-proxy")
    config = same_name_config(folder, (MODEL, "gpt-image-2"), fake.url, MASTER_KEY)
    with ProxyProcess(config) as process:
        yield process


def test_the_proxy_sends_a_markup_and_bills_it(proxy, fake):
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.images.with_raw_response.edit(
            model=MODEL,
            image=("in.png", make_png(), "image/png"),
            markup=("m.png", markup_png(), "image/png"),
            prompt=PROMPT,
        )
    answer = raw.parse()
    assert answer.data and answer.data[0].b64_json
    assert _sent_files(fake) == ["image", "markup"]
    assert answer.usage is not None
    assert answer.usage.input_tokens_details.image_tokens == 2 * FAKE_IMAGE_TOKENS
    row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert row["status"] == "success"
    assert Decimal(str(row["cost_usd"])) == Decimal(raw.headers["x-tracking-response-cost"])


@pytest.mark.parametrize(
    ("model", "files", "says"),
    [
        (
            "gpt-image-2",
            {"markup": ("m.png", markup_png(), "image/png")},
            "gpt-image-2 does not take a markup",
        ),
        (
            MODEL,
            {
                "markup": ("m.png", markup_png(), "image/png"),
                "mask": ("k.png", make_half_mask(), "image/png"),
            },
            "cannot be combined with mask",
        ),
        (MODEL, {"markup": ("m.jpg", jpeg(), "image/jpeg")}, "takes PNG files"),
    ],
    ids=["model-without-markup", "with-mask", "jpeg"],
)
def test_the_proxy_refuses_a_wrong_markup_as_openai_does(proxy, fake, model, files, says):
    hits = fake.hits
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(
            model=model, image=("in.png", make_png(), "image/png"), prompt=PROMPT, **files
        )
    assert refused.value.status_code == 400
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "markup"
    assert says in body["message"]
    assert fake.hits == hits


@pytest.mark.parametrize(
    "model",
    [
        "gemini/gemini-9-image",
        "xai/grok-imagine-image-pro",
        "black_forest_labs/flux-2-pro",
        "stability/inpaint",
        "recraft/recraftv3",
    ],
)
def test_providers_without_a_markup_field_refuse_it_for_models_the_table_does_not_know(model):
    """Refused while the request is prepared, before anything is sent: the address is one
    nothing listens on, so a request that went out would fail as a connection error instead."""
    with pytest.raises(tracking.UnsupportedParamsError) as refused:
        tracking.image_edit(
            image=make_png(),
            prompt=PROMPT,
            model=model,
            markup=markup_png(),
            api_base="http://127.0.0.1:9",
            api_key=API_KEY,
            max_retries=0,
        )
    assert refused.value.param == "markup"


def test_a_markup_file_is_read_once_for_every_target_of_a_router(fake, tmp_path, recorder):
    """The primary deployment's port refuses the connection; the fallback parses the call again
    and must still find the open file's bytes."""
    from tests.router_support import closed_port, primary_and_backup

    path = tmp_path / "m.png"
    path.write_bytes(markup_png())
    router = primary_and_backup(
        f"http://127.0.0.1:{closed_port()}/v1", MODEL, fake.url, "gpt-image-2.6-flare"
    )
    with path.open("rb") as markup:
        router.image_edit(image=make_png(), prompt=PROMPT, model="primary", markup=markup)
    assert _sent_files(fake) == ["image", "markup"]
    assert fake.requests[-1].files[1][3] == len(markup_png())
    assert recorder.events[-1].status == "success"


def test_a_generation_takes_no_markup(fake, upstream):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as refused:
        tracking.image_generation(prompt=PROMPT, model=MODEL, markup=markup_png(), **upstream)
    assert refused.value.param == "markup" and refused.value.rule == "unsupported"
    assert fake.hits == hits


def test_the_proxy_takes_one_markup_part(proxy, fake):
    hits = fake.hits
    markup = ("markup", ("m.png", markup_png(), "image/png"))
    answer = httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        data={"model": MODEL, "prompt": PROMPT},
        files=[("image", ("in.png", make_png(), "image/png")), markup, markup],
        timeout=60,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "markup" and "only one markup" in error["message"]
    assert fake.hits == hits
