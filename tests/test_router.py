"""tracking.Router over real loopback upstreams: balancing, retries, cooldowns, fallbacks."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from decimal import Decimal

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import (
    ManualClock,
    Recorder,
    StubUpstream,
    closed_port,
    deployment,
    primary_and_backup,
)
from tracking.pricing.estimate import estimate_call_cost
from tracking.router import (
    CallShape,
    Deployment,
    LowestCost,
    MemoryState,
    NoDeploymentAvailableError,
    Router,
    WeightedRandom,
)
from tracking.targets import run_steps
from tracking.testing import FakeOpenAI

WRONG_KEY = "sk-wrong-key-9876543210ZYXWVU"


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(tracking, "success_callback", [rec])
    monkeypatch.setattr(tracking, "failure_callback", [rec])
    return rec


@pytest.fixture
def fake_b():
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture
def stub_500():
    with StubUpstream(status=500, headers={"Retry-After": "0"}) as server:
        yield server


def edit(router: Router, model: str = "images", **params):
    return router.image_edit(image=make_png(), prompt="a red hat", model=model, **params)


# -- the entry points and the config ---------------------------------------------------------


def test_router_is_exported_lazily_and_takes_image_edit_parameters():
    import inspect

    assert "Router" in tracking.__all__
    assert tracking.Router is Router
    params = inspect.signature(Router.image_edit).parameters
    assert list(params)[:4] == ["image", "prompt", "model", "mask"]
    assert "drop_params" in params


def test_config_errors_are_clear_and_name_the_entry(monkeypatch):
    with pytest.raises(tracking.ConfigurationError, match=r"model_list\[0\]: litellm_params"):
        Router([{"model_name": "x"}])
    with pytest.raises(tracking.ConfigurationError, match="'nowhere' is not a model_name"):
        Router([deployment("a", "http://h/v1", id="a")], fallbacks=[{"a": ["nowhere"]}])
    with pytest.raises(tracking.ConfigurationError, match="unknown 'fastest'"):
        Router([deployment("a", "http://h/v1", id="a")], routing_strategy="fastest")
    with pytest.raises(tracking.ConfigurationError, match="ROUTER_TEST_KEY is not set"):
        Router([deployment("a", "http://h/v1", id="a", api_key="os.environ/ROUTER_TEST_KEY")])
    monkeypatch.setenv("ROUTER_TEST_KEY", "sk-from-env-0123456789")
    router = Router([deployment("a", "http://h/v1", id="a", api_key="os.environ/ROUTER_TEST_KEY")])
    assert router.deployments[0].api_key == "sk-from-env-0123456789"
    assert "sk-from-env" not in repr(router.deployments[0]) + repr(router)


def test_a_duplicate_deployment_names_the_entry_it_repeats_and_why():
    """Two deployments differing only by ``rpm`` (or ``order``) were refused as "duplicate
    deployment id '3f9c...'", naming neither the other entry nor why their ids are one."""
    same_place = [
        deployment("a", "http://h/v1", id="x", rpm=5),
        deployment("a", "http://h/v1", id="x"),
    ]
    for entry in same_place:
        del entry["model_info"]
    same_place[1]["litellm_params"]["rpm"] = 50
    with pytest.raises(tracking.ConfigurationError) as caught:
        Router(same_place)
    assert caught.value.message.startswith("model_list[1]: duplicate deployment id ")
    assert "as model_list[0]" in caught.value.message and "model_info.id" in caught.value.message
    given = [deployment("a", "http://h/v1", id="x"), deployment("b", "http://g/v1", id="x")]
    with pytest.raises(
        tracking.ConfigurationError, match=r"model_list\[0\] has the same model_info.id"
    ):
        Router(given)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"api_base": "htp://typo.example/v1"}, r"\[1\]: litellm_params.api_base: not an http"),
        ({"api_key": "sk-abc\ndef"}, r"\[1\]: litellm_params.api_key: the key holds"),
        ({"model": "azure/images"}, r"\[1\]: litellm_params.api_version: not set for Azure"),
        ({"model": "stability/upscale"}, r"\[1\]: litellm_params.model: stability/upscale"),
        (
            {"model_info": {"id": "c", "output_cost_per_image": "NaN"}},
            r"\[1\]: model_info.output_cost_per_image: must be a finite",
        ),
        (
            {"model_info": {"id": "c", "output_cost_per_image_by_size": {"1024x1024": "-5"}}},
            r"\[1\]: model_info.output_cost_per_image_by_size\['1024x1024'\]: must be",
        ),
        (
            {"model_info": {"id": "c", "output_cost_per_image_by_size": {1024: "0.01"}}},
            r"\[1\]: model_info.output_cost_per_image_by_size\[1024\]: not a 'SIZE'",
        ),
        (
            {"model_info": {"id": "c", "output_cost_per_image_by_size": {"1024*1024": "0.01"}}},
            r"\[1\]: model_info.output_cost_per_image_by_size\['1024\*1024'\]: not a 'SIZE'",
        ),
    ],
    ids=["url", "key", "azure", "stability", "nan-price", "negative-price", "int-size", "bad-size"],
)
def test_a_deployment_that_cannot_be_called_fails_the_router_at_load(monkeypatch, entry, message):
    """Each failed a share of the calls (the group's other deployment never tried, the bad
    one never cooled down), or every call under cost-based routing (a NaN price), or took all
    traffic (a negative price): now the router is refused when built, naming the entry."""
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    good = deployment("images", "http://127.0.0.1:9/v1", id="good")
    bad = deployment("images", "http://127.0.0.1:9/v1", id="bad")
    info = entry.pop("model_info", None)
    bad["litellm_params"].update(entry)
    if info is not None:
        bad["model_info"] = info
    with pytest.raises(tracking.ConfigurationError, match=message):
        Router([good, bad], routing_strategy="cost-based-routing")


