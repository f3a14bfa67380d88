"""Gemini answers without a usable image are billed for the tokens their ``usageMetadata``
reports (Google bills by token count and exempts only requests failing with HTTP 400 or 500:
https://ai.google.dev/gemini-api/docs/billing, read 2026-12-04). A safety block stays a
``ContentPolicyError`` and a text-only answer or a broken image an ``APIResponseError``, but the
call's event records the usage and is priced from it, never $0 and never a whole-image estimate.
Everything runs against the fake Gemini upstream on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tracking.errors import APIResponseError, ContentPolicyError
from tracking.testing.app_thread import AppThread
from tracking.testing.fake_gemini import INPUT_IMAGE_TOKENS, THOUGHTS_TOKENS, FakeGemini

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
MODEL = "gemini/gemini-3.1-flash-image"
PROMPT = "add a red hat"  # 13 characters: 4 text tokens in the fake's convention
PROMPT_TOKENS = 4
#: gemini-3.1-flash-image's prices in tracking/pricing/prices.json, USD per 1M tokens
INPUT, TEXT_OUT, IMAGE_OUT = Decimal("0.50"), Decimal("3.00"), Decimal("60.00")
MILLION = Decimal(1_000_000)
#: what the prompt and the one input image cost
PROMPT_COST = (PROMPT_TOKENS + INPUT_IMAGE_TOKENS) * INPUT / MILLION


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _edit(api_base: str, fault: str | None = None, **params: Any) -> None:
    if fault is not None:
        params["extra_headers"] = {"x-fake-fault": fault}
    tracking.image_edit(
        image=make_png(64, 64),
        prompt=PROMPT,
        model=MODEL,
        api_base=api_base,
        api_key=GEMINI_KEY,
        **params,
    )


@pytest.mark.parametrize(
    ("fault", "output_tokens", "cost"),
    [
        ("code=blocked", 0, PROMPT_COST),  # refused before generating: the prompt alone
        ("code=image_safety", THOUGHTS_TOKENS, PROMPT_COST + THOUGHTS_TOKENS * TEXT_OUT / MILLION),
    ],
)
def test_a_safety_block_is_a_content_policy_error_priced_from_the_tokens_it_reports(
    monkeypatch, gemini, fault, output_tokens, cost
):
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        _edit(gemini.url, fault)
    event = events.last
    assert event.status == "failure" and event.error_type == "content_policy"
    assert event.images_returned == 0
    assert event.usage is not None
    assert event.usage.input_image_tokens == INPUT_IMAGE_TOKENS
    assert event.usage.output_tokens == output_tokens
    assert event.cost_source == "usage"
    assert event.cost_usd == cost and cost > 0
    assert event.price_ref is not None and "gemini-3.1-flash-image" in event.price_ref


def test_a_text_only_answer_is_unreadable_and_priced_from_its_usage_not_an_image_estimate(
    monkeypatch, gemini
):
    events = record_events(monkeypatch)
    with pytest.raises(APIResponseError, match="no image"):
        _edit(gemini.url, "code=text_only")
    event = events.last
    assert event.error_type == "invalid_response" and event.http_status == 200
    reply_tokens = 6  # "I can't make that edit." in the fake's convention
    assert event.usage is not None and event.usage.output_tokens == reply_tokens
    assert event.cost_source == "usage"
    assert event.cost_usd == PROMPT_COST + reply_tokens * TEXT_OUT / MILLION


@pytest.mark.parametrize("fault", ["code=bad_base64", "code=html_image"])
def test_an_inline_image_that_is_not_base64_of_an_image_is_refused_and_billed(
    monkeypatch, gemini, fault
):
    events = record_events(monkeypatch)
    with pytest.raises(APIResponseError, match="not base64 of an image"):
        _edit(gemini.url, fault)
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.images_returned == 0
    # The image was made and billed: the 1K image's 1,120 output tokens, from the usage.
    assert event.cost_source == "usage"
    assert event.cost_usd == PROMPT_COST + 1120 * IMAGE_OUT / MILLION


def test_a_block_after_a_lost_attempt_costs_its_usage_plus_the_lost_attempts_estimate(
    monkeypatch, gemini
):
    """The first attempt times out once sent (it may have been billed: estimated), the retry is
    blocked (billed by its usage): the call costs both, not the estimate alone."""
    from tracking.pricing import estimate_call_cost

    gemini.inject("latency=2;times=1")
    gemini.inject("code=blocked;times=1")
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        # the retry's answer must come within the timeout (0.5 s was near what a loaded machine
        # took); the first attempt's comes after 2 s, past it whatever the machine
        _edit(gemini.url, timeout=1.5, max_retries=1)
    event = events.last
    assert event.attempts == 2
    lost = estimate_call_cost(MODEL, None, None, 1, prompt_chars=len(PROMPT), input_images=1).usd
    assert lost is not None and lost > 0
    assert event.cost_source == "estimate"
    assert event.cost_usd == PROMPT_COST + lost


def _blocked(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], drops: int = 0, **params: Any
) -> Any:
    """The event of a call whose upstream answers 200 with ``answer`` (a refusal), after
    closing the connection on the first ``drops`` requests once read (answers lost)."""
    return _answered(monkeypatch, answer, drops, ContentPolicyError, **params)


def _answered(
    monkeypatch: pytest.MonkeyPatch,
    answer: dict[str, Any],
    drops: int = 0,
    raises: type[Exception] | None = None,
    **params: Any,
) -> Any:
    """The event of a call whose upstream answers 200 with ``answer`` after ``drops`` lost
    answers; the call raises ``raises`` (None: it succeeds)."""
    hits = itertools.count()

    async def generate(request: web.Request) -> web.Response:
        await request.read()
        if next(hits) < drops and request.transport is not None:
            request.transport.close()
            return web.Response(status=499)
        return web.json_response(answer, headers={"x-request-id": "up-blocked-1"})

    app = web.Application()
    app.router.add_post("/v1beta/models/{target}", generate)
    server = AppThread(app)
    port = server.start()
    events = record_events(monkeypatch)
    try:
        if raises is None:
            _edit(f"http://127.0.0.1:{port}", **params)
        else:
            with pytest.raises(raises):
                _edit(f"http://127.0.0.1:{port}", **params)
    finally:
        server.stop()
    return events.last


def test_a_block_that_reports_only_a_total_is_estimated_never_zero(monkeypatch):
    """``usageMetadata`` with ``totalTokenCount`` alone says tokens were billed but not which:
    the call is estimated (flagged), not priced at $0 from empty counts."""
    event = _blocked(
        monkeypatch,
        {"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"totalTokenCount": 9}},
    )
    assert event.usage is not None and event.usage.total_tokens == 9
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > 0


@pytest.mark.parametrize(
    "answer",
    [
        {"promptFeedback": {"blockReason": "SAFETY"}},  # refused before generating
        {"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": []}}]},
    ],
)
def test_a_block_without_usage_metadata_is_estimated_from_its_input_never_zero(monkeypatch, answer):
    """A refusal answered with HTTP 200 and no ``usageMetadata`` was recorded as not billed
    ($0, ``failed-call:not-billed``), but Google bills every answer that is not an HTTP 400 or
    500 error. It is estimated (flagged) from its input: no image was made, so no output."""
    from tracking.pricing.estimate import INPUT_IMAGE_TOKENS as ALLOWED_IMAGE_TOKENS

    event = _blocked(monkeypatch, answer)
    assert event.status == "failure" and event.error_type == "content_policy"
    assert event.upstream_request_id == "up-blocked-1"
    assert event.usage is None and event.cost_source == "estimate"
    # one token per prompt character and the allowance for the one input image, input prices
    assert event.cost_usd == (len(PROMPT) + ALLOWED_IMAGE_TOKENS) * INPUT / MILLION
    assert event.price_ref is not None and "gemini-3.1-flash-image" in event.price_ref


def test_a_lost_attempt_is_still_estimated_when_the_retry_is_a_refusal_priced_by_estimate(
    monkeypatch,
):
    """The first attempt's answer is lost (maybe billed: estimated), the retry is refused with
    no ``usageMetadata`` (estimated from its input). The call costs both estimates: the lost
    attempt's was dropped, taken for the refusal's own (the call was under-recorded ~130x)."""
    from tracking.pricing import estimate_call_cost

    answer = {"promptFeedback": {"blockReason": "SAFETY"}}
    refusal = _blocked(monkeypatch, answer).cost_usd
    event = _blocked(monkeypatch, answer, drops=1, max_retries=1)
    assert event.attempts == 2
    lost = estimate_call_cost(MODEL, None, None, 1, prompt_chars=len(PROMPT), input_images=1).usd
    assert refusal is not None and lost is not None and lost > refusal > 0
    assert event.cost_source == "estimate"
    assert event.cost_usd == refusal + lost


@pytest.mark.parametrize("candidates", ["1120", None], ids=["a-string", "missing"])
def test_an_image_whose_usage_leaves_out_its_tokens_is_estimated(monkeypatch, candidates):
    """An image came back, but ``candidatesTokenCount`` is a string or missing and only
    thinking tokens are counted: it was priced from those 200 text tokens ($0.0006, labelled
    usage); the image's own tokens are not in the usage, so the call is estimated."""
    import base64

    image = base64.b64encode(make_png(32, 32)).decode()
    metadata: dict[str, Any] = {"promptTokenCount": 300, "thoughtsTokenCount": 200}
    if candidates is not None:
        metadata["candidatesTokenCount"] = candidates
    answer = {
        "candidates": [
            {
                "content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": image}}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": metadata,
    }
    event = _answered(monkeypatch, answer)
    assert event.status == "success" and event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > Decimal("0.03")  # an image's worth
