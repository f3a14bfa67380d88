"""Latency-based routing and a deployment that fails every call: "never measured, so tried
first" sent every call to it first (a failure records no latency), in one process and through
Redis. A deployment that failed within the failure window now comes after the measured ones."""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY, make_png
from tracking.router import MemoryState, RedisState, Router
from tracking.testing import FakeOpenAI


def _deployment(id: str, api_base: str) -> dict[str, object]:
    params = {"model": "gpt-image-2", "api_base": api_base, "api_key": API_KEY}
    return {"model_name": "images", "litellm_params": params, "model_info": {"id": id}}


@pytest.mark.parametrize("shared", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_failing_deployment_is_not_tried_first_as_never_measured(
    shared, recorder, request: pytest.FixtureRequest
):
    state = (
        RedisState(
            request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix")
        )
        if shared == "redis"
        else MemoryState()
    )
    with (
        FakeOpenAI(api_keys=[API_KEY], faults=["status=500;times=always"]) as failing,
        FakeOpenAI(api_keys=[API_KEY]) as healthy,
        Router(
            [_deployment("failing", failing.url), _deployment("healthy", healthy.url)],
            routing_strategy="latency-based-routing",
            allowed_fails=100,  # no cooldown: the strategy alone keeps it away
            state=state,
        ) as router,
    ):
        for _ in range(6):
            router.image_edit(image=make_png(), prompt="a red hat", model="images")
        snapshot = router.state.snapshot(["failing", "healthy"])
    assert failing.hits == 1  # tried once (first, or once healthy was measured), then last
    assert len(healthy.requests) == 6
    assert snapshot.failures == {"failing": 1} and snapshot.latency_ms["failing"] == ()
    assert [e.status for e in recorder.events] == ["success"] * 6
