"""A URL answer's row and headers say what was answered, however the storing ends.

Two endings besides the ones ``tests/test_url_answers_qa.py`` and
``tests/test_url_answer_cancelled_while_storing.py`` cover:

* the call is cancelled before its images are stored (during the upstream attempt): nothing was
  answered, so its row says ``"response_format": "none"`` and ``"url_fallback": "cancelled"``,
  as a call cancelled while storing does (it said ``url``, as asked);
* the store raises something that is not one of its own errors (here, while it mints a URL):
  the answer is the paid images as base64 with ``x-tracking-url-fallback: store_failed`` and the
  row says ``b64_json`` / ``store_failed``, the exception logged once (the answer was base64
  with no header while the row said ``url``).

The proxy's app is driven in this process through ASGI (as a server would), with the fake
upstreams on loopback and a local image store in the test's folder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, TroubleUpstream, one_deployment_config
from tests.test_url_answer_cancelled_while_storing import (
    _scope_and_body,
    cancel_when,
    receive_then_stay,
)
from tracking.config import parse_config
from tracking.proxy.app import ProxyApp, create_app
from tracking.proxy.image_store import LocalImageStore
from tracking.testing import FakeOpenAI, recording


def _app(api_base: str, tmp_path: Path) -> ProxyApp:
    config = one_deployment_config(
        api_base,
        model_name="gpt-image-2",
        max_retries=0,
        general_settings={
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
            "image_store": {"path": str(tmp_path / "images")},
        },
    )
    return create_app(parse_config(config))


def _close(app: ProxyApp) -> None:
    app.accounts.store.close()
    app.dispatcher.close()  # type: ignore[attr-defined]


def test_a_call_cancelled_before_its_images_are_stored_records_that_nothing_was_answered(
    tmp_path: Path,
) -> None:
    with TroubleUpstream() as trouble:
        app = _app(trouble.url("slow/30"), tmp_path)
        scope, body = _scope_and_body()
        sent: list[dict[str, Any]] = []

        async def call() -> None:
            # cancelled while the upstream has the request
            await cancel_when(app, scope, body, trouble.started, sent)

        try:
            with recording() as recorder:
                asyncio.run(call())
        finally:
            _close(app)
    assert sent == []  # nothing was answered
    (event,) = recorder.events
    assert event.error_type == "cancelled"
    assert event.metadata["response_format"] == "none"
    assert event.metadata["url_fallback"] == "cancelled"
    assert not list((tmp_path / "images").glob("*.png"))  # nothing was stored either


class _UnmintableStore(LocalImageStore):
    """A store whose writes work and whose URLs cannot be made: a method that raises what no
    store error handling expects (as a presigning client's bug or a credentials fault)."""

    def presigned_url(self, name: str, expires: int) -> str | None:
        raise RuntimeError("the store's client broke while minting a URL")


def test_a_store_raising_an_unexpected_exception_falls_back_to_base64_consistently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        app = _app(fake.url, tmp_path)
        assert isinstance(app.image_store, LocalImageStore)
        app.image_store = _UnmintableStore(app.image_store.settings)
        scope, body = _scope_and_body()
        sent: list[dict[str, Any]] = []

        async def call() -> None:
            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive_then_stay(body), send)

        try:
            with recording() as recorder, caplog.at_level(logging.WARNING):
                asyncio.run(call())
        finally:
            _close(app)
        upstream_image = fake.state.responses[-1]["data"][0]["b64_json"]
    start, *chunks = sent
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers.get("x-tracking-url-fallback") == "store_failed"
    answer = json.loads(b"".join(c.get("body", b"") for c in chunks))
    (item,) = answer["data"]
    assert "url" not in item
    assert base64.b64decode(item["b64_json"]) == base64.b64decode(upstream_image)
    (event,) = recorder.events
    assert event.status == "success" and event.cost_usd
    assert event.metadata["response_format"] == "b64_json"
    assert event.metadata["url_fallback"] == "store_failed"
    logged = [r for r in caplog.records if r.exc_info and "minting a URL" in str(r.exc_info[1])]
    assert len(logged) == 1, caplog.text
