"""The strategies that measure deployments and one that fails every call: it ends its calls at
once and records no latency and no tokens, so it looked never measured (latency-based), the
least busy (least-busy) or the least used (usage-based), and every call went to it first. A
deployment that failed within the failure window now comes after those that did not."""

from __future__ import annotations

import asyncio

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import GatheringUpstream
from tests.services import REDIS_TIMEOUT
from tracking.router import MemoryState, RedisState, Router
from tracking.testing import FakeOpenAI

ALWAYS_500 = ["status=500;times=always"]


def _deployment(id: str, api_base: str) -> dict[str, object]:
    params = {"model": "gpt-image-2", "api_base": api_base, "api_key": API_KEY}
    return {"model_name": "images", "litellm_params": params, "model_info": {"id": id}}


def _edit(router: Router) -> tracking.ImageResponse:
    return router.image_edit(image=make_png(), prompt="a red hat", model="images")


def _router(strategy: str, failing_url: str, healthy_url: str, state) -> Router:
    return Router(
        [_deployment("failing", failing_url), _deployment("healthy", healthy_url)],
        routing_strategy=strategy,
        allowed_fails=100,  # no cooldown: the strategy alone keeps the failing one away
        state=state,
    )


def _fail_once_on(failing_url: str, state) -> None:
    """One call fails on ``failing`` (a router of its own on the same state)."""
    with (
        Router([_deployment("failing", failing_url)], num_retries=0, state=state) as alone,
        pytest.raises(tracking.InternalServerError),
    ):
        _edit(alone)


@pytest.mark.parametrize("shared", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_latency_based_does_not_try_a_failing_deployment_first_as_never_measured(
    shared, recorder, request: pytest.FixtureRequest
):
    state = (
        RedisState(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            socket_timeout=REDIS_TIMEOUT,
        )
        if shared == "redis"
        else MemoryState()
    )
    with (
        FakeOpenAI(api_keys=[API_KEY], faults=ALWAYS_500) as failing,
        FakeOpenAI(api_keys=[API_KEY]) as healthy,
        _router("latency-based-routing", failing.url, healthy.url, state) as router,
    ):
        for _ in range(6):
            _edit(router)
        snapshot = router.state.snapshot(["failing", "healthy"])
    assert failing.hits == 1  # tried once (first, or once healthy was measured), then last
    assert len(healthy.requests) == 6
    assert snapshot.failures == {"failing": 1} and snapshot.latency_ms["failing"] == ()
    assert [e.status for e in recorder.events] == ["success"] * 6


def test_usage_based_does_not_prefer_a_failing_deployment_as_least_used(recorder):
    state = MemoryState()
    with (
        FakeOpenAI(api_keys=[API_KEY], faults=ALWAYS_500) as failing,
        FakeOpenAI(api_keys=[API_KEY]) as healthy,
        _router("usage-based-routing", failing.url, healthy.url, state) as router,
    ):
        _fail_once_on(failing.url, state)
        with Router([_deployment("healthy", healthy.url)], state=state) as alone:
            _edit(alone)  # healthy has used tokens this minute, failing none
        for _ in range(4):
            _edit(router)
    assert failing.hits == 1  # the seeding call's only
    assert [e.deployment_id for e in recorder.events[-4:]] == ["healthy"] * 4


def test_least_busy_does_not_prefer_a_failing_deployment_as_least_busy(recorder):
    calls = 4
    state = MemoryState()
    # healthy holds every call until all of them are in: it is the busy one meanwhile
    with (
        FakeOpenAI(api_keys=[API_KEY], faults=ALWAYS_500) as failing,
        GatheringUpstream(calls, status=200) as healthy,
        _router("least-busy", failing.url, healthy.url, state) as router,
    ):
        _fail_once_on(failing.url, state)

        async def together() -> None:
            await asyncio.gather(
                *(
                    router.aimage_edit(image=make_png(), prompt="a red hat", model="images")
                    for _ in range(calls)
                )
            )

        asyncio.run(together())
        assert failing.hits == 1  # the seeding call's only
        assert healthy.hits == calls
    assert [(e.deployment_id, e.attempts) for e in recorder.events[-calls:]] == [
        ("healthy", 1)
    ] * calls
