"""Gemini (and Vertex AI) image edits against the fake Gemini upstream: request shape, answers in
OpenAI's shape, prices by modality, error mapping, and the proxy with fallbacks. Safety blocks and
other answers without a usable image: tests/test_gemini_billed_answers.py."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import select

import tracking
from tests.conftest import make_png
from tests.loop_ticks import called_on_this_thread
from tests.proxy_support import ProxyProcess, write_config
from tests.recorder import record_events
from tracking.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    PermissionDeniedError,
    UnsupportedParamsError,
    ValidationError,
)
from tracking.families import resolution_tier, tier_side
from tracking.pricing import estimate_call_cost, find_entry
from tracking.providers.gemini import image_config
from tracking.testing import recording
from tracking.testing.fake_gemini import FakeGemini

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
PNG = make_png(64, 64)
PROMPT = "add a red hat"  # 13 characters: 4 text tokens in the fake's convention
MILLION = Decimal(1_000_000)


def input_allowance(text_and_image_price: str) -> Decimal:
    """What an estimate adds for one edit's input (the prompt's 13 characters, one input image
    allowed 1,000 tokens) at one price per 1M tokens for text and image alike (Gemini's)."""
    return (len(PROMPT) + 1000) * Decimal(text_and_image_price) / MILLION


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


@pytest.fixture
def upstream(gemini: FakeGemini) -> dict[str, str]:
    return {"api_base": gemini.url, "api_key": GEMINI_KEY}


def expected_cost(
    text_in: Decimal, image_in: Decimal, image_out: Decimal, out_tokens: int
) -> Decimal:
    """Cost by hand: 4 prompt text tokens, 258 tokens for the one input image (the fake's
    convention), ``out_tokens`` image output tokens; prices in USD per 1M tokens."""
    return (4 * text_in + 258 * image_in + out_tokens * image_out) / MILLION


# -- the request and the answer ---------------------------------------------------------------


def test_sync_edit_sends_generate_content_and_answers_in_openai_shape(
    monkeypatch, gemini, upstream
):
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", **upstream
    )
    sent = gemini.requests[-1]
    assert sent.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    parts = sent.body["contents"][0]["parts"]
    assert parts[0] == {"text": PROMPT}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == PNG
    assert sent.body["generationConfig"] == {"responseModalities": ["IMAGE"]}  # size auto
    assert response.images_returned == 1
    assert base64.b64decode(response.data[0].b64_json or "").startswith(b"\x89PNG")
    usage = response.usage
    assert usage is not None
    assert (usage.input_text_tokens, usage.input_image_tokens, usage.output_image_tokens) == (
        4,
        258,
        1120,
    )
    cost = expected_cost(Decimal("0.50"), Decimal("0.50"), Decimal("60"), 1120)
    assert cost == Decimal("0.067331")
    assert response.cost_usd == cost
    event = events.last
    assert (event.provider, event.resolved_model, event.status) == (
        "gemini",
        "gemini-3.1-flash-image",
        "success",
    )
    assert event.cost_usd == cost and event.cost_source == "usage"


async def test_a_large_image_is_encoded_off_the_event_loop(gemini, upstream):
    """Base64 in JSON costs about 16 ms per MiB: on the loop's thread a large image held every
    other request of a proxy. From 256 KiB the request is prepared in a worker thread."""
    noise = Image.frombytes("RGB", (320, 320), random.Random(7).randbytes(320 * 320 * 3))
    out = io.BytesIO()
    noise.save(out, format="PNG")  # random pixels barely compress: about 300 KB
    large = out.getvalue()
    assert len(large) >= 256 * 1024
    with called_on_this_thread("generate_content_body") as on_the_loop:
        response = await tracking.aimage_edit(
            image=large, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", **upstream
        )
    sent = gemini.requests[-1]
    assert base64.b64decode(sent.body["contents"][0]["parts"][1]["inlineData"]["data"]) == large
    assert on_the_loop == []
    assert response.images_returned == 1
    with called_on_this_thread("generate_content_body") as small_one:
        await tracking.aimage_edit(
            image=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", **upstream
        )
    assert len(small_one) == 1  # a small one is prepared where it is: no thread hop


async def test_async_edit_prices_pro_at_4k(monkeypatch, gemini, upstream):
    events = record_events(monkeypatch)
    response = await tracking.aimage_edit(
        image=PNG, prompt=PROMPT, model="gemini/gemini-3-pro-image", size="4096x4096", **upstream
    )
    config = gemini.requests[-1].body["generationConfig"]["imageConfig"]
    assert config == {"aspectRatio": "1:1", "imageSize": "4K"}
    cost = expected_cost(Decimal("2"), Decimal("2"), Decimal("120"), 2000)
    assert cost == Decimal("0.240524")
    assert response.cost_usd == cost
    assert events.last.call_type == "aimage_edit" and events.last.cost_usd == cost


