"""Gemini answers a hostile or broken upstream could send (a QA pass's findings).

* ``usageMetadata`` whose per-modality details add up to more than their total (TEXT output
  tokens above ``candidatesTokenCount``, IMAGE input tokens above ``promptTokenCount``) was
  turned into an OpenAI ``usage`` with a negative count (``image_tokens: -3880``), handed on in
  the answer (the proxy's JSON to its clients) although the call was rightly priced by
  estimate. Such a usage is not trusted: no ``usage`` is handed on, as for any untrusted count.
* A ``finishReason`` that is an object or a list (no text) raised ``TypeError`` (unhashable)
  in the parser: the flow took it for a fault of ours and estimated a whole image, dropping the
  usage the answer reported. It is read as no finish reason: a refusal, priced from its usage.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tests.scripted_upstream import PNG, Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import ContentPolicyError

IMAGE = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


def _answer(usage: dict[str, Any], *, finish: Any = "STOP", image: bool = True) -> dict[str, Any]:
    parts = [{"inlineData": {"mimeType": "image/png", "data": IMAGE}}] if image else []
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
        "usageMetadata": usage,
    }


OVERFULL = {
    "output text above the output": {
        "promptTokenCount": 5,
        "candidatesTokenCount": 1120,
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 5000}],
    },
    "input image above the input": {
        "promptTokenCount": 5,
        "candidatesTokenCount": 1120,
        "promptTokensDetails": [{"modality": "IMAGE", "tokenCount": 5000}],
    },
}


@pytest.mark.parametrize("case", sorted(OVERFULL))
def test_details_above_their_total_are_not_handed_on_as_usage(monkeypatch, upstream, case):
    events = record_events(monkeypatch)
    upstream.reply = Reply(_answer(OVERFULL[case]))
    response = tracking.image_edit(image=PNG, **upstream.params("gemini"))
    assert "usage" not in response.raw  # no negative count reaches a client
    event = events.last
    assert (event.status, event.cost_source, event.usage) == ("success", "estimate", None)


@pytest.mark.parametrize("finish", [{"reason": "SAFETY"}, ["SAFETY"]])
def test_a_finish_reason_that_is_no_text_is_a_refusal_priced_from_its_usage(
    monkeypatch, upstream, finish
):
    events = record_events(monkeypatch)
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 0, "totalTokenCount": 12}
    upstream.reply = Reply(_answer(usage, finish=finish, image=False))
    with pytest.raises(ContentPolicyError) as raised:
        tracking.image_edit(image=PNG, **upstream.params("gemini"))
    assert raised.value.__cause__ is None
    event = events.last
    assert (event.status, event.cost_source) == ("failure", "usage")
    assert event.usage is not None and event.usage.input_text_tokens == 12


DRAFT = base64.b64encode(make_png(32, 32)).decode()


def test_thought_images_are_drafts_not_the_answer(monkeypatch, upstream):
    """Gemini's image models think in images: the interim drafts come back as parts marked
    ``"thought": true`` (with ``thinkingConfig.includeThoughts``, which ``extra_body`` may set),
    the final image after them. They were answered as images: ``data[0]`` a draft, and the call
    counted three images (its per-image cost a third, its estimate without usage three images)."""
    events = record_events(monkeypatch)
    draft = {"inlineData": {"mimeType": "image/png", "data": DRAFT}, "thought": True}
    parts = [
        {"text": "planning the layout", "thought": True},
        draft,
        draft,
        {"inlineData": {"mimeType": "image/png", "data": IMAGE}},
    ]
    answer = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]
    }
    upstream.reply = Reply(answer)  # no usageMetadata: the call is estimated by its images
    response = tracking.image_edit(image=PNG, **upstream.params("gemini"))
    assert [item.b64_json for item in response.data] == [IMAGE]
    event = events.last
    assert (event.images_returned, event.cost_source) == (1, "estimate")
    assert event.cost_usd == event.cost_per_image_usd  # one image's estimate, not three


def test_an_answer_with_only_thought_images_has_no_image(monkeypatch, upstream):
    events = record_events(monkeypatch)
    draft = {"inlineData": {"mimeType": "image/png", "data": DRAFT}, "thought": True}
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 0, "thoughtsTokenCount": 300}
    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": [draft]}, "finishReason": "IMAGE_SAFETY"}
        ],
        "usageMetadata": usage,
    }
    upstream.reply = Reply(answer)
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(image=PNG, **upstream.params("gemini"))
    event = events.last
    assert (event.status, event.cost_source) == ("failure", "usage")
