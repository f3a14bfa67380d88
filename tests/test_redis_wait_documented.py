"""docs/operations.md says how long a call waits on a Redis still away, as the proxy builds them.

It said "the call that tries it waits up to a second" for the counters and the router's state
alike; the router's exchanges are bounded by its 0.25 s ``socket_timeout``, the counters' by 1 s.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tracking.proxy.accounts import _counters
from tracking.proxy.shared_counters import RedisCounters
from tracking.router import RedisState, Router

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
URL = "redis://127.0.0.1:9/0"  # never reached: the clients connect on first use


def _redis_paragraph() -> str:
    text = " ".join(OPERATIONS.read_text(encoding="utf-8").split())
    found = re.search(r"\*\*If Redis is down\*\*.*?Never a 500\.", text)
    assert found is not None
    return found.group(0)


def test_the_documented_waits_are_the_bounds_the_proxy_uses() -> None:
    counters = _counters(URL)
    assert isinstance(counters, RedisCounters)
    deployment = {"model_name": "m", "litellm_params": {"model": "gpt-image-2", "api_key": "k"}}
    router = Router(model_list=[deployment], redis_url=URL)
    try:
        assert isinstance(router.state, RedisState)
        bounds = (counters.socket_timeout, router.state.socket_timeout)
    finally:
        router.close()
        asyncio.run(counters.aclose())
    assert bounds == (1.0, 0.25)
    paragraph = _redis_paragraph()
    assert "waits up to a second" not in paragraph
    assert "at most 1 s for the budget and rpm counters" in paragraph
    assert "at most 0.25 s for the router's state, the router's `socket_timeout`" in paragraph
