"""A deployment picked for an attempt that is never sent gives its place in the minute's rpm back.

The route takes a deployment's rpm place when it picks it, before the request is parsed for its
model; a request refused then (its model does not take it, its settings went missing) was
never sent, yet it held the place until the minute ended: a deployment with ``rpm: 1`` in a
group of mixed models was full for the minute after a refused call, and refused the calls it
could serve. Usage counts the requests sent upstream, in the process and in Redis alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import ManualClock, deployment
from tests.services import REDIS_TIMEOUT
from tracking.router import MemoryState, RedisState, Router, Snapshot

GEMINI = "gemini/gemini-3-pro-image"  # one image per call: n=2 is refused before sending


def _state(kind: str, request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    if kind == "memory":
        return MemoryState(clock=clock.time, monotonic=clock.monotonic)
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return RedisState(url, prefix=prefix, clock=clock.time, socket_timeout=REDIS_TIMEOUT)


def _edit(router: Router, use_async: bool, **params: Any) -> tracking.ImageResponse:
    call = {"image": make_png(), "prompt": "a red hat", "model": "images", **params}
    if use_async:
        return asyncio.run(router.aimage_edit(**call))
    return router.image_edit(**call)


KINDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_a_deployment_the_request_does_not_fit_keeps_its_rpm(request, fake, kind, use_async):
    clock = ManualClock()
    gemini = {
        "model_name": "images",
        "litellm_params": {"model": GEMINI, "api_key": "AIza-test-0123456789", "rpm": 1},
        "model_info": {"id": "gem"},
    }
    openai = deployment("images", fake.url, id="oa", model="gpt-image-2", api_key=API_KEY)
    openai["litellm_params"]["weight"] = 0  # Gemini wins every draw it is free for
    state = _state(kind, request, clock)
    router = Router([gemini, openai], state=state, num_retries=0, register_prices=False)
    for _ in range(3):
        assert _edit(router, use_async, n=2)._hidden_params["deployment_id"] == "oa"
    snapshot = state.snapshot(["gem", "oa"])
    assert snapshot.rpm == {"gem": 0, "oa": 3}  # only requests sent count
    assert snapshot.in_flight == {"gem": 0, "oa": 0}


@pytest.mark.parametrize("kind", KINDS)
def test_a_deployment_whose_settings_went_missing_keeps_its_rpm(request, fake, kind, monkeypatch):
    clock = ManualClock()
    monkeypatch.setenv("AZURE_API_VERSION", "2025-04-01-preview")
    azure = deployment(
        "images", fake.base_url, id="azure", model="azure/gpt-image-2", api_key=API_KEY, rpm=1
    )
    state = _state(kind, request, clock)
    router = Router([azure], state=state, num_retries=0, register_prices=False)
    monkeypatch.delenv("AZURE_API_VERSION")
    for _ in range(2):  # refused for its setting each time, never for the rpm it does not use
        with pytest.raises(tracking.ConfigurationError, match="AZURE_API_VERSION"):
            _edit(router, False)
    assert state.snapshot(["azure"]).rpm == {"azure": 0}
    monkeypatch.setenv("AZURE_API_VERSION", "2025-04-01-preview")
    _edit(router, False)  # the setting is back: its one request of the minute goes
    assert state.snapshot(["azure"]).rpm == {"azure": 1}


class _OwnState:
    """A state of a user's own, written before ``release`` existed: the protocol's methods only
    (here kept by a MemoryState inside)."""

    def __init__(self) -> None:
        self.inner = MemoryState()
        self.ended: list[str] = []

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        return self.inner.snapshot(ids)

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        return self.inner.begin(deployment_id, rpm_limit)

    def end(self, deployment_id: str) -> None:
        self.ended.append(deployment_id)
        self.inner.end(deployment_id)

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None:
        self.inner.record_success(deployment_id, latency_ms, tokens)

    def record_failure(self, deployment_id: str) -> int:
        return self.inner.record_failure(deployment_id)

    def cool_down(self, deployment_id: str, seconds: float) -> bool:
        return self.inner.cool_down(deployment_id, seconds)

    def close(self) -> None:
        pass


def test_a_state_of_your_own_without_release_ends_the_call_unsent(fake):
    gemini = {
        "model_name": "images",
        "litellm_params": {"model": GEMINI, "api_key": "AIza-test-0123456789"},
        "model_info": {"id": "gem"},
    }
    openai = deployment("images", fake.url, id="oa", model="gpt-image-2", api_key=API_KEY)
    openai["litellm_params"]["weight"] = 0
    state = _OwnState()
    router = Router([gemini, openai], state=state, num_retries=0, register_prices=False)
    _edit(router, False, n=2)
    assert state.ended == ["gem", "oa"]  # the refused one ended all the same
    assert state.snapshot(["gem", "oa"]).in_flight == {"gem": 0, "oa": 0}
