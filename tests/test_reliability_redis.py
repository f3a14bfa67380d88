"""A Redis outage under concurrent load: a private ``redis-server`` (never the machine's shared
one) holds the router's state and is killed while calls are in flight. As docs/routing.md documents,
the router warns once, goes on with local state, and no call fails; every call is one event."""

from __future__ import annotations

import asyncio
import logging

import pytest

import tracking
from tracking import Router
from tracking.router import RedisState

from .conftest import make_png
from .router_support import StubUpstream, deployment
from .services import REDIS_TIMEOUT
from .test_reliability_callbacks import Recorder
from .test_router_redis import private_redis  # noqa: F401 - a fixture, used by name

pytestmark = pytest.mark.redis
WAVE = 24


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(tracking, "callbacks", [recorder])
    return recorder


def test_killing_redis_under_load_fails_no_call(
    private_redis,  # noqa: F811
    recorder,
    caplog,
    monkeypatch,
) -> None:
    process, url = private_redis
    # One outage, however slowly a loaded machine makes the calls: after the default 5 s Redis
    # is tried again, and that failure starts (and warns of) another.
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "3600")
    with StubUpstream(delay=0.05) as one, StubUpstream(delay=0.05) as two:
        model_list = [
            deployment("images", one.url, id="one"),
            deployment("images", two.url, id="two"),
        ]
        # the first wave's exchanges reach Redis, not a timeout of a loaded machine's; a killed
        # server refuses at once
        state = RedisState(url, socket_timeout=REDIS_TIMEOUT)
        with Router(model_list, state=state, routing_strategy="least-busy") as router:

            async def wave() -> list[str]:
                calls = [
                    router.aimage_edit(image=make_png(16, 16), prompt="p", model="images")
                    for _ in range(WAVE)
                ]
                return [r.request_id for r in await asyncio.gather(*calls)]

            async def scenario() -> list[str]:
                before = await wave()
                # Kill Redis while the second wave is in flight.
                second = asyncio.ensure_future(wave())
                await asyncio.sleep(0)
                process.kill()
                await asyncio.to_thread(process.wait, 10)
                during = await second
                failures = state.outage.failures
                after = await wave()
                # Redis is left alone for the retry interval: no call of the third wave tried it
                # (each call paying for the dead server is what made the waves slow)
                assert state.outage.failures == failures
                return [*before, *during, *after]

            with caplog.at_level(logging.WARNING, "tracking.router"):
                ids = asyncio.run(scenario())
            assert router.state.degraded  # type: ignore[attr-defined]
        assert tracking.flush(60)
    assert len(set(ids)) == 3 * WAVE
    seen = {key.split(":", 1)[1]: n for key, n in recorder.seen.items()}
    assert seen == dict.fromkeys(ids, 1)
    assert one.hits > 0 and two.hits > 0  # still load-balanced on local state
    assert caplog.text.count("Redis unavailable") == 1