def test_a_2k_landscape_size_picks_16_9_at_2k_and_its_tokens(gemini, upstream):
    response = tracking.image_edit(
        image=PNG,
        prompt=PROMPT,
        model="gemini/gemini-3.1-flash-image",
        size="2048x1152",
        **upstream,
    )
    assert gemini.requests[-1].body["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9",
        "imageSize": "2K",
    }
    assert response.cost_usd == expected_cost(Decimal("0.5"), Decimal("0.5"), Decimal("60"), 1680)


def test_without_usage_metadata_the_per_image_price_of_the_tier_applies(
    monkeypatch, gemini, upstream
):
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=PNG,
        prompt=PROMPT,
        model="gemini/gemini-3-pro-image",
        size="2048x2048",
        extra_headers={"x-fake-fault": "code=no_usage"},
        **upstream,
    )
    assert response.usage is None
    # the 2K per-image price and the input at $2 per 1M tokens, not None, not 0
    assert response.cost_usd == Decimal("0.134") + input_allowance("2")
    assert events.last.cost_source != "unpriced"


@pytest.mark.parametrize(
    ("size", "model", "expected"),
    [
        (None, "gemini-3.1-flash-image", {}),
        ("auto", "gemini-3-pro-image", {}),
        ("1024x1024", "gemini-3-pro-image", {"aspectRatio": "1:1", "imageSize": "1K"}),
        ("1536x1024", "gemini-3-pro-image", {"aspectRatio": "3:2", "imageSize": "1K"}),
        ("1024x1536", "gemini-3.1-flash-image", {"aspectRatio": "2:3", "imageSize": "1K"}),
        ("1024x4096", "gemini-3.1-flash-image", {"aspectRatio": "1:4", "imageSize": "4K"}),
        ("1920x1080", "gemini-3.1-flash-image", {"aspectRatio": "16:9", "imageSize": "2K"}),
        ("1024x1536", "gemini-2.5-flash-image", {"aspectRatio": "2:3"}),
    ],
)
def test_openai_sizes_map_to_the_nearest_aspect_ratio_and_tier(size, model, expected):
    assert image_config(size, model)[0] == expected


@pytest.mark.parametrize(
    ("size", "tier"),
    [(None, "1K"), ("auto", "1K"), ("1024x1024", "1K"), ("1920x1080", "2K"), ("1024x4096", "4K")],
)
def test_an_estimate_prices_the_tier_the_image_is_made_at(size, tier):
    # A WIDTHxHEIGHT (or no size) was estimated at the dearest tier, 4K: budgets reserved
    # more than twice what a 1K image costs. It is priced at the tier the call is billed at.
    from tracking.pricing.estimate import estimate_call_cost

    model = "gemini-3.1-flash-image"
    billed_at = image_config(size, model)[1]
    assert billed_at == tier
    assert estimate_call_cost(model, size).usd == estimate_call_cost(model, tier).usd


def test_vertex_ai_sends_the_same_body_with_a_bearer_token(monkeypatch, gemini):
    monkeypatch.setenv("VERTEXAI_PROJECT", "my-project")
    monkeypatch.setenv("VERTEXAI_LOCATION", "us-central1")
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", GEMINI_KEY)
    response = tracking.image_edit(
        image=PNG, prompt=PROMPT, model="vertex_ai/gemini-3.1-flash-image", api_base=gemini.url
    )
    sent = gemini.requests[-1]
    assert sent.path == (
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/"
        "gemini-3.1-flash-image:generateContent"
    )
    assert sent.headers["Authorization"] == f"Bearer {GEMINI_KEY}"
    assert response.cost_usd == expected_cost(Decimal("0.5"), Decimal("0.5"), Decimal("60"), 1120)


def test_the_key_comes_from_gemini_api_key_then_google_api_key(monkeypatch, gemini):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", GEMINI_KEY)
    tracking.image_edit(
        image=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", api_base=gemini.url
    )
    assert gemini.requests[-1].headers["x-goog-api-key"] == GEMINI_KEY
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ConfigurationError, match="GEMINI_API_KEY"):
        tracking.image_edit(
            image=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", api_base=gemini.url
        )


# -- rules ----------------------------------------------------------------------------------


