"""A FLUX job the provider accepted is billed whatever happens after: a job that never
finishes, polls that keep failing, a result that cannot be downloaded. Such a call is recorded
with an estimated cost (never $0 from the table), and a router never submits it again on another
deployment, even when the result URL answers 404 (an expired result: an unreadable answer, not a
missing model)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tracking.errors import APIResponseError, APITimeoutError
from tracking.router import Router
from tracking.testing.app_thread import AppThread
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
MODEL = "black_forest_labs/flux-kontext-pro"


class ExpiredResult:
    """A BFL-like API whose jobs are Ready at once but whose result URL answers 404."""

    def __init__(self) -> None:
        self.submissions = 0
        app = web.Application()
        app.router.add_post("/v1/{model}", self._submit)
        app.router.add_get("/v1/get_result", self._poll)
        app.router.add_get("/sample.png", self._sample)
        self.thread = AppThread(app)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _submit(self, request: web.Request) -> web.Response:
        await request.read()
        self.submissions += 1
        return web.json_response({"id": "j1", "polling_url": f"{self.url}/v1/get_result?id=j1"})

    async def _poll(self, request: web.Request) -> web.Response:
        sample = f"{self.url}/sample.png"
        return web.json_response({"id": "j1", "status": "Ready", "result": {"sample": sample}})

    async def _sample(self, request: web.Request) -> web.Response:
        return web.json_response({"detail": "Not Found"}, status=404)

    def __enter__(self) -> ExpiredResult:
        self.port = self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.stop()


@pytest.fixture
def expired() -> Iterator[ExpiredResult]:
    with ExpiredResult() as server:
        yield server


def test_a_job_that_never_finishes_is_recorded_with_an_estimated_cost(monkeypatch):
    events = record_events(monkeypatch)
    with FakeBFL(api_keys=[BFL_KEY], polls=2) as bfl, pytest.raises(APITimeoutError):
        tracking.image_edit(
            image=make_png(),
            prompt="a hat",
            model=MODEL,
            api_base=bfl.url,
            api_key=BFL_KEY,
            timeout=1.5,
            extra_headers={"x-fake-fault": "code=never"},
        )
    tracking.flush()
    event = events.last
    assert event.status == "failure" and event.error_type == "timeout"
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > 0


def test_a_result_that_cannot_be_downloaded_is_billed_and_not_submitted_again(monkeypatch, expired):
    events = record_events(monkeypatch)
    router = Router(
        [
            {
                "model_name": "flux",
                "litellm_params": {"model": MODEL, "api_base": expired.url, "api_key": BFL_KEY},
                "model_info": {"id": name},
            }
            for name in ("a", "b")
        ],
        num_retries=2,
    )
    with pytest.raises(APIResponseError):
        router.image_edit(image=make_png(), prompt="a hat", model="flux")
    assert expired.submissions == 1  # the job was billed: not submitted to "b" nor again
    assert router.cooling() == {}  # the deployment is fine: only the result had expired
    tracking.flush()
    event = events.last
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > 0
