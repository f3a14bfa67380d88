"""The Prometheus integration: the contract's metrics, exact values, exposure, multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import tracking
from tests.conftest import API_KEY, make_png
from tests.observability_events import failed_event, make_event
from tracking import bus
from tracking.events import TokenUsage
from tracking.integrations.prometheus import (
    DURATION_BUCKETS,
    MAX_UNPRICED_MODELS,
    PrometheusLogger,
    generate_metrics,
    metrics_asgi_app,
    start_metrics_server,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def prom(registry, monkeypatch):
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    monkeypatch.setattr(tracking, "failure_callback", [logger])
    return logger


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


OPENAI = {
    "model": "gpt-image-1",
    "served_model": "gpt-image-1",
    "provider": "openai",
    "operation": "image_edit",
}


def test_exact_values_after_real_successful_failed_and_refused_calls(prom, registry, upstream):
    """Two priced successes, one 401, one validation failure and one unpriced model, exactly."""
    for _ in range(2):
        tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-1", **upstream)
    with pytest.raises(tracking.AuthenticationError):
        tracking.image_edit(
            image=make_png(),
            prompt="hello",
            model="gpt-image-1",
            api_base=upstream["api_base"],
            api_key="sk-wrong-key-000000000000",
            max_retries=0,
        )
    with pytest.raises(tracking.ValidationError):
        asyncio.run(tracking.aimage_edit(image=make_png(), prompt="p", model="gpt-image-1", n=99))

    ok = {**OPENAI, "status": "success", "error_type": ""}
    assert value(registry, "image_edit_requests_total", **ok) == 2
    auth = {**OPENAI, "status": "failure", "error_type": "authentication_error"}
    assert value(registry, "image_edit_requests_total", **auth) == 1
    refused = {**OPENAI, "status": "failure", "error_type": "validation_error"}
    refused.update(served_model="", provider="")  # refused before a model was resolved
    assert value(registry, "image_edit_requests_total", **refused) == 1
    # The fake answers "auto" with medium quality and the square size for a square input.
    images = {**OPENAI, "size": "1024x1024", "quality": "medium"}
    assert value(registry, "image_edit_images_total", **images) == 2
    # ceil(len("hello") / 4) text tokens, 323 per input image, 1056 for a medium square.
    for token_type, tokens in (("input_text", 4), ("input_image", 646), ("output_image", 2112)):
        assert value(registry, "image_edit_tokens_total", **OPENAI, token_type=token_type) == (
            tokens
        )
    assert value(registry, "image_edit_unpriced_requests_total", model="gpt-image-1") == 0
    # Each success: (2 * $5 + 323 * $10 + 1056 * $40) per 1M tokens = $0.04548.
    assert value(registry, "image_edit_cost_usd_total", **OPENAI) == pytest.approx(0.09096)
    tracking.image_edit(image=make_png(), prompt="hello", model="some-new-model", **upstream)
    assert value(registry, "image_edit_unpriced_requests_total", model="some-new-model") == 1
    duration = {"model": "gpt-image-1", "provider": "openai", "operation": "image_edit",
                "status": "success"}  # fmt: skip
    assert value(registry, "image_edit_request_duration_seconds_count", **duration) == 2
    assert value(registry, "image_edit_request_duration_seconds_bucket", le="+Inf", **duration) == 2


def test_model_names_of_unpriced_calls_are_capped_priced_ones_never(prom, registry, upstream):
    """A caller naming models at random cannot grow the series: after MAX_UNPRICED_MODELS
    names seen only on unpriced calls, others count as model="other"; a priced call's model
    always has its own label, before or after the cap."""
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-2", **upstream)
    extra = 5
    for i in range(MAX_UNPRICED_MODELS + extra):
        with pytest.raises(tracking.ValidationError):  # refused, so unpriced
            tracking.image_edit(image=make_png(), prompt="p", model=f"made-up-{i}", n=99)
    with pytest.raises(tracking.ValidationError):
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-2", n=99)
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-2.5-flare", **upstream)

    requests = [
        s for m in registry.collect() if m.name == "image_edit_requests" for s in m.samples
        if s.name == "image_edit_requests_total"
    ]  # fmt: skip
    by_model: dict[str, float] = {}
    for sample in requests:
        by_model[sample.labels["model"]] = by_model.get(sample.labels["model"], 0) + sample.value
    assert by_model.pop("other") == extra
    assert by_model.pop("gpt-image-2") == 2  # priced first: its refused call keeps the name
    assert by_model.pop("gpt-image-2.5-flare") == 1  # priced after the cap: still its own name
    assert sorted(by_model) == sorted(f"made-up-{i}" for i in range(MAX_UNPRICED_MODELS))


def test_a_priced_model_behind_made_up_prefixes_cannot_grow_the_series(prom, registry):
    """``tenant-{i}/gpt-image-2`` (a prefix naming no provider: the whole name goes to an
    OpenAI-compatible server) is priced as gpt-image-2, and each name had a series of its own,
    past the cap. Such names count toward it now; a registered provider's prefix does not."""
    from tracking.testing import FakeOpenAI

    extra = 5
    names = [f"tenant-{i}/gpt-image-2" for i in range(MAX_UNPRICED_MODELS + extra)]
    with FakeOpenAI(api_keys=[API_KEY], extra_models=names) as fake:
        upstream = {"api_base": fake.url, "api_key": API_KEY}
        for name in names:
            tracking.image_edit(image=make_png(), prompt="p", model=name, **upstream)
        tracking.image_edit(image=make_png(), prompt="p", model="openai/gpt-image-2", **upstream)
    models = {
        s.labels["model"]
        for m in registry.collect()
        if m.name == "image_edit_requests"
        for s in m.samples
        if s.name == "image_edit_requests_total"
    }
    assert len(models) == MAX_UNPRICED_MODELS + 2  # the capped names, "other", openai/...
    assert {"other", "openai/gpt-image-2", "tenant-0/gpt-image-2"} <= models
    assert value(registry, "image_edit_requests_total", model="other", served_model="other",
                 provider="openai", operation="image_edit", status="success",
                 error_type="") == extra  # fmt: skip


