"""What a routed call's span and metrics say after retries and a fallback: the span follows the
last attempt (model, provider, upstream) as the metrics do, fallback hops name model groups, and
a fallback's first attempt is not counted as a retry. Real Router, real loopback upstreams, the
real OpenTelemetry SDK and a real Prometheus registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY, make_png
from tests.recorder import EventRecorder
from tests.router_support import StubUpstream, deployment, primary_and_backup
from tracking.integrations.otel import OtelLogger
from tracking.integrations.prometheus import PrometheusLogger
from tracking.router import Router


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans, monkeypatch) -> Iterator[tuple[CollectorRegistry, EventRecorder]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider()
    registry = CollectorRegistry()
    recorder = EventRecorder()
    loggers = [
        OtelLogger(tracer_provider, meter_provider, enduser_id="off"),
        PrometheusLogger(registry),
        recorder,
    ]
    monkeypatch.setattr(tracking, "success_callback", loggers)
    monkeypatch.setattr(tracking, "failure_callback", loggers)
    yield registry, recorder
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_after_retries_and_a_fallback_the_span_and_metrics_name_what_answered(
    telemetry, spans, fake
):
    registry, recorder = telemetry
    with StubUpstream(status=500, headers={"Retry-After": "0"}) as broken:
        router = primary_and_backup(broken.url, "gpt-image-2.6-flare", fake.url, "gpt-image-2")
        router.image_edit(image=make_png(), prompt="a red hat", model="primary")
    assert broken.hits == 2  # the first attempt and its retry, then the fallback's one
    (event,) = recorder.events
    assert (event.status, event.attempts, event.fallback_from) == ("success", 3, ("primary",))
    assert event.retries == 1  # the backup's first attempt is a fallback, not a retry

    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert (
        span.name == "image_edit gpt-image-2"
    )  # opened for gpt-image-2.6-flare, ended on the backup
    assert attributes["gen_ai.request.model"] == "gpt-image-2"
    assert attributes["gen_ai.response.model"] == "gpt-image-2"
    assert attributes["server.port"] == fake.port
    assert attributes["image_edit.model_group"] == "backup"
    hops = [dict(e.attributes or {}) for e in span.events if e.name == "image_edit.fallback"]
    assert [
        (h["image_edit.fallback.from_model"], h["image_edit.fallback.to_model"]) for h in hops
    ] == [("primary", "backup")]
    assert [e.name for e in span.events].count("image_edit.retry") == 1

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    fallbacks = {"from_model": "primary", "to_model": "backup", "outcome": "success"}
    assert sample("image_edit_fallbacks_total", **fallbacks) == 1
    assert sample("image_edit_retries_total", model="primary", deployment="b") == 1


def test_a_failed_call_has_no_response_model(telemetry, spans):
    with StubUpstream(status=500, headers={"Retry-After": "0"}) as broken:
        router = Router(
            [deployment("only", broken.url, id="o", model="gpt-image-2", api_key=API_KEY)],
            num_retries=0,
        )
        with pytest.raises(tracking.InternalServerError):
            router.image_edit(image=make_png(), prompt="a red hat", model="only")
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.model"] == "gpt-image-2"
    assert "gen_ai.response.model" not in attributes
    assert attributes["error.type"] == "server_error"


def test_resends_and_retries_are_numbered_as_the_semantic_conventions_count_them(
    telemetry, spans, fake
):
    """A retry in the fallback group: attempts 1 and 2 on primary, 3 (the fallback's first, not
    a retry) and 4 (a retry) on backup. The span's ``http.request.resend_count`` counts every
    resend before its last attempt (the first attempt has none), and the retry events number
    the retries, not attempts they cannot place: the second retry was attempt 4, never 3."""
    _, recorder = telemetry
    with (
        StubUpstream(status=500, headers={"Retry-After": "0"}) as primary,
        StubUpstream(status=500, headers={"Retry-After": "0"}) as backup_broken,
    ):
        router = Router(
            [
                deployment("primary", primary.url, id="p", model="gpt-image-2", api_key=API_KEY),
                deployment(
                    "backup", backup_broken.url, id="b1", model="gpt-image-2", api_key=API_KEY
                ),
                deployment(
                    "backup", fake.url, id="b2", model="gpt-image-2", api_key=API_KEY, weight=0
                ),
            ],
            fallbacks=[{"primary": ["backup"]}],
            num_retries=1,
            allowed_fails=9,
        )
        router.image_edit(image=make_png(), prompt="a red hat", model="primary")
    assert (primary.hits, backup_broken.hits) == (2, 1)
    (event,) = recorder.events
    assert (event.attempts, event.retries, event.deployment_id) == (4, 2, "b2")
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["http.request.resend_count"] == 3
    retries = [dict(e.attributes or {}) for e in span.events if e.name == "image_edit.retry"]
    assert retries == [{"image_edit.retry.number": 1}, {"image_edit.retry.number": 2}]


def test_a_call_sent_once_has_no_resend_count(telemetry, spans, fake):
    router = Router([deployment("only", fake.url, id="o", model="gpt-image-2", api_key=API_KEY)])
    router.image_edit(image=make_png(), prompt="a red hat", model="only")
    (span,) = spans.get_finished_spans()
    assert "http.request.resend_count" not in (span.attributes or {})
    assert not [e for e in span.events if e.name == "image_edit.retry"]
