"""The OpenTelemetry integration: spans, trace propagation, GenAI metrics, OTLP on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY, make_png
from tests.observability_events import failed_event, make_event
from tracking.events import TokenUsage
from tracking.integrations.otel import DURATION_BUCKETS, TOKEN_BUCKETS, OtelLogger
from tracking.integrations.prometheus import PrometheusLogger

SALT = "test-salt"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider
    provider.shutdown()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def otel(tracer_provider, meter_provider, monkeypatch) -> OtelLogger:
    logger = OtelLogger(tracer_provider, meter_provider, enduser_salt=SALT)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    monkeypatch.setattr(tracking, "failure_callback", [logger])
    return logger


def only_span(spans: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans.get_finished_spans()
    return span


def hashed(end_user: str) -> str:
    return hmac.new(SALT.encode(), end_user.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize(("n", "expected"), [(None, None), (1, None), (2, 2)])
def test_choice_count_is_set_only_when_the_request_asks_for_other_than_one(
    otel, spans, fake, upstream, n, expected
):
    """The GenAI conventions: ``gen_ai.request.choice.count`` is "Conditionally Required if
    available, in the request, and !=1"; it was set to 1 when ``n`` was not given."""
    tracking.image_edit(image=make_png(), prompt="hello", model="gpt-image-1", n=n, **upstream)
    attributes = dict(only_span(spans).attributes or {})
    assert attributes.get("gen_ai.request.choice.count") == expected


def test_a_markup_is_said_on_the_span_only_when_sent(otel, spans, fake, upstream):
    """``image_edit.has_markup`` is set (true) on a call that sent a ``markup`` image; a call
    without one carries no such attribute (as the exact attributes below show)."""
    from tests.test_markup import MODEL, markup_png

    tracking.image_edit(
        image=make_png(), prompt="hello", model=MODEL, markup=markup_png(), **upstream
    )
    attributes = dict(only_span(spans).attributes or {})
    assert attributes["image_edit.has_markup"] is True
    assert attributes["image_edit.has_mask"] is False


def test_successful_call_has_one_client_span_with_the_genai_attributes(otel, spans, fake, upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="hello", model="gpt-image-1", user="user-7", **upstream
    )
    span = only_span(spans)
    host, port = upstream["api_base"].split("//")[1].split("/")[0].split(":")
    assert span.name == "image_edit gpt-image-1"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    upstream_id = attributes.pop("image_edit.upstream_request_id")
    assert str(upstream_id).startswith("req_fake_")
    assert float(attributes.pop("image_edit.upstream_latency_ms")) > 0  # type: ignore[arg-type]
    assert attributes == {
        "gen_ai.operation.name": "image_edit",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-image-1",
        "gen_ai.response.model": "gpt-image-1",
        "gen_ai.output.type": "image",
        "gen_ai.usage.input_tokens": 2 + 323,
        "gen_ai.usage.output_tokens": 1056,
        "server.address": host,
        "server.port": int(port),
        "enduser.id": hashed("user-7"),
        "image_edit.request_id": response.request_id,
        "image_edit.model": "gpt-image-1",
        "image_edit.model_group": "gpt-image-1",
        "image_edit.status": "success",
        "image_edit.call_type": "image_edit",
        "image_edit.images_returned": 1,
        "image_edit.input_images": 1,
        "image_edit.input_bytes": len(make_png()),
        "image_edit.has_mask": False,
        "image_edit.prompt_chars": 5,
        # gpt-image-1 per 1M tokens: $5 text in, $10 image in, $40 image out:
        # (2 * 5 + 323 * 10 + 1056 * 40) / 1e6 = 0.04548
        "image_edit.cost_source": "usage",
        "image_edit.cost_usd": 0.04548,
        "image_edit.cost_per_image_usd": 0.04548,
        "image_edit.price_ref": "packaged:gpt-image-1#official",
        "image_edit.attempts": 1,
        "image_edit.retries": 0,
        "image_edit.size": "1024x1024",
        "image_edit.quality": "medium",
        "image_edit.output_format": "png",
        "image_edit.http_status": 200,
    }


