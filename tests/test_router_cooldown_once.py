"""A deployment's entry into cooldown is counted once per cooldown period, however many calls
fail on it at the same moment: in one process's memory, and across routers sharing Redis."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import GatheringUpstream, deployment
from tracking.integrations.prometheus import PrometheusLogger
from tracking.router import Router
from tracking.testing import FakeOpenAI

CALLS = 4
COOLDOWNS = "image_edit_deployment_cooldowns_total"


def _router(flaky_url: str, spare_url: str, **settings: object) -> Router:
    """``flaky`` wins every draw (``spare`` weighs 0) and is cooled at its first failure."""
    return Router(
        [
            deployment("images", flaky_url, id="flaky", api_key=API_KEY, weight=1),
            deployment("images", spare_url, id="spare", api_key=API_KEY, weight=0),
        ],
        allowed_fails=0,
        cooldown_time=600,
        **settings,
    )


def _counted(router: Router, registry: CollectorRegistry, seen: list[tuple[str, str]]) -> None:
    router.cooldown_observers += [PrometheusLogger(registry).record_cooldown, _seen(seen)]


def _seen(seen: list[tuple[str, str]]):
    return lambda group, dep: seen.append((group, dep))


async def _edits(router: Router, calls: int) -> list[tracking.ImageResponse]:
    return list(
        await asyncio.gather(
            *(
                router.aimage_edit(image=make_png(), prompt="a red hat", model="images")
                for _ in range(calls)
            )
        )
    )


@pytest.mark.parametrize("shared", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_calls_failing_together_cool_a_deployment_down_once(
    shared, recorder, request: pytest.FixtureRequest
):
    settings: dict[str, object] = {}
    if shared == "redis":
        settings = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    registry = CollectorRegistry()
    seen: list[tuple[str, str]] = []
    # every call is sent to flaky before any of them hears back: all fail there together
    with (
        GatheringUpstream(CALLS) as flaky,
        FakeOpenAI(api_keys=[API_KEY]) as spare,
        _router(flaky.url, spare.url, **settings) as router,
    ):
        _counted(router, registry, seen)
        responses = asyncio.run(_edits(router, CALLS))
        assert len(responses) == CALLS  # each retried on spare
        assert flaky.hits == CALLS and len(spare.requests) == CALLS
        assert "flaky" in router.cooling()
    assert seen == [("images", "flaky")]
    assert registry.get_sample_value(COOLDOWNS, {"model": "images", "deployment": "flaky"}) == 1
    assert [e.attempts for e in recorder.events] == [2] * CALLS


@pytest.mark.redis
def test_routers_sharing_redis_count_one_cooldown_between_them(recorder, redis_url, redis_prefix):
    registry = CollectorRegistry()
    seen: list[tuple[str, str]] = []
    settings = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    with (
        GatheringUpstream(CALLS) as flaky,
        FakeOpenAI(api_keys=[API_KEY]) as spare,
        _router(flaky.url, spare.url, **settings) as one,
        _router(flaky.url, spare.url, **settings) as two,
    ):
        _counted(one, registry, seen)
        _counted(two, registry, seen)

        async def both() -> None:
            await asyncio.gather(_edits(one, CALLS // 2), _edits(two, CALLS - CALLS // 2))

        asyncio.run(both())
        assert flaky.hits == CALLS
        assert "flaky" in one.cooling() and "flaky" in two.cooling()
    assert seen == [("images", "flaky")]
    assert registry.get_sample_value(COOLDOWNS, {"model": "images", "deployment": "flaky"}) == 1
