"""A Stability answer whose ``image`` is not base64 of an image is unusable (a QA pass's finding).

Stability's reader passed on any non-empty ``image`` string as the edited image: base64 of an HTML
error page, or text that is not base64 at all, reached the caller as a success billed from the
table. It is now an ``APIResponseError`` (the proxy answers 502), estimated as any unreadable
2xx answer, as Gemini's, xAI's and Recraft's images are checked.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image

import tracking
from tests.conftest import edit_either, make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import APIResponseError

PNG = make_png(64, 64)
NOT_IMAGES = {
    "html page": base64.b64encode(b"<html><body>502 Bad Gateway</body></html>").decode(),
    "plain text": base64.b64encode(b"Internal error, please retry").decode(),
    "not base64": "this is not base64 at all!!",
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("case", sorted(NOT_IMAGES))
def test_an_image_that_is_not_one_is_unusable_and_estimated(monkeypatch, upstream, case, use_async):
    events = record_events(monkeypatch)
    upstream.reply = Reply({"image": NOT_IMAGES[case], "finish_reason": "SUCCESS", "seed": 1})
    with pytest.raises(APIResponseError, match="not base64 of an image"):
        edit_either(use_async, image=PNG, user="alice", **upstream.params("stability"))
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.cost_source == "estimate" and event.cost_usd == Decimal("0.05")
    assert event.images_returned == 0


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_a_real_image_is_passed_on(monkeypatch, upstream, output_format):
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format=output_format.upper())
    encoded = base64.b64encode(out.getvalue()).decode()
    upstream.reply = Reply({"image": encoded, "finish_reason": "SUCCESS", "seed": 1})
    response = tracking.image_edit(
        image=PNG, output_format=output_format, **upstream.params("stability")
    )
    assert response.data[0].b64_json == encoded
