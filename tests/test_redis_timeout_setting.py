"""``TRACKING_REDIS_TIMEOUT_SECONDS`` sets how long one exchange with Redis may take, for the
proxy's budget and rpm counters and for a router's shared state: a Redis slower than the
default (1 s, 0.25 s) under load is then still used instead of being taken as away."""

from __future__ import annotations

import pytest

from tests.relay import TcpRelay
from tracking.proxy.accounts import _counters
from tracking.router import Router

pytestmark = pytest.mark.redis

MODEL_LIST = [
    {
        "model_name": "images",
        "litellm_params": {"model": "gpt-image-2", "api_key": "sk-test-0123456789abcdef"},
    }
]


@pytest.fixture
def slow_redis(redis_url):
    relay = TcpRelay(redis_url)
    try:
        yield relay
    finally:
        relay.close()


@pytest.mark.parametrize("setting", [None, "30"])
async def test_the_counters_wait_as_long_as_the_setting_says(
    slow_redis, redis_prefix, monkeypatch, setting
):
    monkeypatch.setenv("TRACKING_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "3600")
    if setting is not None:
        monkeypatch.setenv("TRACKING_REDIS_TIMEOUT_SECONDS", setting)
    counters = _counters(slow_redis.url)
    try:
        # Each answer slower than the 1 s default; the operation as a whole (the connection's
        # own commands, the script sent again after NOSCRIPT: about 5 answers) well within 30 s.
        slow_redis.delay = 1.2
        assert await counters.reserve("budget", 10, 1000, 0) == 10
        assert counters.degraded is (setting is None)
    finally:
        # Checked: the stop (the heartbeat's last exchanges, the lease given up) need not be
        # slow too; at 1.2 s an answer it took longer than the reservation itself.
        slow_redis.delay = 0
        await counters.aclose()


@pytest.mark.parametrize("setting", [None, "30"])
def test_a_routers_shared_state_waits_as_long_as_the_setting_says(
    slow_redis, redis_prefix, monkeypatch, setting
):
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "3600")
    if setting is not None:
        monkeypatch.setenv("TRACKING_REDIS_TIMEOUT_SECONDS", setting)
    slow_redis.delay = 0.5  # each answer slower than the router's 0.25 s default
    with Router(MODEL_LIST, redis_url=slow_redis.url, redis_prefix=redis_prefix) as router:
        router.cooling()  # reads the cooldowns from Redis
        assert router.state.outage.down is (setting is None)


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("0", "TRACKING_REDIS_TIMEOUT_SECONDS=0 is not a timeout; using 0.25"),
        ("soon", "TRACKING_REDIS_TIMEOUT_SECONDS='soon' is not a number of seconds; using 0.25"),
    ],
)
def test_a_timeout_that_is_not_one_is_logged_and_the_default_kept(
    redis_url, redis_prefix, monkeypatch, caplog, value, logged
):
    monkeypatch.setenv("TRACKING_REDIS_TIMEOUT_SECONDS", value)
    with Router(MODEL_LIST, redis_url=redis_url, redis_prefix=redis_prefix) as router:
        assert router.state.socket_timeout == 0.25
    assert logged in caplog.text