def test_a_mask_is_refused_or_dropped_with_drop_params(gemini, upstream):
    with pytest.raises(UnsupportedParamsError, match="mask"):
        tracking.image_edit(
            image=PNG, mask=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", **upstream
        )
    before = gemini.hits
    tracking.image_edit(
        image=PNG,
        mask=PNG,
        prompt=PROMPT,
        quality="high",
        model="gemini/gemini-3.1-flash-image",
        drop_params=True,
        **upstream,
    )
    assert gemini.hits == before + 1
    assert len(gemini.requests[-1].body["contents"][0]["parts"]) == 2  # text + image, no mask


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"quality": "high"}, "quality"),
        ({"background": "transparent"}, "background"),
        ({"size": "3000x1000"}, "size"),  # wider than 21:9 for the Pro model
        ({"response_format": "url"}, "response_format"),
    ],
)
def test_what_gemini_does_not_take_is_refused_before_sending(gemini, upstream, params, param):
    before = gemini.hits
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(
            image=PNG, prompt=PROMPT, model="gemini/gemini-3-pro-image", **params, **upstream
        )
    assert param in {v.param for v in caught.value.violations}
    assert gemini.hits == before


# -- errors -----------------------------------------------------------------------------------


def test_a_bad_key_is_an_authentication_error_with_google_status(gemini):
    with pytest.raises(AuthenticationError) as caught:
        tracking.image_edit(
            image=PNG,
            prompt=PROMPT,
            model="gemini/gemini-3.1-flash-image",
            api_base=gemini.url,
            api_key="AIzaWrongKey0000000000000000000000",
        )
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "AIzaWrongKey0000000000000000000000" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, BadRequestError, "INVALID_ARGUMENT"),
        (403, PermissionDeniedError, "PERMISSION_DENIED"),
    ],
)
def test_client_errors_map_into_the_tree_and_are_not_retried(gemini, upstream, status, error, code):
    before = gemini.hits
    with pytest.raises(error) as caught:
        tracking.image_edit(
            image=PNG,
            prompt=PROMPT,
            model="gemini/gemini-3.1-flash-image",
            extra_headers={"x-fake-fault": f"status={status}"},
            **upstream,
        )
    assert caught.value.code == code and caught.value.status_code == status
    assert gemini.hits == before + 1


@pytest.mark.parametrize("status", [429, 503])
def test_resource_exhausted_and_unavailable_are_retried(monkeypatch, gemini, upstream, status):
    events = record_events(monkeypatch)
    before = gemini.hits
    gemini.inject(f"status={status};retry_after=0")
    response = tracking.image_edit(
        image=PNG, prompt=PROMPT, model="gemini/gemini-3.1-flash-image", max_retries=1, **upstream
    )
    assert gemini.hits == before + 2
    assert response.images_returned == 1
    assert events.last.attempts == 2


# -- the proxy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(gemini: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("gemini-proxy")
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": "nano-banana",
                    "litellm_params": {
                        "model": "gemini/gemini-3.1-flash-image",
                        "api_key": GEMINI_KEY,
                        "api_base": gemini.url,
                    },
                },
                {
                    "model_name": "openai-down",
                    "litellm_params": {
                        "model": "gpt-image-2",
                        "api_key": "sk-unused-0123456789",
                        "api_base": "http://127.0.0.1:9/v1",
                        "max_retries": 0,
                    },
                },
            ],
            "router_settings": {"num_retries": 0, "fallbacks": [{"openai-down": ["nano-banana"]}]},
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


def _row(proxy: ProxyProcess, request_id: str) -> dict:
    from tracking.integrations.sql import create_ledger_engine, spend_logs

    engine = create_ledger_engine(f"sqlite:///{proxy.config.parent / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            found = connection.execute(
                select(spend_logs).where(spend_logs.c.request_id == request_id)
            ).mappings()
            return dict(next(iter(found)))
    finally:
        engine.dispose()