def test_router_settings_are_named_in_their_errors():
    """A bad router_settings.timeout was reported as model_list[0]'s litellm_params.timeout,
    a key never written; bad Redis settings raised redis-py's bare ValueError."""
    model_list = [deployment("a", "http://h/v1", id="a")]
    for settings, message in (
        ({"timeout": -1}, r"^router_settings.timeout must be a positive number"),
        ({"redis_host": "localhost", "redis_port": "abc"}, r"^router_settings.redis_port: "),
        ({"redis_host": "localhost", "redis_port": 99999}, r"^router_settings.redis_port: "),
        ({"redis_url": "not a url"}, r"^redis_url: Redis URL must specify"),
    ):
        with pytest.raises(tracking.ConfigurationError, match=message):
            Router.from_config({"model_list": model_list, "router_settings": settings})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redis_url": 6379}, r"^redis_url: expected a redis:// URL"),
        ({"redis_url": "redis://127.0.0.1:9/0", "redis_prefix": 5}, r"^redis_prefix: expected"),
        ({"latency_window": 0}, r"^latency_window: expected an integer >= 1, got 0"),
        ({"latency_window": -1}, r"^latency_window: expected an integer >= 1"),
        ({"latency_window": "10"}, r"^latency_window: expected an integer >= 1, got .10.$"),
    ],
    ids=["redis-url-int", "redis-prefix-int", "window-0", "window-negative", "window-text"],
)
def test_bad_state_settings_are_configuration_errors(settings, message):
    """A redis_url that is no string raised AttributeError from inside redis-py; a
    latency_window below 1 or not a number was accepted, then failed every call's bookkeeping
    (a deque of negative length, logged at each call) or, at 0, made Redis keep every latency
    ever measured (LTRIM 0 -1 keeps the whole list)."""
    model_list = [deployment("a", "http://h/v1", id="a")]
    with pytest.raises(tracking.ConfigurationError, match=message):
        Router(model_list, **settings)


def test_a_model_that_is_no_name_is_named_as_such():
    """``model=5`` (or a list) was refused as "model: required", a parameter that was given."""
    router = Router([deployment("a", "http://127.0.0.1:9/v1", id="a")])
    for model, got in ((5, "int"), (["a"], "list")):
        with pytest.raises(
            tracking.ValidationError, match=f"expected the name of a model group, got {got}$"
        ) as caught:
            router.image_generation(prompt="a fox", model=model)
        assert (caught.value.param, caught.value.rule) == ("model", "type")
    with pytest.raises(tracking.ValidationError, match="model: required"):
        router.image_generation(prompt="a fox")


def test_a_price_of_zero_for_the_size_and_quality_is_not_skipped():
    """``"1024x1024/low": 0`` fell through (``or``) to the size-only price."""
    from tracking.router.strategies import CallShape, model_info_cost

    entry = deployment("a", "http://h/v1", id="a")
    entry["model_info"]["output_cost_per_image_by_size"] = {"1024x1024/low": 0, "1024x1024": 1}
    router = Router([entry])
    shape = CallShape("a", size="1024x1024", quality="low")
    assert model_info_cost(router.deployments[0], shape) == 0


