"""The router's shared state on a real Redis Cluster of three masters
(``tests/redis_cluster_support``): its pipelines of single-key commands are split by the cluster
client per node; rpm windows, failure counts, calls in flight and cooldowns are shared as on one
server. Each state checks it never fell back to local state (which would hide a cluster error).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import make_png
from tests.redis_cluster_support import cluster_prefix, redis_cluster, redis_prefix, redis_url
from tests.router_support import ManualClock, StubUpstream, deployment
from tests.services import REDIS_TIMEOUT
from tests.test_router_redis import test_rpm_usage_is_counted_across_routers
from tracking.router import NoDeploymentAvailableError, RedisState, Router

pytestmark = pytest.mark.redis

# the fixtures this module uses, and the test of tests/test_router_redis.py it runs on the cluster
__all__ = [
    "cluster_prefix",
    "redis_cluster",
    "redis_prefix",
    "redis_url",
    "test_rpm_usage_is_counted_across_routers",
]


@pytest.fixture
def states(redis_cluster: str, cluster_prefix: str) -> Iterator[list[RedisState]]:
    made: list[RedisState] = []
    yield made
    for state in made:
        assert not state.degraded, state.outage.failures
        state.close()


@pytest.fixture
def make_state(redis_cluster, cluster_prefix, states) -> Callable[..., RedisState]:
    """A state on the cluster (``clock``: a :class:`ManualClock`'s, to stay in one minute)."""

    def state(**options: Any) -> RedisState:
        made = RedisState(
            redis_cluster, prefix=cluster_prefix, socket_timeout=REDIS_TIMEOUT, **options
        )
        states.append(made)
        return made

    return state


def test_failures_in_flight_and_cooldowns_are_shared(make_state):
    one, two = make_state(), make_state()
    assert one.record_failure("x") == 1 and one.record_failure("x") == 2
    assert two.record_failure("x") == 3  # one atomic counter for both
    assert one.begin("y", None) and two.begin("y", None)
    assert one.snapshot(["y"]).in_flight == {"y": 2}
    two.end("y")
    assert one.snapshot(["y"]).in_flight == {"y": 1}
    one.cool_down("x", 5)
    assert 4 < two.snapshot(["x", "y"]).cooling["x"] <= 5
    assert "y" not in two.snapshot(["x", "y"]).cooling
    assert one.record_failure("x") == 1  # a cooldown resets the count


async def test_async_calls_share_the_rpm_window_too(make_state):
    clock = ManualClock()  # both routers stay inside one minute
    state = functools.partial(make_state, clock=clock.time)

    with StubUpstream() as upstream:
        model_list = [deployment("images", upstream.url, id="limited", rpm=2)]
        one, two = Router(model_list, state=state()), Router(model_list, state=state())
        await one.aimage_edit(image=make_png(), prompt="p", model="images")
        await two.aimage_edit(image=make_png(), prompt="p", model="images")
        with pytest.raises(NoDeploymentAvailableError):
            await two.aimage_edit(image=make_png(), prompt="p", model="images")
        assert upstream.hits == 2
