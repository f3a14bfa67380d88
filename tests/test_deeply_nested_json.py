"""An upstream body nested deeper than JSON readers can take (a QA pass's finding).

``[`` two hundred thousand times, then as many ``]``: Python's parser raises ``RecursionError``,
which no provider's reader caught (they caught ``ValueError``), so a billed 2xx answer came out
of the SDK as a raw Python error, was recorded as not billed ($0) and the proxy answered 500;
the same body in an error answer hid the 503 (no retry) or the 400. A body the parser takes but
that nests a few hundred levels (``copy.deepcopy`` of it, what callbacks receive, raises
``RecursionError`` too) is as unreadable. Each is now an ``APIResponseError`` ("not JSON"),
estimated like any unreadable 2xx answer; in an error answer, the error its status means.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import tracking
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
from tracking.errors import APIResponseError, BadRequestError, InternalServerError
from tracking.sse import ServerSentEvent
from tracking.stream_events import parse_stream_event

PNG = make_png(64, 64)
IMAGE = base64.b64encode(PNG).decode()
#: Past the parser's depth: json.loads raises RecursionError.
DEEP = b"[" * 200_000 + b"]" * 200_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_a_2xx_answer_nested_past_the_parsers_depth_is_unreadable_and_estimated(
    monkeypatch, upstream, provider
):
    events = record_events(monkeypatch)
    upstream.reply = Reply(DEEP)
    with pytest.raises(APIResponseError, match="not JSON"):
        tracking.image_edit(image=PNG, **upstream.params(provider))
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.http_status == 200
    if provider in ("compatible", "azure"):  # a compatible model or a deployment is unpriced
        assert event.cost_source == "unpriced" and event.cost_usd is None
    else:  # billed and unreadable: estimated, never "not billed" at $0
        assert event.cost_source == "estimate"
        assert event.cost_usd is not None and event.cost_usd > 0


@pytest.mark.parametrize("use_async", [False, True])
def test_a_deep_answer_is_unreadable_in_both_entry_points(monkeypatch, upstream, use_async):
    events = record_events(monkeypatch)
    upstream.reply = Reply(DEEP)
    with pytest.raises(APIResponseError):
        edit_either(use_async, image=PNG, **upstream.params("gemini"))
    assert events.last.cost_source == "estimate" and events.last.cost_usd > 0


def test_an_answer_the_parser_takes_but_nested_hundreds_deep_is_unreadable(monkeypatch, upstream):
    """Parsed, it would break the copies callbacks receive (copy.deepcopy recurses)."""
    events = record_events(monkeypatch)
    answer = json.dumps({"data": [{"b64_json": IMAGE}], "extra": None})
    body = answer.replace("null", nested(500))
    upstream.reply = Reply(body.encode())
    with pytest.raises(APIResponseError, match="not JSON"):
        tracking.image_edit(image=PNG, **upstream.params("xai"))
    assert events.last.cost_source == "estimate" and events.last.cost_usd > 0


def test_an_answer_nested_as_deep_as_allowed_is_read(monkeypatch, upstream):
    events = record_events(monkeypatch)
    extra = json.loads(nested(32))  # real answers nest under ten levels
    upstream.reply = Reply({"data": [{"b64_json": IMAGE}], "extra": extra})
    response = tracking.image_edit(image=PNG, **upstream.params("xai"))
    assert response.images_returned == 1
    assert events.last.status == "success"


def _error_params(upstream: ScriptedUpstream, provider: str, status: int) -> dict[str, object]:
    if provider == "flux":
        upstream.submission = Reply(DEEP, status)
    else:
        upstream.reply = Reply(DEEP, status)
    return upstream.params(provider, max_retries=1)


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_a_deep_503_body_is_the_503_and_is_retried(monkeypatch, upstream, provider):
    events = record_events(monkeypatch)
    try:
        with pytest.raises(InternalServerError):
            tracking.image_edit(image=PNG, **_error_params(upstream, provider, 503))
    finally:
        upstream.submission = None
    assert events.last.attempts == 2
    assert events.last.http_status == 503


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_a_deep_400_body_is_the_400(monkeypatch, upstream, provider):
    events = record_events(monkeypatch)
    try:
        with pytest.raises(BadRequestError):
            tracking.image_edit(image=PNG, **_error_params(upstream, provider, 400))
    finally:
        upstream.submission = None
    assert events.last.attempts == 1
    assert events.last.http_status == 400


def test_a_streamed_event_nested_past_the_parsers_depth_is_unreadable():
    with pytest.raises(APIResponseError, match="not JSON"):
        parse_stream_event(ServerSentEvent("image_edit.partial_image", DEEP))


@pytest.mark.parametrize("body", [DEEP, "too deep", b"\xff\xfe", b"{", b"[1,"])
def test_upstream_json_says_not_json_and_nothing_else(body):
    from tracking.response import MAX_JSON_DEPTH, NotJSON, upstream_json

    if body == "too deep":
        body = nested(MAX_JSON_DEPTH + 1).encode()
    with pytest.raises(NotJSON):
        upstream_json(body)


@pytest.mark.parametrize("body", [b"5", b'"text"', b"null", "as deep as allowed"])
def test_upstream_json_reads_what_is_json(body):
    from tracking.response import MAX_JSON_DEPTH, upstream_json

    if body == "as deep as allowed":
        body = nested(MAX_JSON_DEPTH).encode()
    assert upstream_json(body) == json.loads(body)


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("deep-json-proxy")
    served = {p: (MODELS[p], upstream.base(p)) for p in ("gemini", "stability", "flux")}
    with proxy_in_front(folder, served, max_retries=0) as process:
        yield process


@pytest.mark.parametrize("provider", ["gemini", "stability", "flux"])
def test_the_proxy_answers_a_deep_2xx_answer_with_502_and_records_an_estimate(
    upstream, proxy, provider
):
    upstream.reply = Reply(DEEP)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": provider, "prompt": "a hat", "user": "u-1"},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "server_error"
    row = ledger_row(proxy, response.headers["x-tracking-request-id"])
    assert row["status"] == "failure" and row["error_type"] == "invalid_response"
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0
    assert row["end_user"] == "u-1"