def test_from_config_reads_a_litellm_style_proxy_config():
    config = {
        "model_list": [
            deployment("gpt-image-1", "http://one/v1", id="one", rpm=60),
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "openai/gpt-image-1",
                    "api_base": "http://two/v1",
                    "api_key": API_KEY,
                },
                "tpm": 1000,
            },
            deployment("mini", "http://three/v1", id="three", model="gpt-image-1-mini"),
        ],
        "litellm_settings": {"num_retries": 4},
        "router_settings": {
            "routing_strategy": "least-busy",
            "cooldown_time": 30,
            "allowed_fails": 1,
            "fallbacks": [{"gpt-image-1": ["mini"]}],
            "routing_strategy_args": {"ttl": 60},  # accepted, not used
        },
    }
    router = Router.from_config(config)
    assert type(router.strategy).__name__ == "LeastBusy"
    assert (router.num_retries, router.cooldown_time, router.allowed_fails) == (4, 30.0, 1)
    assert router.fallbacks == {"gpt-image-1": ("mini",)}
    one, two = router.groups["gpt-image-1"]
    assert (one.rpm, two.tpm) == (60, 1000)
    assert len(two.id) == 16  # derived, stable: the same config gives the same id
    assert Router.from_config(config).groups["gpt-image-1"][1].id == two.id


@pytest.mark.parametrize(
    ("model", "variable"),
    [("gpt-image-2", "OPENAI_API_KEY"), ("xai/grok-imagine-image", "XAI_API_KEY")],
)
def test_a_deployment_whose_calls_would_have_no_usable_key_fails_the_config(
    monkeypatch, model, variable
):
    entry = {"model_name": "images", "litellm_params": {"model": model}}
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(tracking.ConfigurationError, match=f"model_list\\[0\\].*{variable}"):
        Router.from_config({"model_list": [entry]})
    monkeypatch.setenv(variable, "sk-test-0123456789\n")  # pasted with its line end
    with pytest.raises(tracking.ConfigurationError, match=f"from {variable}"):
        Router.from_config({"model_list": [entry]})
    monkeypatch.setenv(variable, "sk-test-0123456789")
    assert Router.from_config({"model_list": [entry]}).groups["images"]


@pytest.mark.parametrize("typo", ["gemeni", "vertex-ai", "black-forest-labs", "openia"])
def test_a_provider_prefix_one_letter_off_fails_the_config(typo):
    """Such a name would go to OpenAI whole, every call a 404 from the wrong upstream."""
    entry = {"model_name": "m", "litellm_params": {"model": f"{typo}/x", "api_key": API_KEY}}
    with pytest.raises(tracking.ConfigurationError, match="did you mean"):
        Router.from_config({"model_list": [entry]})
    for meant in (f"openai/{typo}/x", "acme-org/x"):  # said so, or no provider's near name
        entry["litellm_params"]["model"] = meant
        assert Router.from_config({"model_list": [entry]}).groups["m"]


def test_router_settings_timeout_is_the_timeout_of_deployments_without_their_own(recorder):
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=2;times=always"]) as slow:
        config = {
            "model_list": [
                deployment("images", slow.url, id="default", api_key=API_KEY, max_retries=0),
                deployment("own", slow.url, id="own", api_key=API_KEY, timeout=0.2),
            ],
            "router_settings": {"timeout": 0.3, "num_retries": 0},
        }
        router = Router.from_config(config)
        assert [d.timeout for d in router.groups["images"]] == [0.3]
        assert [d.timeout for d in router.groups["own"]] == [0.2]  # its own wins
        with pytest.raises(tracking.APITimeoutError):  # (without it: 600 s, a success)
            edit(router)


def test_in_the_proxy_router_settings_timeout_beats_request_timeout():
    from tracking.config import parse_config
    from tracking.proxy.models import router_config

    def timeouts(**sections: object) -> list[float | None]:
        entries = [
            {"model_name": "a", "litellm_params": {"model": "gpt-image-2", "api_key": API_KEY}},
            {
                "model_name": "b",
                "litellm_params": {"model": "gpt-image-2", "timeout": 7, "api_key": API_KEY},
            },
        ]
        router = Router.from_config(
            router_config(parse_config({"model_list": entries, **sections}))
        )
        return [router.groups[name][0].timeout for name in ("a", "b")]

    assert timeouts() == [None, 7]
    assert timeouts(litellm_settings={"request_timeout": 20}) == [20, 7]
    both = {"litellm_settings": {"request_timeout": 20}, "router_settings": {"timeout": 30}}
    assert timeouts(**both) == [30, 7]


def test_the_documented_config_example_is_accepted(monkeypatch):
    import pathlib
    import re

    import yaml

    page = (pathlib.Path(__file__).parent.parent / "docs" / "routing.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", page, re.S)
    assert example is not None
    monkeypatch.setenv("OPENAI_KEY_EU", "sk-eu-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-main-0123456789")
    with Router.from_config(yaml.safe_load(example.group(1))) as router:
        assert sorted(router.groups) == ["gpt-image-2", "gpt-image-2.6-flare"]
        assert router.fallbacks == {"gpt-image-2.6-flare": ("gpt-image-2",)}
        eu = router.groups["gpt-image-2.6-flare"][0]
        assert (eu.id, eu.rpm, eu.weight, eu.timeout, eu.base_model) == (
            "gpt-image-eu",
            50,
            2.0,
            120.0,
            "gpt-image-2.6-flare",
        )
        assert type(router.state).__name__ == "RedisState"


