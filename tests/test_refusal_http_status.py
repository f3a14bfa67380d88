"""A refusal the upstream answered with HTTP 200 (a Gemini safety block, billed) is recorded
with the status it came with, 200, in the event and the ledger, not the 400 its
``ContentPolicyError`` carries (which the proxy still answers its client); its cost stays what
docs/gemini.md says: the usage the answer reported."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

import tracking
from tests.conftest import make_png
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tests.recorder import record_events
from tracking.errors import ContentPolicyError
from tracking.testing.fake_gemini import INPUT_IMAGE_TOKENS, FakeGemini

KEY = "AIzaFakeGeminiKey0123456789abcdef"
MODEL = "gemini/gemini-3.1-flash-image"
PROMPT = "add a red hat"  # 4 text tokens in the fake's convention
#: the prompt and the one input image at gemini-3.1-flash-image's input price ($0.50 / 1M)
PROMPT_COST = (4 + INPUT_IMAGE_TOKENS) * Decimal("0.50") / Decimal(1_000_000)


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[KEY]) as server:
        yield server


def test_a_safety_block_answered_200_is_recorded_as_200(monkeypatch, gemini):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError) as caught:
        tracking.image_edit(
            image=make_png(64, 64),
            prompt=PROMPT,
            model=MODEL,
            api_base=gemini.url,
            api_key=KEY,
            extra_headers={"x-fake-fault": "code=blocked"},
        )
    assert caught.value.status_code == 400  # the error as OpenAI's client would see it
    event = events.last
    assert event.error_type == "content_policy"
    assert event.http_status == 200  # what the upstream answered, and billed
    assert event.cost_source == "usage" and event.cost_usd == PROMPT_COST


def test_an_error_answer_keeps_its_own_status(monkeypatch, gemini):
    events = record_events(monkeypatch)
    with pytest.raises(tracking.APIError):
        tracking.image_edit(
            image=make_png(64, 64),
            prompt=PROMPT,
            model=MODEL,
            api_base=gemini.url,
            api_key=KEY,
            max_retries=0,
            extra_headers={"x-fake-fault": "status=503"},
        )
    assert events.last.http_status == 503


def test_the_proxy_answers_400_and_its_ledger_records_200(gemini, tmp_path):
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": "nano",
                    "litellm_params": {"model": MODEL, "api_key": KEY, "api_base": gemini.url},
                }
            ],
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as proxy:
        gemini.inject("code=blocked;times=1")  # the proxy passes no x-fake-fault header on
        answer = httpx.post(
            f"{proxy.url}/v1/images/edits",
            data={"model": "nano", "prompt": PROMPT},
            files={"image": ("in.png", make_png(64, 64), "image/png")},
            timeout=60,
        )
        assert answer.status_code == 400, answer.text
        row = ledger_row(proxy, answer.headers["x-tracking-request-id"])
    assert row["error_type"] == "content_policy" and row["http_status"] == 200
    assert Decimal(str(row["cost_usd"])) == PROMPT_COST
