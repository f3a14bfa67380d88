"""Router state shared through Redis: across processes, atomically, and surviving an outage."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import tracking
from tests.conftest import API_KEY as KEY
from tests.conftest import make_png
from tests.router_support import ManualClock, Recorder, StubUpstream, closed_port, deployment
from tests.services import REDIS_TIMEOUT, require_tool
from tracking.router import NoDeploymentAvailableError, RedisState, Router
from tracking.testing import FakeOpenAI

pytestmark = pytest.mark.redis

WRONG_KEY = "sk-wrong-key-9876543210ZYXWVU"

_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    import tracking
    from tracking.router import RedisState, Router

    api_base, redis_url, prefix, key, timeout = sys.argv[1:6]
    # Two deployments ("shared" always drawn first): the only deployment of a group is never
    # cooled down.
    model_list = [
        {
            "model_name": "images",
            "litellm_params": {
                "model": "gpt-image-1", "api_base": api_base, "api_key": key, "weight": weight
            },
            "model_info": {"id": name},
        }
        for name, weight in (("shared", 1), ("spare", 0))
    ]
    state = RedisState(redis_url, prefix=prefix, socket_timeout=float(timeout))
    with Router(model_list, state=state, cooldown_time=60) as r:
        try:
            r.image_edit(image=open(sys.argv[6], "rb"), prompt="p", model="images")
        except tracking.APIError:
            print("cooled" if "shared" in r.cooling() else "not cooled")
    """
)


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(tracking, "success_callback", [rec])
    monkeypatch.setattr(tracking, "failure_callback", [rec])
    return rec