def test_unknown_model_group_is_a_validation_error_with_its_event(recorder, fake):
    router = Router([deployment("images", fake.url, id="a")])
    with pytest.raises(tracking.ValidationError, match="not a model group"):
        edit(router, model="elsewhere")
    (event,) = recorder.events
    assert (event.status, event.error_type, event.model) == (
        "failure",
        "validation_error",
        "elsewhere",
    )


# -- strategies --------------------------------------------------------------------------------


def test_weighted_random_follows_the_weights():
    random.seed(7)
    heavy = Deployment(id="heavy", model_name="g", model="m", weight=3)
    light = Deployment(id="light", model_name="g", model="m", weight=1)
    snapshot = MemoryState().snapshot(["heavy", "light"])
    picks = Counter(
        WeightedRandom().choose([heavy, light], snapshot, CallShape("g")).id for _ in range(4000)
    )
    assert 2800 <= picks["heavy"] <= 3200  # 3000 expected; more than 8 sd of margin


def test_weighted_distribution_over_real_upstreams(fake, fake_b):
    router = Router(
        [
            deployment("images", fake.url, id="a", weight=3),
            deployment("images", fake_b.url, id="b", weight=1),
        ]
    )
    before_a, before_b = len(fake.requests), len(fake_b.requests)
    for _ in range(80):
        edit(router)
    a, b = len(fake.requests) - before_a, len(fake_b.requests) - before_b
    assert a + b == 80
    assert 45 <= a <= 75  # 60 expected; p(outside) < 1e-4


async def test_least_busy_spreads_concurrent_calls_evenly():
    with (
        StubUpstream(delay=0.2) as one,
        StubUpstream(delay=0.2) as two,
        StubUpstream(delay=0.2) as three,
    ):
        router = Router(
            [deployment("images", s.url, id=f"d{i}") for i, s in enumerate((one, two, three))],
            routing_strategy="least-busy",
        )
        calls = [router.aimage_edit(image=make_png(), prompt="p", model="images") for _ in range(9)]
        await asyncio.gather(*calls)
        # each pick sees the calls already in flight, so nine concurrent calls split 3/3/3
        assert [one.hits, two.hits, three.hits] == [3, 3, 3]
        assert router.state.snapshot(["d0", "d1", "d2"]).in_flight == {"d0": 0, "d1": 0, "d2": 0}


def test_lowest_latency_prefers_the_fast_deployment(recorder):
    # 1 s: a loaded machine (the suite beside other jobs) can hold a fast call for 150 ms, and
    # once (2026-12-06, CI beside a callgrind run) held one call for more than 0.5 s
    with StubUpstream(delay=1.0) as slow, StubUpstream() as fast:
        router = Router(
            [deployment("images", slow.url, id="slow"), deployment("images", fast.url, id="fast")],
            routing_strategy="latency-based-routing",
        )
        for _ in range(10):
            edit(router)
        # each is measured once (unmeasured deployments go first), then the fast one wins
        assert (slow.hits, fast.hits) == (1, 9)
        assert Counter(e.deployment_id for e in recorder.events) == {"fast": 9, "slow": 1}


def test_rpm_limits_are_respected(fake, fake_b):
    clock = ManualClock()  # rpm counts calendar minutes: this test stays inside one
    router = Router(
        [
            deployment("images", fake.url, id="a", rpm=2),
            deployment("images", fake_b.url, id="b", rpm=3),
        ],
        state=MemoryState(clock=clock.time, monotonic=clock.monotonic),
    )
    before_a, before_b = len(fake.requests), len(fake_b.requests)
    for _ in range(5):
        edit(router)
    assert (len(fake.requests) - before_a, len(fake_b.requests) - before_b) == (2, 3)
    clock.advance(45)  # 45 s into the minute: both are free again in 15 s
    with pytest.raises(NoDeploymentAvailableError, match="rpm/tpm limit") as caught:
        edit(router)
    assert caught.value.status_code == 429
    assert caught.value.retry_after == pytest.approx(15)  # the time to the next minute, not 60
    clock.advance(15)  # the next minute: both deployments take calls again
    edit(router)


