"""A Stability answer with ``finish_reason: CONTENT_FILTERED`` is a billed generation (a QA
pass's finding).

Stability documents CONTENT_FILTERED as "successful generation, however the output violated our
content moderation policy and has been blurred as a result" (the ``ImageJSONResponse`` schema
of its OpenAPI description, as generated into the tryAGI/StabilityAI client, read 2026-12-06),
and bills per successful generation. The call is still a ``ContentPolicyError`` (the caller
gets no usable image), but it was recorded as not billed, $0: it is now estimated at the
operation's per-image price (the operation that ran: inpaint for an outpaint with a mask).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import make_half_mask, make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import ContentPolicyError

PNG = make_png(64, 64)
FILTERED = {"image": base64.b64encode(PNG).decode(), "finish_reason": "CONTENT_FILTERED", "seed": 7}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.mark.parametrize(
    ("model", "mask", "price"),
    [
        ("stability/inpaint", True, Decimal("0.05")),
        ("stability/erase", True, Decimal("0.05")),
        ("stability/outpaint", False, Decimal("0.04")),
        ("stability/outpaint", True, Decimal("0.05")),  # runs as inpaint
    ],
)
def test_a_filtered_generation_is_a_refusal_priced_as_the_generation_it_was(
    monkeypatch, upstream, model, mask, price
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(FILTERED)
    extra = {"mask": make_half_mask()} if mask else {}
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(image=PNG, **upstream.params("stability", model=model), **extra)
    event = events.last
    assert (event.status, event.error_type) == ("failure", "content_policy")
    assert (event.cost_usd, event.cost_source) == (price, "estimate")


def test_a_filtered_answer_without_its_image_is_billed_too(monkeypatch, upstream):
    events = record_events(monkeypatch)
    upstream.reply = Reply({"image": "", "finish_reason": "CONTENT_FILTERED"})
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(image=PNG, mask=make_half_mask(), **upstream.params("stability"))
    assert (events.last.cost_usd, events.last.cost_source) == (Decimal("0.05"), "estimate")