def test_the_official_client_edits_with_gemini_through_the_proxy(proxy, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    with openai.OpenAI(base_url=proxy.url, api_key="sk-anything", max_retries=0) as client:
        raw = client.images.with_raw_response.edit(
            model="nano-banana", image=image, prompt=PROMPT, size="1024x1024"
        )
    result = raw.parse()
    assert result.data and base64.b64decode(result.data[0].b64_json or "").startswith(b"\x89PNG")
    assert result.usage is not None and result.usage.output_tokens == 1120
    cost = expected_cost(Decimal("0.5"), Decimal("0.5"), Decimal("60"), 1120)
    assert Decimal(raw.headers["x-tracking-response-cost"]) == cost
    row = _row(proxy, raw.headers["x-tracking-request-id"])
    assert row["provider"] == "gemini" and Decimal(row["cost_usd"]) == cost


def test_a_fallback_from_openai_to_gemini_is_priced_with_gemini_prices(proxy, gemini):
    before = gemini.hits
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "openai-down", "prompt": PROMPT},
        files={"image": ("a.png", PNG, "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert gemini.hits == before + 1
    body = json.loads(response.content)
    assert body["usage"]["output_tokens_details"]["image_tokens"] == 1120
    row = _row(proxy, response.headers["x-tracking-request-id"])
    assert row["model"] == "openai-down"
    assert row["provider"] == "gemini"
    assert Decimal(row["cost_usd"]) == expected_cost(
        Decimal("0.5"), Decimal("0.5"), Decimal("60"), 1120
    )


def test_retry_info_and_invalid_keys_are_read_from_googles_error_details():
    from tracking.providers.gemini import GeminiProvider

    provider = GeminiProvider()
    busy = json.dumps(
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
                ],
            }
        }
    ).encode()
    said = provider.read_error(429, busy)
    assert (said.code, said.retry_after, said.status) == ("RESOURCE_EXHAUSTED", 37.0, None)
    assert (
        provider.read_error(502, b"<html>bad gateway</html>").message == "<html>bad gateway</html>"
    )


# -- the 512 px tier of gemini-3.1-flash-image ------------------------------------------------
# gemini-3.1-flash-image's 512 px tier: asked for (``imageSize: "512"``) for a small ``size``,
# priced from its usage, and, without usage, estimated at its own price (747 output tokens at the
# table's $60 per 1M, Google's Vertex AI page), never at the 1K price; no size still means 1K.

FLASH = "gemini/gemini-3.1-flash-image"
#: 747 x $60 / 1M
PRICE_512 = Decimal("0.04482")


def test_the_table_prices_the_512_tier_at_747_tokens():
    from datetime import date

    entry = find_entry(["gemini-3.1-flash-image"], date(2026, 12, 5))
    assert entry is not None
    assert entry.per_image["standard"]["512"] == PRICE_512
    assert Decimal(747) * entry.tokens["output_image"] / 1_000_000 == PRICE_512


@pytest.mark.parametrize(
    ("size", "tier"),
    [("512x512", "512"), ("768x512", "512"), ("384x768", "512"), ("1024x1024", "1K")],
)
def test_small_sizes_ask_for_the_512_tier(size, tier):
    config, billed = image_config(size, "gemini-3.1-flash-image")
    assert config["imageSize"] == tier and billed == tier


def test_models_without_a_512_tier_keep_1k():
    assert image_config("512x512", "gemini-3-pro-image") == (
        {"aspectRatio": "1:1", "imageSize": "1K"},
        "1K",
    )
    assert tier_side("512") == 512 and tier_side("1K") == 1024 and tier_side("512K") == 524288
    assert resolution_tier(512, 512, ("1K", "2K", "4K")) == "1K"


def test_a_512_edit_is_sent_as_512_and_priced_from_its_usage(gemini, upstream):
    response = tracking.image_edit(
        image=PNG, prompt=PROMPT, model=FLASH, size="512x512", **upstream
    )
    sent = gemini.requests[-1].body["generationConfig"]["imageConfig"]
    assert sent == {"aspectRatio": "1:1", "imageSize": "512"}
    assert response.usage is not None and response.usage.output_image_tokens == 747
    # 4 text and 258 image tokens in at $0.50, 747 image tokens out at $60, per 1M
    assert response.cost_usd == (4 * Decimal("0.5") + 258 * Decimal("0.5") + 747 * 60) / 1_000_000


def test_a_512_answer_without_usage_is_estimated_at_the_512_price(gemini, upstream):
    with recording() as events:
        response = tracking.image_edit(
            image=PNG,
            prompt=PROMPT,
            model=FLASH,
            size="512x512",
            extra_headers={"x-fake-fault": "code=no_usage"},
            **upstream,
        )
    assert response.usage is None
    assert response.cost_usd == PRICE_512 + input_allowance("0.5")  # not the 1K price, $0.067
    assert events.last.cost_source == "estimate"


def test_without_a_size_the_estimate_stays_at_1k(gemini, upstream):
    response = tracking.image_edit(
        image=PNG,
        prompt=PROMPT,
        model=FLASH,
        extra_headers={"x-fake-fault": "code=no_usage"},
        **upstream,
    )
    assert "imageConfig" not in gemini.requests[-1].body["generationConfig"]
    # Gemini's default tier, not the smallest (and the input at $0.50 per 1M tokens)
    assert response.cost_usd == Decimal("0.067") + input_allowance("0.5")
    assert estimate_call_cost(FLASH).usd == Decimal("0.067")
    assert estimate_call_cost(FLASH, "512x512").usd == PRICE_512