def test_an_rpm_slot_taken_between_the_snapshot_and_the_begin_still_says_when_to_retry(fake):
    """Another process sharing the state takes the last slot of the minute after this call read
    the counts and before it took one: the refusal still gives the minute's end to wait for."""
    clock = ManualClock()

    class Shared(MemoryState):
        taken = False

        def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
            if not self.taken:  # the other process's call, at just this moment
                self.taken = super().begin(deployment_id, rpm_limit)
            return super().begin(deployment_id, rpm_limit)

    state = Shared(clock=clock.time, monotonic=clock.monotonic)
    router = Router([deployment("images", fake.url, id="a", rpm=1)], state=state)
    clock.advance(20)
    with pytest.raises(NoDeploymentAvailableError, match="rpm limit") as caught:
        edit(router)
    assert caught.value.retry_after == pytest.approx(40)  # to the next minute, never None


@pytest.mark.parametrize("use_async", [False, True])
def test_a_streamed_call_is_in_flight_until_its_end_and_counts_its_tokens(fake_b, use_async):
    """A stream's attempt ends with its completed event, not its first: it is in flight while
    read (least-busy), and its usage counts toward the deployment's tpm."""
    router = Router([deployment("images", fake_b.url, id="s", api_key=API_KEY, tpm=1000)])

    def in_flight() -> int:
        return run_steps(router.stepwise_state.snapshot(["s"])).in_flight.get("s", 0)

    seen: list[int] = []
    params = {"image": make_png(), "prompt": "a red hat", "model": "images"}

    async def read_async() -> None:
        async for _ in await router.aimage_edit(**params, stream=True, partial_images=2):
            seen.append(in_flight())

    if use_async:
        asyncio.run(read_async())
    else:
        for _ in router.image_edit(**params, stream=True, partial_images=2):
            seen.append(in_flight())
    assert seen == [1, 1, 1] and in_flight() == 0  # every event read while it was in flight
    assert run_steps(router.stepwise_state.snapshot(["s"])).tpm["s"] > 1000
    with pytest.raises(NoDeploymentAvailableError, match="rpm/tpm limit"):
        edit(router)  # its tokens used up the minute's tpm


def test_a_stream_closed_by_its_caller_ends_its_attempt(fake_b):
    router = Router([deployment("images", fake_b.url, id="s", api_key=API_KEY)])
    stream = router.image_edit(image=make_png(), prompt="a hat", model="images", stream=True,
                               partial_images=2)  # fmt: skip
    next(iter(stream))
    stream.close()
    assert run_steps(router.stepwise_state.snapshot(["s"])).in_flight.get("s", 0) == 0


def test_usage_based_routing_moves_to_the_less_used_deployment(recorder):
    with StubUpstream() as one, StubUpstream() as two:
        router = Router(
            [deployment("images", one.url, id="one"), deployment("images", two.url, id="two")],
            routing_strategy="usage-based-routing",
        )
        edit(router)
        edit(router)
        # the first call used 100 tokens on its deployment: the second goes to the other one
        assert {e.deployment_id for e in recorder.events} == {"one", "two"}
        assert (one.hits, two.hits) == (1, 1)


def test_lowest_cost_prices_the_call_size_from_model_info(recorder):
    with StubUpstream() as a, StubUpstream() as b:
        priced_by_size = deployment("images", a.url, id="by-size")
        priced_by_size["model_info"]["output_cost_per_image_by_size"] = {
            "1024x1024": "0.02",
            "1024x1536": "0.05",
        }
        flat = deployment("images", b.url, id="flat")
        flat["model_info"]["output_cost_per_image"] = "0.03"
        router = Router([priced_by_size, flat], routing_strategy="cost-based-routing")
        edit(router, size="1024x1024")
        edit(router, size="1024x1536")
        assert [e.deployment_id for e in recorder.events] == ["by-size", "flat"]


def test_lowest_cost_takes_an_injected_cost_function(recorder):
    seen: list[CallShape] = []

    def cost(deployment: Deployment, call: CallShape) -> Decimal | None:
        seen.append(call)
        per_image = {"cheap": Decimal("0.01"), "dear": Decimal("0.04")}.get(deployment.id)
        return None if per_image is None else per_image * call.n

    with StubUpstream() as a, StubUpstream() as b, StubUpstream() as c:
        router = Router(
            [
                deployment("images", a.url, id="dear"),
                deployment("images", b.url, id="unpriced"),
                deployment("images", c.url, id="cheap"),
            ],
            routing_strategy=LowestCost(cost),
        )
        edit(router, n=2, quality="high", size="1024x1024")
        assert recorder.events[-1].deployment_id == "cheap"
        assert seen[0] == CallShape("images", n=2, size="1024x1024", quality="high")


# -- retries, cooldowns, fallbacks -----------------------------------------------------------


