"""A 2xx answer with an empty ``data`` list is no success (a QA pass's finding).

An edit asks for at least one image. ``{"data": []}`` from Recraft, an OpenAI-compatible server,
Azure or OpenAI was handed on as a success with no image, while xAI's and Gemini's readers
refused it. It is now an ``APIResponseError`` for every OpenAI-shaped answer (the proxy answers
502), priced as any answer without a usable image: from the charge or the usage it reports,
else estimated.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import edit_either, make_png
from tests.proxy_support import ProxyProcess, ledger_row
from tests.recorder import record_events
from tests.scripted_upstream import (
    MODELS,
    Reply,
    ScriptedUpstream,
    proxy_in_front,
    scripted_upstream,
)
from tracking.errors import APIResponseError, ContentPolicyError

PNG = make_png(64, 64)
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 50,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


def _refused(monkeypatch, upstream, provider: str, answer: dict[str, Any], use_async=False):
    events = record_events(monkeypatch)
    upstream.reply = Reply(answer)
    with pytest.raises(APIResponseError, match="no image"):
        edit_either(use_async, image=PNG, user="u-1", **upstream.params(provider))
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.images_returned == 0 and event.http_status == 200
    return event


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("provider", ["openai", "compatible", "azure", "recraft", "xai"])
def test_an_empty_data_list_is_unusable(monkeypatch, upstream, provider, use_async):
    _refused(monkeypatch, upstream, provider, {"created": 1, "data": []}, use_async)


def test_recraft_costs_the_credits_it_reports_else_an_estimate(monkeypatch, upstream):
    event = _refused(monkeypatch, upstream, "recraft", {"created": 1, "data": [], "credits": 40})
    assert (event.cost_usd, event.cost_source) == (Decimal("0.04"), "usage")
    event = _refused(monkeypatch, upstream, "recraft", {"created": 1, "data": []})
    assert event.cost_source == "estimate" and event.cost_usd == Decimal("0.04")


def test_a_gpt_image_answer_is_priced_from_the_usage_it_reports(monkeypatch, upstream):
    event = _refused(monkeypatch, upstream, "openai", {"created": 1, "data": [], "usage": USAGE})
    assert event.cost_source == "usage" and event.usage is not None
    assert event.usage.input_text_tokens == 50
    assert event.cost_usd is not None and 0 < event.cost_usd < Decimal("0.001")


def test_an_unpriced_models_answer_that_billed_is_unpriced_never_free(monkeypatch, upstream):
    """A model no price entry covers: its answer reported usage (it was billed) but carried no
    image. Recorded as unpriced (no cost, flagged), never as a call that cost $0."""
    answer = {"created": 1, "data": [], "usage": USAGE}
    event = _refused(monkeypatch, upstream, "compatible", answer)
    assert (event.cost_usd, event.cost_source) == (None, "unpriced")
    event = _refused(monkeypatch, upstream, "compatible", {"created": 1, "data": []})
    assert (event.cost_usd, event.cost_source) == (None, "unpriced")


def test_a_gpt_image_answer_without_usage_is_estimated(monkeypatch, upstream):
    event = _refused(monkeypatch, upstream, "openai", {"created": 1, "data": []})
    assert event.cost_source == "estimate" and event.cost_usd > 0


def test_xai_still_says_moderation_withheld_the_image(monkeypatch, upstream):
    record_events(monkeypatch)
    upstream.reply = Reply({"data": [], "block_reason": "moderation"})
    with pytest.raises(ContentPolicyError):
        edit_either(False, image=PNG, **upstream.params("xai"))


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("zero-images-proxy")
    served = {p: (MODELS[p], upstream.base(p)) for p in ("recraft", "openai")}
    with proxy_in_front(folder, served, max_retries=0) as process:
        yield process


@pytest.mark.parametrize("provider", ["recraft", "openai"])
def test_the_proxy_answers_an_empty_data_list_with_502(upstream, proxy, provider):
    upstream.reply = Reply({"created": 1, "data": [], "credits": 40})
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": provider, "prompt": "a hat", "user": "u-1"},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_invalid_response"
    row = ledger_row(proxy, response.headers["x-tracking-request-id"])
    assert row["status"] == "failure" and Decimal(row["cost_usd"]) > 0
    assert row["cost_source"] == ("usage" if provider == "recraft" else "estimate")