def test_two_loggers_on_one_registry_count_each_call_once(registry, upstream, monkeypatch, caplog):
    """``callbacks = ["prometheus", PrometheusLogger()]`` (or two loggers on one registry)
    counted every call, and its cost, twice: they share the registry's metrics."""
    first, second = PrometheusLogger(registry), PrometheusLogger(registry)
    elsewhere = CollectorRegistry()
    monkeypatch.setattr(tracking, "callbacks", [first, second, PrometheusLogger(elsewhere)])
    monkeypatch.setattr(tracking, "success_callback", [first])
    response = tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-2", **upstream)
    labels = {"model": "gpt-image-2", "served_model": "gpt-image-2", "provider": "openai",
              "operation": "image_edit", "status": "success", "error_type": ""}  # fmt: skip
    assert value(registry, "image_edit_requests_total", **labels) == 1
    assert value(elsewhere, "image_edit_requests_total", **labels) == 1  # its own registry
    cost = {k: v for k, v in labels.items() if k not in ("status", "error_type")}
    assert value(registry, "image_edit_cost_usd_total", **cost) == float(response.cost_usd)
    assert "records what" in caplog.text


def test_exact_values_from_priced_retried_and_fallback_events(registry):
    """Costs are summed as floats; retries, fallbacks and cached tokens land on their labels."""
    logger = PrometheusLogger(registry)
    usage = TokenUsage(
        input_text_tokens=10,
        input_image_tokens=300,
        cached_input_tokens=20,
        output_tokens=272,
        total_tokens=602,
    )
    logger.on_end(make_event(cost_usd=Decimal("0.011"), usage=usage))
    logger.on_end(make_event(cost_usd=Decimal("0.25"), retries=2, attempts=3, latency_ms=40_000))
    logger.on_end(
        make_event(
            model="gpt-image-1",
            model_group="gpt-image-1-mini",
            resolved_model="gpt-image-1-mini",
            fallback_from=("gpt-image-1",),
            cost_usd=Decimal("0.005"),
        )
    )
    logger.on_end(
        failed_event(retries=1, fallback_from=("a", "b"), model_group="c", resolved_model="c")
    )
    logger.on_end(
        failed_event(error_type="brand_new_error", resolved_model="c", cost_usd=Decimal("0.002"))
    )

    assert value(registry, "image_edit_cost_usd_total", **OPENAI) == pytest.approx(0.261)
    mini = {**OPENAI, "served_model": "gpt-image-1-mini"}
    assert value(registry, "image_edit_cost_usd_total", **mini) == pytest.approx(0.005)
    assert value(registry, "image_edit_cost_usd_total", **{**OPENAI, "served_model": "c"}) == (
        pytest.approx(0.002)
    )
    assert value(registry, "image_edit_tokens_total", **OPENAI, token_type="cached_input") == 20
    assert value(registry, "image_edit_tokens_total", **OPENAI, token_type="input_text") == 20
    assert value(registry, "image_edit_images_total", **OPENAI, size="1024x1024",
                 quality="low") == 2  # fmt: skip
    assert value(registry, "image_edit_retries_total", model="gpt-image-1", deployment="dep-a") == 3
    fallbacks = "image_edit_fallbacks_total"
    assert value(registry, fallbacks, from_model="gpt-image-1", to_model="gpt-image-1-mini",
                 outcome="success") == 1  # fmt: skip
    assert value(registry, fallbacks, from_model="a", to_model="b", outcome="failure") == 1
    assert value(registry, fallbacks, from_model="b", to_model="c", outcome="failure") == 1
    other = {**OPENAI, "served_model": "c", "status": "failure", "error_type": "other"}
    assert value(registry, "image_edit_requests_total", **other) == 1  # unknown type: bounded
    assert value(registry, "image_edit_requests_total", **{**other, "error_type": "rate_limit"})
    assert value(registry, "image_edit_unpriced_requests_total", model="gpt-image-1") == 0
    slow = {"model": "gpt-image-1", "provider": "openai", "operation": "image_edit",
            "status": "success"}  # fmt: skip
    bucket = "image_edit_request_duration_seconds_bucket"
    assert value(registry, bucket, le="2.5", **slow) == 2
    assert value(registry, bucket, le="30.0", **slow) == 2
    assert value(registry, bucket, le="45.0", **slow) == 3
    assert value(registry, "image_edit_request_duration_seconds_sum", **slow) == 45.0