def test_retries_land_on_another_deployment(recorder, fake):
    # weight 0 never wins a draw, so the dead deployment is always tried first
    router = Router(
        [
            deployment("images", f"http://127.0.0.1:{closed_port()}/v1", id="dead", weight=1),
            deployment("images", fake.url, id="alive", weight=0),
        ],
        num_retries=1,
        allowed_fails=100,
    )
    response = edit(router)
    (event,) = recorder.events
    assert (event.status, event.deployment_id, event.attempts, event.retries) == (
        "success",
        "alive",
        2,
        1,
    )
    assert response._hidden_params["deployment_id"] == "alive"
    assert event.model == event.model_group == "images" and event.fallback_from == ()


def test_router_retries_never_multiply_with_the_client_retries(recorder, stub_500):
    router = Router([deployment("images", stub_500.url, id="only")], num_retries=2, allowed_fails=9)
    with pytest.raises(tracking.InternalServerError):
        edit(router)
    # three attempts in all (1 + num_retries), not 3 x (1 + max_retries)
    assert stub_500.hits == 3
    assert (recorder.events[0].attempts, recorder.events[0].retries) == (3, 2)
    with pytest.raises(tracking.InternalServerError):
        edit(router, max_retries=0)  # the call's own count replaces the router's
    assert stub_500.hits == 4


def test_request_errors_fail_at_once_without_fallback(recorder, fake):
    with StubUpstream(status=400) as bad:
        router = Router(
            [deployment("images", bad.url, id="bad"), deployment("backup", fake.url, id="ok")],
            fallbacks=[{"images": ["backup"]}],
        )
        before = len(fake.requests)
        with pytest.raises(tracking.BadRequestError):
            edit(router)
        assert bad.hits == 1 and len(fake.requests) == before
        assert recorder.events[-1].attempts == 1


def test_cooldown_is_entered_and_left(recorder, caplog):
    cooled: list[tuple[str, str]] = []
    clock = ManualClock()
    with FakeOpenAI(api_keys=["sk-the-right-key-000000"]) as locked, StubUpstream() as good:
        router = Router(
            [
                deployment("images", locked.url, id="bad-key", api_key=WRONG_KEY, weight=1),
                deployment("images", good.url, id="good", weight=0),
            ],
            cooldown_time=30,
            state=MemoryState(clock=clock.time, monotonic=clock.monotonic),
        )
        router.cooldown_observers.append(lambda group, dep: cooled.append((group, dep)))
        with caplog.at_level(logging.WARNING, "tracking.router"):
            edit(router)  # 401 on bad-key: cooled at once, the retry lands on good
        assert cooled == [("images", "bad-key")]
        assert "bad-key" in router.cooling()
        assert "cooling down" in caplog.text and WRONG_KEY not in caplog.text
        edit(router)  # bad-key is skipped although it would win every draw
        assert [e.attempts for e in recorder.events] == [2, 1]
        assert good.hits == 2
        clock.advance(29.9)
        assert 0 < router.cooling()["bad-key"] <= 0.1 + 1e-9
        clock.advance(0.1)  # the cooldown is over
        assert router.cooling() == {}
        edit(router)  # back in rotation: tried (and cooled) again
        assert cooled == [("images", "bad-key")] * 2
        for event in recorder.events:
            assert WRONG_KEY not in (event.error_message or "")


def test_the_only_deployment_of_a_group_is_not_cooled_down_for_passing_faults(recorder):
    with StubUpstream(status=503, headers={"Retry-After": "0"}) as flaky:
        router = Router(
            [deployment("images", flaky.url, id="only")], allowed_fails=0, cooldown_time=60
        )
        for _ in range(3):
            with pytest.raises(tracking.InternalServerError):
                edit(router, max_retries=1)
        assert router.cooling() == {}
        assert flaky.hits == 6  # every call reached the upstream: none was refused locally


def test_when_every_deployment_cools_the_call_fails_fast(recorder):
    with FakeOpenAI(api_keys=["sk-the-right-key-000000"]) as locked:
        # (two deployments: the only deployment of a group is never cooled down)
        router = Router(
            [
                deployment("images", locked.url, id=name, api_key=WRONG_KEY)
                for name in ("bad-key", "bad-key-too")
            ],
            cooldown_time=30,
        )
        with pytest.raises(tracking.AuthenticationError) as first:
            edit(router)
        assert WRONG_KEY not in str(first.value)
        if len(router.cooling()) < 2:  # without a retry, the second call meets the other one
            with pytest.raises(tracking.AuthenticationError):
                edit(router)
        with pytest.raises(NoDeploymentAvailableError, match="2 cooling down") as caught:
            edit(router)
        assert 0 < caught.value.retry_after <= 30
        assert isinstance(caught.value, tracking.RateLimitError)
        last = recorder.events[-1]
        assert (last.error_type, last.attempts, last.http_status) == (
            "no_deployment_available",
            0,
            429,
        )