def test_trace_context_reaches_the_upstream_and_parents_on_the_callers_span(
    otel, spans, tracer_provider, fake, upstream
):
    outer_tracer = tracer_provider.get_tracer("app")

    async def call() -> None:
        with outer_tracer.start_as_current_span("handle request"):
            await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", **upstream
            )

    asyncio.run(call())
    inner, outer = spans.get_finished_spans()
    traceparent = fake.requests[-1].headers["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert trace_id == format(inner.context.trace_id, "032x")
    assert span_id == format(inner.context.span_id, "016x")  # the upstream's parent is our span
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


def test_failed_call_has_error_status_and_type_and_no_secret(otel, spans, upstream):
    with pytest.raises(tracking.AuthenticationError):
        tracking.image_edit(
            image=make_png(),
            prompt="p",
            model="gpt-image-1",
            api_base=upstream["api_base"],
            api_key="sk-planted-secret-key-0123456789",
            max_retries=0,
        )
    span = only_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "authentication_error"
    assert attributes["image_edit.http_status"] == 401
    assert "gen_ai.usage.input_tokens" not in attributes
    everything = repr(attributes) + str(span.status.description) + repr(span.events)
    assert "sk-planted-secret-key-0123456789" not in everything
    assert "Incorrect API key" in str(span.status.description)


def test_a_call_refused_by_validation_still_gets_a_span(otel, spans, upstream):
    with pytest.raises(tracking.ValidationError):
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", n=99, **upstream)
    span = only_span(spans)
    assert span.name == "image_edit gpt-image-1"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "validation_error"
    assert span.attributes["gen_ai.operation.name"] == "image_edit"
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time >= span.start_time


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "openai"),
        ("azure", "azure.ai.openai"),
        ("gemini", "gcp.gemini"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("xai", "x_ai"),
        ("black_forest_labs", "black_forest_labs"),  # no well-known value: our prefix
    ],
)
def test_provider_names_are_the_conventions_well_known_values(
    tracer_provider, meter_provider, spans, reader, provider, name
):
    logger = OtelLogger(tracer_provider, meter_provider, enduser_id="off")
    logger.on_end(make_event(provider=provider))
    assert only_span(spans).attributes["gen_ai.provider.name"] == name  # type: ignore[index]
    (metric,) = [
        m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.operation.duration"
    ]
    assert {p.attributes["gen_ai.provider.name"] for p in metric.data.data_points} == {name}


def test_hand_built_events_give_exact_cost_usage_retry_and_fallback_attributes(
    tracer_provider, meter_provider, spans
):
    logger = OtelLogger(tracer_provider, meter_provider, enduser_salt=SALT)
    usage = TokenUsage(
        input_text_tokens=10,
        input_image_tokens=300,
        cached_input_tokens=20,
        output_tokens=272,
        total_tokens=602,
    )
    event = make_event(
        cost_usd=Decimal("0.0125"),
        cost_per_image_usd=Decimal("0.00625"),
        images_returned=2,
        usage=usage,
        retries=2,
        attempts=3,
        fallback_from=("gpt-image-1",),
        resolved_model="gpt-image-1-mini",
        model_group="gpt-image-1-mini",
    )
    logger.on_end(event)
    span = only_span(spans)
    attributes = dict(span.attributes or {})
    assert span.name == "image_edit gpt-image-1-mini"
    assert attributes["image_edit.cost_usd"] == 0.0125
    assert attributes["image_edit.cost_per_image_usd"] == 0.00625
    assert attributes["image_edit.cost_source"] == "usage"
    assert attributes["image_edit.price_ref"] == "gpt-image-1@2025-04-23"
    assert attributes["gen_ai.usage.input_tokens"] == 310
    assert attributes["gen_ai.usage.output_tokens"] == 272
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 20
    assert attributes["image_edit.fallback_from"] == ("gpt-image-1",)
    assert attributes["image_edit.deployment_id"] == "dep-a"
    assert attributes["server.address"] == "api.example.test"
    assert attributes["server.port"] == 8443
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        (
            "image_edit.fallback",
            {
                "image_edit.fallback.from_model": "gpt-image-1",
                "image_edit.fallback.to_model": "gpt-image-1-mini",
                "image_edit.fallback.hop": 1,
            },
        ),
        ("image_edit.retry", {"image_edit.retry.number": 1}),
        ("image_edit.retry", {"image_edit.retry.number": 2}),
    ]
    assert attributes["http.request.resend_count"] == 2
    assert span.start_time == int(event.start_time.timestamp() * 1e9)
    assert span.end_time == int(event.end_time.timestamp() * 1e9)


@pytest.mark.parametrize(
    ("mode", "expected"), [("hashed", hashed("user-1")), ("raw", "user-1"), ("off", None)]
)
def test_enduser_id_is_hashed_by_default_raw_or_off_by_setting(
    tracer_provider, meter_provider, spans, mode, expected
):
    OtelLogger(tracer_provider, meter_provider, enduser_id=mode, enduser_salt=SALT).on_end(
        make_event(end_user="user-1")
    )
    assert (only_span(spans).attributes or {}).get("enduser.id") == expected


def test_an_unknown_enduser_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRACKING_OTEL_ENDUSER_ID", "plain")
    with pytest.raises(tracking.ConfigurationError, match="hashed, raw, off"):
        OtelLogger()