def test_a_cooldown_set_by_one_process_is_seen_by_another(
    redis_url, redis_prefix, fake, recorder, tmp_path
):
    image = tmp_path / "in.png"
    image.write_bytes(make_png())
    # another process: its deployments answer 401 (wrong key) and are cooled in Redis
    done = subprocess.run(
        [
            *(sys.executable, "-c", _OTHER_PROCESS, fake.url, redis_url, redis_prefix, WRONG_KEY),
            *(str(REDIS_TIMEOUT), image),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "cooled"
    assert WRONG_KEY not in done.stdout + done.stderr
    with StubUpstream() as other:
        model_list = [
            deployment("images", fake.url, id="shared", weight=1),
            deployment("images", other.url, id="other", weight=0),
        ]
        state = RedisState(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
        with Router(model_list, state=state) as router:
            assert 50 < router.cooling()["shared"] <= 60
            before = len(fake.requests)
            router.image_edit(image=make_png(), prompt="p", model="images")
            # "shared" would win every draw, but it is cooling in the other process's view
            assert len(fake.requests) == before and other.hits == 1
            assert recorder.events[-1].deployment_id == "other"


def test_rpm_usage_is_counted_across_routers(redis_url, redis_prefix):
    clock = ManualClock()  # rpm counts calendar minutes: both routers stay inside one

    def state() -> RedisState:
        return RedisState(
            redis_url, prefix=redis_prefix, clock=clock.time, socket_timeout=REDIS_TIMEOUT
        )

    with StubUpstream() as upstream:
        model_list = [deployment("images", upstream.url, id="limited", rpm=3)]
        with Router(model_list, state=state()) as one, Router(model_list, state=state()) as two:
            one.image_edit(image=make_png(), prompt="p", model="images")
            two.image_edit(image=make_png(), prompt="p", model="images")
            one.image_edit(image=make_png(), prompt="p", model="images")
            with pytest.raises(NoDeploymentAvailableError):
                two.image_edit(image=make_png(), prompt="p", model="images")
            assert upstream.hits == 3
            snapshot = two.state.snapshot(["limited"])
            assert snapshot.rpm == {"limited": 3} and snapshot.tpm == {"limited": 300}
            assert len(snapshot.latency_ms["limited"]) == 3


def test_failure_counts_in_flight_and_cooldowns_are_shared_and_expire(redis_url, redis_prefix):
    import redis

    one = RedisState(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    two = RedisState(redis_url, prefix=redis_prefix, socket_timeout=REDIS_TIMEOUT)
    client = redis.Redis.from_url(redis_url)
    try:
        assert one.record_failure("x") == 1 and one.record_failure("x") == 2
        assert two.record_failure("x") == 3  # one atomic counter for both
        assert 0 < client.ttl(f"{redis_prefix}fails:x") <= 60
        assert one.begin("y", None) and two.begin("y", None)
        assert one.snapshot(["y"]).in_flight == {"y": 2}
        two.end("y")
        assert one.snapshot(["y"]).in_flight == {"y": 1}
        assert client.ttl(f"{redis_prefix}inflight-calls:y") > 0  # a crashed process leaks nothing
        one.cool_down("x", 5)
        assert 4 < two.snapshot(["x", "y"]).cooling["x"] <= 5
        assert "y" not in two.snapshot(["x", "y"]).cooling
        assert client.get(f"{redis_prefix}fails:x") is None  # a cooldown resets the count
    finally:
        one.close()
        two.close()
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis():
    """A redis-server of this test's own on a free port (never the shared one)."""
    server = require_tool("redis-server", "redis-server")
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield process, f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)


def test_a_redis_outage_degrades_to_local_state_and_never_fails_a_call(
    private_redis, recorder, caplog, monkeypatch
):
    import redis

    process, url = private_redis
    # One outage, however slowly a loaded machine makes the calls: after the default 5 s Redis
    # is tried again, and that failure starts (and warns of) another.
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "3600")
    with (
        FakeOpenAI(api_keys=["sk-the-right-key-000000"]) as locked,
        StubUpstream() as good,
    ):
        model_list = [
            deployment("images", locked.url, id="bad-key", api_key=WRONG_KEY, weight=1),
            deployment("images", good.url, id="good", weight=0),
        ]
        # the first call's exchanges must reach Redis (checked below), not time out on a loaded
        # machine; a killed server refuses at once
        state = RedisState(url, socket_timeout=REDIS_TIMEOUT)
        with Router(model_list, state=state, cooldown_time=60) as router:
            router.image_edit(image=make_png(), prompt="p", model="images", size="1024x1024")
            client = redis.Redis.from_url(url)
            try:
                assert client.pttl("tracking:router:cooldown:bad-key") > 0  # state is in Redis
            finally:
                client.close()
            process.kill()
            process.wait(10)
            with caplog.at_level(logging.WARNING, "tracking.router"):
                for _ in range(3):
                    router.image_edit(image=make_png(), prompt="p", model="images")
            assert "Redis unavailable" in caplog.text
            assert caplog.text.count("Redis unavailable") == 1  # warned once, not per call
            assert router.state.degraded  # type: ignore[attr-defined]
            assert [e.status for e in recorder.events] == ["success"] * 4
            # local state took over: bad-key fails once more, is cooled locally, then skipped
            assert [e.attempts for e in recorder.events[1:]] == [2, 1, 1]
            assert "bad-key" in router.cooling()


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_an_unreachable_redis_from_the_start_still_routes(recorder, caplog, scheme):
    """A cluster too: its client, which asks the nodes for the slots when made, is made at its
    first use, so a cluster away at start is an outage like any other, not an error at start."""
    url = f"{scheme}://127.0.0.1:{closed_port()}"
    with (
        StubUpstream() as good,
        Router([deployment("images", good.url, id="g")], redis_url=url) as r,
    ):
        with caplog.at_level(logging.WARNING, "tracking.router"):
            r.image_edit(image=make_png(), prompt="p", model="images")
        assert good.hits == 1 and "Redis unavailable" in caplog.text


def test_the_router_tries_redis_again_after_the_proxys_retry_interval(
    recorder, caplog, monkeypatch
):
    """``TRACKING_REDIS_RETRY_SECONDS`` (the proxy's counters' setting) is the router state's
    interval too: it was fixed at 5 s, so a router never found a recovered Redis sooner."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "0.5")
    with (
        StubUpstream() as good,
        Router([deployment("images", good.url, id="g", model="gpt-image-2")], redis_url=url) as r,
    ):
        with caplog.at_level(logging.WARNING, "tracking.router"):
            r.image_edit(image=make_png(), prompt="p", model="images")
        assert "retrying Redis in 0.5 s" in caplog.text
        monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "0")  # every exchange tries Redis
        with Router(
            [deployment("images", good.url, id="g", model="gpt-image-2")], redis_url=url
        ) as eager:
            for _ in range(2):
                eager.image_edit(image=make_png(), prompt="p", model="images")
            # each exchange of each call tried Redis (left alone, they try it once in all)
            assert eager.state.outage.failures > 2  # type: ignore[attr-defined]
        monkeypatch.setenv("TRACKING_REDIS_RETRY_SECONDS", "soon")
        caplog.clear()
        with Router(
            [deployment("images", good.url, id="g", model="gpt-image-2")], redis_url=url
        ) as default:
            assert default.state.outage.retry_interval == 5  # type: ignore[attr-defined]
        assert "TRACKING_REDIS_RETRY_SECONDS='soon' is not a number of seconds" in caplog.text
    assert good.hits == 3


def test_the_proxys_redis_prefix_namespaces_its_routing_state_too(
    redis_url, redis_prefix, monkeypatch
):
    """``TRACKING_REDIS_PREFIX`` namespaced the budgets only: two proxies of different
    deployments sharing one Redis shared cooldowns and rpm windows under ``tracking:router:``."""
    import redis

    from tracking.config import parse_config
    from tracking.proxy.models import build_dispatcher

    monkeypatch.setenv("TRACKING_REDIS_PREFIX", redis_prefix)
    config = parse_config(
        {
            "model_list": [
                {
                    "model_name": "images",
                    "litellm_params": {"model": "gpt-image-2", "api_key": KEY},
                },
                {
                    "model_name": "images",
                    "litellm_params": {"model": "openai/gpt-image-2", "api_key": KEY},
                },
            ],
            "router_settings": {"redis_url": redis_url, "cooldown_time": 30},
        }
    )
    router = build_dispatcher(config).router
    try:
        router.cool_down(router.groups["images"][0], "test")
    finally:
        router.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{redis_prefix}*")]
    finally:
        client.close()
    assert keys and all(k.startswith(f"{redis_prefix}router:") for k in keys), keys


def test_a_crashed_processs_calls_leave_the_in_flight_count_while_others_keep_calling(
    redis_url, redis_prefix
):
    # A process that dies (or loses Redis) between a call's begin and end never ends it; the
    # other processes' calls go on beginning and ending meanwhile. The dead call must leave
    # the shared count once its lease is over, not stay counted for as long as traffic flows
    # (least-busy would steer away from the deployment for good).
    clock = ManualClock()

    def state() -> RedisState:
        return RedisState(
            redis_url, prefix=redis_prefix, clock=clock.time, socket_timeout=REDIS_TIMEOUT
        )

    crashed, alive = state(), state()
    try:
        assert crashed.begin("d", None)
        crashed.close()  # it never ends its call
        for _ in range(3):
            clock.advance(300)  # a call every five minutes: the counter's key never idles
            assert alive.begin("d", None)
            assert alive.snapshot(["d"]).in_flight["d"] >= 1
            alive.end("d")
        assert alive.snapshot(["d"]).in_flight == {"d": 0}
        # ending a call the state never began (its begin was counted while Redis was down)
        # does not take another process's call off the count
        assert alive.begin("d", None)
        fresh = state()
        try:
            fresh.end("d")
            assert alive.snapshot(["d"]).in_flight == {"d": 1}
        finally:
            fresh.close()
        alive.end("d")
        assert alive.snapshot(["d"]).in_flight == {"d": 0}
    finally:
        alive.close()