def test_repeated_failures_cool_a_deployment_after_allowed_fails(stub_500, fake):
    router = Router(
        [
            deployment("images", stub_500.url, id="flaky", weight=1),
            deployment("images", fake.url, id="fine", weight=0),
        ],
        allowed_fails=2,
        cooldown_time=30,
    )
    for _ in range(3):
        edit(router)
    # three failures on flaky (one per call) exceed allowed_fails=2: now it is skipped
    assert "flaky" in router.cooling()
    hits = stub_500.hits
    edit(router)
    assert stub_500.hits == hits == 3


def test_a_deployment_answering_unreadable_2xx_is_not_retried_but_cools_down(recorder, fake):
    with FakeOpenAI(api_keys=[API_KEY], faults=["malformed;times=always"]) as broken:
        router = Router(
            [
                deployment("images", broken.url, id="broken", weight=1),
                deployment("images", fake.url, id="fine", weight=0),
            ],
            allowed_fails=2,
            cooldown_time=30,
        )
        for _ in range(3):  # billed, so never retried: each call fails on its one attempt
            with pytest.raises(tracking.APIResponseError):
                edit(router)
        assert [e.attempts for e in recorder.events] == [1, 1, 1]
        # three failures exceed allowed_fails=2: the deployment is skipped from now on
        assert "broken" in router.cooling()
        edit(router)
        assert broken.hits == 3 and recorder.events[-1].status == "success"


def test_attempts_lost_before_a_fallback_are_estimated_as_the_model_they_asked(recorder, fake):
    with FakeOpenAI(api_keys=[API_KEY], faults=["drop;times=always"]) as dropping:
        router = primary_and_backup(dropping.url, "gpt-image-2", fake.url, "gpt-image-1-mini")
        edit(router, model="primary")  # two attempts sent whole on gpt-image-2, answers lost
        edit(router, model="backup")  # the same answer on its own: the backup's own price
    assert dropping.hits == 2
    event, alone = recorder.events[-2], recorder.events[-1]
    assert event.status == "success" and event.fallback_from == ("primary",)
    each = estimate_call_cost("gpt-image-2", prompt_chars=9, input_images=1)
    assert each.usd is not None and alone.cost_usd is not None
    # each lost attempt at gpt-image-2's estimate, not at the cheaper model that answered
    assert event.cost_usd == alone.cost_usd + 2 * each.usd
    assert event.cost_source == "estimate"
    assert f"estimate:outcome-unknown:{each.price_ref}" in (event.price_ref or "")


def test_fallback_after_the_group_is_exhausted(recorder, stub_500, fake):
    router = Router(
        [
            deployment("primary", stub_500.url, id="p"),
            deployment("backup", fake.url, id="b", model="gpt-image-1-mini"),
        ],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=1,
        allowed_fails=9,
    )
    response = edit(router, model="primary")
    assert stub_500.hits == 2
    assert fake.requests[-1].fields["model"] == "gpt-image-1-mini"
    (event,) = recorder.events
    assert (event.model, event.model_group, event.fallback_from) == (
        "primary",
        "backup",
        ("primary",),
    )
    assert (event.resolved_model, event.deployment_id, event.attempts) == (
        "gpt-image-1-mini",
        "b",
        3,
    )
    assert response._hidden_params["model"] == "gpt-image-1-mini"


def test_fallback_the_request_is_invalid_for_is_skipped(recorder, stub_500, fake, fake_b):
    router = Router(
        [
            deployment("primary", stub_500.url, id="p"),
            deployment("old", fake_b.url, id="d2", model="dall-e-2"),
            deployment("mini", fake.url, id="m", model="gpt-image-1-mini"),
        ],
        fallbacks=[{"primary": ["old", "mini"]}],
        num_retries=0,
        allowed_fails=9,
    )
    before = len(fake_b.requests)
    two_images = [make_png(), make_png(32, 32)]
    response = router.image_edit(image=two_images, prompt="p", model="primary")
    assert len(fake_b.requests) == before  # dall-e-2 takes one image: never sent
    (skipped,) = response._hidden_params["fallbacks_skipped"]
    assert skipped["model"] == "old" and "at most 1 image" in skipped["reason"]
    (event,) = recorder.events
    assert event.fallback_from == ("primary", "old") and event.model_group == "mini"
    assert event.input_images == 2