def test_enduser_hash_without_a_salt_is_still_not_the_raw_id(tracer_provider, spans):
    OtelLogger(tracer_provider).on_end(make_event(end_user="user-1"))
    value = (only_span(spans).attributes or {})["enduser.id"]
    assert value != "user-1" and value != hashed("user-1") and len(str(value)) == 32


def test_prompt_never_recorded_unless_content_capture_then_truncated(
    tracer_provider, meter_provider, spans, monkeypatch, upstream
):
    prompt = "PROMPT-TEXT " * 50
    monkeypatch.setattr(tracking, "success_callback", [OtelLogger(tracer_provider)])
    tracking.image_edit(image=make_png(), prompt=prompt, model="gpt-image-1", **upstream)
    assert "PROMPT-TEXT" not in repr(only_span(spans).attributes)
    spans.clear()

    capture = OtelLogger(tracer_provider, capture_content=True, max_prompt_chars=24)
    monkeypatch.setattr(tracking, "success_callback", [capture])
    tracking.image_edit(image=make_png(), prompt=prompt, model="gpt-image-1", **upstream)
    attributes = dict(only_span(spans).attributes or {})
    messages = json.loads(str(attributes["gen_ai.input.messages"]))
    assert messages == [{"role": "user", "parts": [{"type": "text", "content": prompt[:24]}]}]
    # Images are never attributes: no value anywhere near the size of an image.
    assert max(len(str(v)) for v in attributes.values()) < 200


def metric_points(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Any] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = metric
    return found


def test_genai_metrics_have_the_conventions_units_buckets_and_values(
    tracer_provider, meter_provider, reader
):
    logger = OtelLogger(tracer_provider, meter_provider)
    logger.on_end(make_event(latency_ms=2500.0))
    logger.on_end(make_event(latency_ms=500.0))
    logger.on_end(failed_event(latency_ms=100.0))
    metrics = metric_points(reader)
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    by_error = {p.attributes.get("error.type"): p for p in duration.data.data_points}
    ok = by_error[None]
    assert tuple(ok.explicit_bounds) == DURATION_BUCKETS
    # the conventions' doubling from 10 ms, on past 81.92 s to cover the 600 s default timeout
    assert tuple(0.01 * 2**i for i in range(17)) == DURATION_BUCKETS
    assert DURATION_BUCKETS[-2] < 600 < DURATION_BUCKETS[-1]
    assert ok.count == 2 and ok.sum == 3.0
    assert dict(ok.attributes) == {
        "gen_ai.operation.name": "image_edit",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-image-1",
        "server.address": "api.example.test",
        "server.port": 8443,
    }
    assert by_error["rate_limit"].count == 1

    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert tuple(by_type["input"].explicit_bounds) == TOKEN_BUCKETS
    assert TOKEN_BUCKETS[0] == 1 and TOKEN_BUCKETS[-1] == 67108864
    assert (by_type["input"].count, by_type["input"].sum) == (2, 666)
    assert (by_type["output"].count, by_type["output"].sum) == (2, 544)


def test_streamed_calls_record_time_to_first_chunk_and_others_do_not(otel, reader, fake, upstream):
    """The conventions' ``gen_ai.client.operation.time_to_first_chunk`` metric: recorded for
    streamed calls (SHOULD), never for the others (SHOULD NOT); it was missing."""
    tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert "gen_ai.client.operation.time_to_first_chunk" not in metric_points(reader)
    stream = tracking.image_edit(
        image=make_png(), prompt="p", model="gpt-image-1", stream=True, partial_images=1, **upstream
    )
    list(stream)
    assert stream.event is not None and stream.event.time_to_first_image_ms is not None
    metric = metric_points(reader)["gen_ai.client.operation.time_to_first_chunk"]
    assert metric.unit == "s"
    (point,) = metric.data.data_points
    assert point.count == 1 and point.sum == stream.event.time_to_first_image_ms / 1000
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    host, port = upstream["api_base"].split("//")[1].split("/")[0].split(":")
    assert dict(point.attributes) == {
        "gen_ai.operation.name": "image_edit",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-image-1",
        "server.address": host,
        "server.port": int(port),
    }


def test_a_stream_broken_after_its_first_image_has_a_first_chunk_without_error_type(
    tracer_provider, meter_provider, reader
):
    logger = OtelLogger(tracer_provider, meter_provider)
    logger.on_end(failed_event(time_to_first_image_ms=1500.0))
    logger.on_end(failed_event())  # no first image: nothing to record
    (point,) = metric_points(reader)["gen_ai.client.operation.time_to_first_chunk"].data.data_points
    assert (point.count, point.sum) == (1, 1.5)
    assert "error.type" not in point.attributes


def test_library_uses_global_providers_and_never_sets_them(monkeypatch, fake, upstream):
    before = trace.get_tracer_provider()
    monkeypatch.setattr(tracking, "success_callback", ["otel"])
    tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert trace.get_tracer_provider() is before
    if type(before).__name__ == "ProxyTracerProvider":  # no SDK installed in this session
        assert "traceparent" not in fake.requests[-1].headers  # nothing recorded, nothing sent


class FailingExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        pass


def test_a_broken_span_backend_affects_neither_the_call_nor_other_integrations(
    monkeypatch, upstream
):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FailingExporter()))
    registry = CollectorRegistry()
    otel, prom = OtelLogger(provider), PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [otel, prom])
    try:
        response = tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-1", **upstream
        )
    finally:
        provider.shutdown()
    assert response.images_returned == 1
    labels = {"model": "gpt-image-1", "served_model": "gpt-image-1", "provider": "openai",
              "operation": "image_edit", "status": "success", "error_type": ""}  # fmt: skip
    assert registry.get_sample_value("image_edit_requests_total", labels) == 1


class Collector(BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP receiver: decodes each protobuf export request it is sent."""

    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        if self.path == "/v1/traces":
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        else:
            answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_spans_and_metrics_exported_over_otlp_http_to_a_real_receiver(
    collector, monkeypatch, upstream
):
    base = f"http://127.0.0.1:{collector.server_port}"
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5))
    )
    metric_reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=5),
        export_interval_millis=3_600_000,  # exported on shutdown only
    )
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    monkeypatch.setattr(tracking, "success_callback", [OtelLogger(tracer_provider, meter_provider)])
    try:
        response = tracking.image_edit(
            image=make_png(), prompt="hello", model="gpt-image-1", **upstream
        )
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    traces = [body for path, body in collector.received if path == "/v1/traces"]
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(traces[0])
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert span.name == "image_edit gpt-image-1"
    assert span.kind == span.SPAN_KIND_CLIENT
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "image_edit"
    assert attributes["gen_ai.usage.output_tokens"].int_value == 1056
    assert attributes["image_edit.request_id"].string_value == response.request_id
    assert request.resource_spans[0].scope_spans[0].scope.name == "tracking"
    assert API_KEY.encode() not in traces[0]

    exported = [body for path, body in collector.received if path == "/v1/metrics"]
    metrics_request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(exported[-1])
    by_name = {m.name: m for m in metrics_request.resource_metrics[0].scope_metrics[0].metrics}
    duration = by_name["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    assert tuple(duration.histogram.data_points[0].explicit_bounds) == DURATION_BUCKETS
    assert duration.histogram.data_points[0].count == 1
    assert by_name["gen_ai.client.token.usage"].unit == "{token}"


@pytest.mark.parametrize(
    ("base", "port"), [("https://127.0.0.1/v1", 443), ("http://127.0.0.1/v1", 80)]
)
def test_server_port_is_the_schemes_default_when_the_base_names_none(
    otel, spans, reader, base, port
):
    # nothing listens there (the call fails to connect, or whatever does answers no edit),
    # after its span was opened for it
    with pytest.raises(tracking.TrackingError):
        tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-2", api_base=base,
            api_key=API_KEY, max_retries=0, timeout=5,
        )  # fmt: skip
    attributes = dict(only_span(spans).attributes or {})
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", port)
    (point,) = metric_points(reader)["gen_ai.client.operation.duration"].data.data_points
    assert point.attributes["server.port"] == port


def test_end_attributes_are_set_in_one_order_each_only_when_the_event_has_it(
    tracer_provider, meter_provider
):
    """The optional ones after the eleven every call has, in the order exporters then send them:
    each present value, and none of an event that has none (a refused call's)."""
    logger = OtelLogger(tracer_provider, meter_provider, enduser_salt=SALT)
    event = make_event(has_markup=True, output_format="png", http_status=200)
    always = [
        "image_edit.model",
        "image_edit.status",
        "image_edit.call_type",
        "image_edit.images_returned",
        "image_edit.input_images",
        "image_edit.input_bytes",
        "image_edit.has_mask",
        "image_edit.prompt_chars",
        "image_edit.cost_source",
        "image_edit.attempts",
        "image_edit.retries",
    ]
    assert list(logger._end_attributes(event)) == [
        *always,
        "image_edit.model_group",
        "image_edit.deployment_id",
        "image_edit.size",
        "image_edit.quality",
        "image_edit.output_format",
        "image_edit.upstream_request_id",
        "image_edit.http_status",
        "image_edit.price_ref",
        "image_edit.cost_usd",
        "image_edit.cost_per_image_usd",
        "image_edit.upstream_latency_ms",
        "image_edit.has_markup",
        "enduser.id",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    ]
    bare = failed_event(
        model_group=None,
        deployment_id=None,
        upstream_request_id=None,
        http_status=None,
        price_ref=None,
        upstream_latency_ms=None,
        end_user=None,
    )
    assert list(logger._end_attributes(bare)) == always