def test_histogram_has_the_design_buckets(registry):
    PrometheusLogger(registry).on_end(make_event())
    text = generate_latest(registry).decode()
    for bound in DURATION_BUCKETS:
        assert f'image_edit_request_duration_seconds_bucket{{le="{bound}"' in text
    assert DURATION_BUCKETS[0] == 0.25 and DURATION_BUCKETS[-1] == 180.0


def test_size_label_is_a_standard_size_or_custom(registry):
    logger = PrometheusLogger(registry)
    logger.on_end(make_event(size="1360x1024"))
    logger.on_end(make_event(size="1536x1024"))
    labels = {**OPENAI, "quality": "low"}
    assert value(registry, "image_edit_images_total", **labels, size="custom") == 1
    assert value(registry, "image_edit_images_total", **labels, size="1536x1024") == 1
    assert value(registry, "image_edit_images_total", **labels, size="1360x1024") == 0


def test_end_users_are_never_a_label_unless_opted_in(registry):
    PrometheusLogger(registry).on_end(make_event(end_user="alice@example.com"))
    assert "alice@example.com" not in generate_latest(registry).decode()


def test_end_user_metric_is_bounded_by_lru_and_counts_evictions(registry):
    logger = PrometheusLogger(registry, end_user_metric=True, end_user_max_series=2)
    metric = "image_edit_end_user_cost_usd_total"
    logger.on_end(make_event(end_user="u1", cost_usd=Decimal("1")))
    logger.on_end(make_event(end_user="u2", cost_usd=Decimal("2")))
    logger.on_end(make_event(end_user="u1", cost_usd=Decimal("1")))  # u1 is now the most recent
    logger.on_end(make_event(end_user="u3", cost_usd=Decimal("3")))  # evicts u2
    assert value(registry, metric, end_user="u1") == 2
    assert registry.get_sample_value(metric, {"end_user": "u2"}) is None
    assert value(registry, metric, end_user="u3") == 3
    assert value(registry, "tracking_end_user_series_evicted_total") == 1
    for i in range(100):
        logger.on_end(make_event(end_user=f"many-{i}", cost_usd=Decimal("0.01")))
    series = [line for line in generate_latest(registry).decode().splitlines()
              if line.startswith(metric)]  # fmt: skip
    assert len(series) == 2
    assert value(registry, "tracking_end_user_series_evicted_total") == 101