def test_when_the_only_fallback_is_invalid_the_primary_error_is_raised(recorder, stub_500, fake_b):
    router = Router(
        [
            deployment("primary", stub_500.url, id="p"),
            deployment("old", fake_b.url, id="d2", model="dall-e-2"),
        ],
        fallbacks=[{"primary": ["old"]}],
        num_retries=0,
        allowed_fails=9,
    )
    with pytest.raises(tracking.InternalServerError) as caught:
        router.image_edit(image=[make_png(), make_png()], prompt="p", model="primary")
    assert any("fallback 'old' skipped" in note for note in caught.value.__notes__)
    (event,) = recorder.events
    assert (event.model_group, event.deployment_id, event.fallback_from) == ("primary", "p", ())
    assert event.resolved_model == "gpt-image-1" and event.error_type == "server_error"


def test_a_fallback_refused_when_prepared_does_not_name_the_call(recorder):
    """The fallback's provider refuses the operation when its request is prepared (Stability's
    inpaint makes no generations): nothing is sent to it, so the call's event names the
    attempt that was sent, whose lost answer is estimated at its own model, not Stability."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["drop;times=always"]) as dropping:
        router = Router(
            [
                deployment("primary", dropping.url, id="p", model="gpt-image-2", api_key=API_KEY),
                deployment("st", "http://127.0.0.1:9", id="s", model="stability/inpaint"),
            ],
            fallbacks=[{"primary": ["st"]}],
            num_retries=0,
        )
        with pytest.raises(tracking.APIConnectionError):
            router.image_generation(prompt="a cat", model="primary")
    (event,) = recorder.events
    assert (event.provider, event.resolved_model) == ("openai", "gpt-image-2")
    assert (event.model_group, event.deployment_id) == ("primary", "p")
    assert event.cost_source == "estimate" and event.cost_usd is not None and event.cost_usd > 0
    assert "gpt-image-2" in (event.price_ref or "")


def test_a_failed_fallback_chain_is_recorded_on_the_one_failure_event(recorder, stub_500):
    with StubUpstream(status=429, headers={"Retry-After": "0"}) as limited:
        router = Router(
            [
                deployment("primary", stub_500.url, id="p"),
                deployment("backup", limited.url, id="b", model="gpt-image-1-mini"),
            ],
            fallbacks=[{"primary": ["backup"]}],
            num_retries=1,
            allowed_fails=9,
        )
        with pytest.raises(tracking.RateLimitError):
            edit(router, model="primary")
        assert (stub_500.hits, limited.hits) == (2, 2)
    (event,) = recorder.events
    assert (event.status, event.model, event.model_group, event.fallback_from) == (
        "failure",
        "primary",
        "backup",
        ("primary",),
    )
    # one retry in each group; the backup's first attempt is the fallback, not a retry
    assert (event.attempts, event.retries, event.resolved_model) == (4, 2, "gpt-image-1-mini")


async def test_async_calls_route_and_fall_back_the_same_way(recorder, stub_500, fake):
    router = Router(
        [deployment("primary", stub_500.url, id="p"), deployment("backup", fake.url, id="b")],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=0,
        allowed_fails=9,
    )
    response = await router.aimage_edit(image=make_png(), prompt="p", model="primary")
    assert response.data
    (event,) = recorder.events
    assert (event.call_type, event.fallback_from, event.deployment_id) == (
        "aimage_edit",
        ("primary",),
        "b",
    )


def test_plain_image_edit_is_unchanged_by_the_router(recorder, fake, upstream):
    tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    (event,) = recorder.events
    assert (event.deployment_id, event.model_group, event.fallback_from) == (
        None,
        "gpt-image-1",
        (),
    )


def test_a_deployment_its_settings_fail_at_call_time_is_skipped_for_the_groups_others(
    recorder, fake, monkeypatch
):
    """A setting checked at load can go missing later (``AZURE_API_VERSION`` unset): the
    ``ConfigurationError`` its preparation raises named it as the attempt and failed the call,
    the group's other deployments untried. It is now left out of the call (never sent, so no
    attempt), and raised only when no other deployment serves the call."""
    monkeypatch.setenv("AZURE_API_VERSION", "2025-04-01-preview")
    azure = deployment("images", fake.url, id="azure", model="azure/gpt-image-2", weight=1)
    router = Router(
        [azure, deployment("images", fake.url, id="openai", model="gpt-image-2", weight=0)],
        num_retries=0,
    )
    alone = Router([{**azure, "model_name": "solo"}], num_retries=1)
    monkeypatch.delenv("AZURE_API_VERSION")
    edit(router)
    (event,) = recorder.events
    assert (event.status, event.deployment_id, event.attempts, event.retries) == (
        "success",
        "openai",
        1,
        0,
    )
    with pytest.raises(tracking.ConfigurationError, match="AZURE_API_VERSION"):
        edit(alone, model="solo")
    assert recorder.events[-1].attempts == 0
