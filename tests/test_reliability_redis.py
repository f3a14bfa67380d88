"""A Redis outage under concurrent load: a private ``redis-server`` (never the machine's shared
one) holds the router's state and is killed while calls are in flight. As docs/routing.md documents,
the router warns once, goes on with local state, and no call fails; every call is one event."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import tracking
from tracking import Router

from .conftest import make_png
from .router_support import StubUpstream, deployment
from .test_reliability_callbacks import Recorder
from .test_router_redis import private_redis  # noqa: F401 - a fixture, used by name

pytestmark = pytest.mark.redis
WAVE = 24


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(tracking, "callbacks", [recorder])
    return recorder


def test_killing_redis_under_load_fails_no_call(private_redis, recorder, caplog) -> None:  # noqa: F811
    process, url = private_redis
    with StubUpstream(delay=0.05) as one, StubUpstream(delay=0.05) as two:
        model_list = [
            deployment("images", one.url, id="one"),
            deployment("images", two.url, id="two"),
        ]
        with Router(model_list, redis_url=url, routing_strategy="least-busy") as router:

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
                after = await wave()
                return [*before, *during, *after]

            started = time.monotonic()
            with caplog.at_level(logging.WARNING, "tracking.router"):
                ids = asyncio.run(scenario())
            took = time.monotonic() - started
            assert router.state.degraded  # type: ignore[attr-defined]
        assert tracking.flush(10)
    assert took < 20, f"{took:.1f} s for {3 * WAVE} calls"
    assert len(set(ids)) == 3 * WAVE
    seen = {key.split(":", 1)[1]: n for key, n in recorder.seen.items()}
    assert seen == dict.fromkeys(ids, 1)
    assert one.hits > 0 and two.hits > 0  # still load-balanced on local state
    assert caplog.text.count("Redis unavailable") == 1