def test_end_users_sharing_a_long_prefix_are_two_series_never_one(registry):
    """Ids were cut to 100 characters: two users whose ids share those summed into one series."""
    logger = PrometheusLogger(registry, end_user_metric=True)
    shared = "https://example.com/tenants/acme/" + "x" * 80 + "/users/"
    alice, bob = shared + "alice@example.com", shared + "bob@example.com"
    logger.on_end(make_event(end_user=alice, cost_usd=Decimal("1")))
    logger.on_end(make_event(end_user=bob, cost_usd=Decimal("2")))
    logger.on_end(make_event(end_user=alice, cost_usd=Decimal("4")))
    charged = {
        s.labels["end_user"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "image_edit_end_user_cost_usd_total"
    }
    assert sorted(charged.values()) == [2, 5]
    assert all(len(label) <= 100 and label.startswith(shared[:60]) for label in charged)
    short = "carol"
    logger.on_end(make_event(end_user=short, cost_usd=Decimal("1")))
    assert value(registry, "image_edit_end_user_cost_usd_total", end_user=short) == 1


def test_end_user_metric_is_refused_in_multiprocess_mode(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(tracking.ConfigurationError, match="multiprocess mode"):
        PrometheusLogger(registry, end_user_metric=True)


def test_metrics_fed_by_the_router_and_proxy(registry):
    logger = PrometheusLogger(registry)
    logger.record_cooldown("gpt-image-1", "dep-b")
    logger.record_cooldown("gpt-image-1", "dep-b")
    logger.record_proxy_rejection("budget")
    with pytest.raises(ValueError, match="auth, blocked, body_timeout, budget"):
        logger.record_proxy_rejection("because")
    cooldowns = "image_edit_deployment_cooldowns_total"
    assert value(registry, cooldowns, model="gpt-image-1", deployment="dep-b") == 2
    assert value(registry, "image_edit_proxy_rejections_total", reason="budget") == 1


def test_bus_counters_are_exported_when_the_bus_provides_them(registry, monkeypatch):
    PrometheusLogger(registry)
    assert value(registry, "tracking_callback_errors_total", callback="my_fn") == 0
    snapshot = {"callback_errors": {"my_fn": 3}, "events_dropped": {"callbacks": 2}}
    monkeypatch.setattr(bus, "counters", lambda: snapshot, raising=False)
    assert value(registry, "tracking_callback_errors_total", callback="my_fn") == 3
    assert value(registry, "tracking_events_dropped_total", sink="callbacks") == 2


def test_loggers_on_one_registry_share_its_metrics(registry):
    first, second = PrometheusLogger(registry), PrometheusLogger(registry)
    first.on_end(make_event())
    second.on_end(make_event())
    ok = {**OPENAI, "status": "success", "error_type": ""}
    assert value(registry, "image_edit_requests_total", **ok) == 2


def test_a_malformed_event_never_reaches_the_caller(registry):
    logger = PrometheusLogger(registry)
    logger.on_end(make_event().replace(latency_ms="not a number"))
    logger.on_end(make_event())
    assert value(registry, "image_edit_requests_total", **OPENAI, status="success",
                 error_type="") == 2  # fmt: skip


def test_a_negative_count_is_refused_in_its_call_and_never_breaks_a_scrape(registry):
    """A counter never goes down: the call whose cost is negative has that cost and the counts
    after it refused (reported, not raised), and the next scrapes still read every other call."""
    logger = PrometheusLogger(registry)
    logger.on_end(make_event())
    logger.on_end(make_event(cost_usd=Decimal("-0.5")))
    logger.on_end(make_event())
    ok = {**OPENAI, "status": "success", "error_type": ""}
    assert value(registry, "image_edit_requests_total", **ok) == 3
    assert value(registry, "image_edit_cost_usd_total", **OPENAI) == pytest.approx(0.022)
    series = {**OPENAI, "token_type": "output_image"}
    assert value(registry, "image_edit_tokens_total", **series) == 2 * 272
    assert b"image_edit_requests_total{" in generate_latest(registry)


def test_one_line_registration_uses_the_global_registry(monkeypatch, upstream):
    monkeypatch.setattr(tracking, "success_callback", ["prometheus"])
    ok = {**OPENAI, "status": "success", "error_type": ""}
    before = value(REGISTRY, "image_edit_requests_total", **ok)
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-1", **upstream)
    assert value(REGISTRY, "image_edit_requests_total", **ok) == before + 1
    assert isinstance(bus.resolve("prometheus"), PrometheusLogger)


def test_metrics_server_and_asgi_app_and_generate_metrics_expose_the_metrics(registry):
    PrometheusLogger(registry).on_end(make_event())
    body, content_type = generate_metrics(registry)
    assert b"image_edit_requests_total{" in body and content_type.startswith("text/plain")

    server, thread = start_metrics_server(0, registry=registry)
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics")
        assert answer.status_code == 200
        assert "image_edit_cost_usd_total{" in answer.text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics_asgi_app(registry))
        async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
            return await client.get("/metrics")

    answer = asyncio.run(scrape())
    assert answer.status_code == 200 and "image_edit_images_total{" in answer.text


WORKER = """
import sys
import tracking
from tests.conftest import make_png
def broken(kwargs, response, start_time, end_time):
    raise RuntimeError("a user callback's fault")
tracking.success_callback = ["prometheus", broken]
tracking.failure_callback = ["prometheus"]
for _ in range(2):
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-1",
                        api_base=sys.argv[1], api_key=sys.argv[2])
try:
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-1",
                        api_base=sys.argv[1], api_key="sk-wrong-key-0000000000", max_retries=0)
except tracking.AuthenticationError:
    pass
tracking.bus.resolve("prometheus").record_cooldown("gpt-image-1", "dep-a")
"""


def test_multiprocess_mode_sums_real_worker_processes(fake, tmp_path, monkeypatch):
    """Three worker processes write to PROMETHEUS_MULTIPROC_DIR; the exposition sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, fake.url, API_KEY],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr.decode()
    assert len(list(tmp_path.glob("counter_*.db"))) == 3  # one file per worker

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    body, _ = generate_metrics()
    text = body.decode()
    ok = (
        'image_edit_requests_total{error_type="",model="gpt-image-1",operation="image_edit",'
        'provider="openai",'
    )
    assert f'{ok}served_model="gpt-image-1",status="success"}} 6.0' in text
    failed = 'error_type="authentication_error",model="gpt-image-1"'
    assert f"image_edit_requests_total{{{failed}" in text
    assert (
        'image_edit_deployment_cooldowns_total{deployment="dep-a",model="gpt-image-1"} 3.0' in text
    )
    assert (
        'image_edit_request_duration_seconds_count{model="gpt-image-1",operation="image_edit",provider="openai",'
        'status="success"} 6.0' in text
    )
    # The bus's own counters, summed over the workers (each wrote its last at its exit): the
    # alerts on callback errors and dropped events see every worker, not none.
    assert 'tracking_callback_errors_total{callback="__main__.broken"} 6.0' in text
    assert len(list(tmp_path.glob("bus-*.json"))) == 3


def test_cached_label_children_count_exactly_past_the_cache_bound(registry, monkeypatch):
    import tracking.integrations.prometheus as prometheus_module

    monkeypatch.setattr(prometheus_module, "_MAX_CACHED_SERIES", 2)
    logger = PrometheusLogger(registry)
    for model in ("m-a", "m-b", "m-c", "m-a", "m-a"):  # the cache is reset when m-c arrives
        logger.on_end(make_event(model=model, resolved_model=model))
    logger.on_end(failed_event(model="m-a", resolved_model="m-a"))
    for model, successes in (("m-a", 3), ("m-b", 1), ("m-c", 1)):
        labels = {"model": model, "served_model": model, "provider": "openai",
                  "operation": "image_edit"}  # fmt: skip
        assert (
            value(registry, "image_edit_requests_total", **labels, status="success", error_type="")
            == successes
        )
    failures = {"model": "m-a", "served_model": "m-a", "provider": "openai",
                "operation": "image_edit"}  # fmt: skip
    assert (
        value(
            registry,
            "image_edit_requests_total",
            **failures,
            status="failure",
            error_type="rate_limit",
        )
        == 1
    )
    assert len(logger.metrics._series) <= 2
