"""The structlog integration: one JSON line per call, redacted, without taking over logging."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import tracking
from tests.conftest import API_KEY, make_png
from tests.observability_events import START, failed_event, make_event
from tracking import bus
from tracking.events import NO_METADATA, ImageEditEvent, freeze_metadata
from tracking.integrations.otel import OtelLogger
from tracking.integrations.prometheus import PrometheusLogger
from tracking.integrations.structlog import StructlogLogger

PLANTED = "sk-planted-secret-9f8e7d6c5b4a3210"


@pytest.fixture(autouse=True)
def _host_has_not_configured_structlog():
    assert not structlog.is_configured()
    yield
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def logger(stream, monkeypatch) -> StructlogLogger:
    integration = StructlogLogger(stream=stream)
    monkeypatch.setattr(tracking, "success_callback", [integration])
    monkeypatch.setattr(tracking, "failure_callback", [integration])
    return integration


def lines(logger: StructlogLogger, stream: io.StringIO) -> list[dict[str, Any]]:
    assert logger.flush(10)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def event_fields() -> set[str]:
    return set(make_event().to_dict())


def test_one_json_line_per_call_with_exact_fields(logger, stream, upstream):
    """A success, an upstream failure and a refused call: three lines, known values."""
    ok = tracking.image_edit(
        image=make_png(), prompt="hello", model="gpt-image-1", user="u-1", **upstream
    )
    with pytest.raises(tracking.AuthenticationError):
        tracking.image_edit(
            image=make_png(),
            prompt="hello",
            model="gpt-image-1",
            api_base=upstream["api_base"],
            api_key=PLANTED,
            max_retries=0,
        )
    with pytest.raises(tracking.ValidationError):
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", n=0, **upstream)

    success, failure, refused = lines(logger, stream)
    assert set(success) == event_fields() | {"event", "level", "timestamp", "trace_id"}
    assert success["event"] == "image_edit" and success["level"] == "info"
    assert success["request_id"] == ok.request_id
    assert success["status"] == "success"
    assert success["end_user"] == "u-1"
    assert success["images_returned"] == 1
    assert success["usage"] == {
        "input_text_tokens": 2,
        "input_image_tokens": 323,
        "cached_input_tokens": 0,
        "output_tokens": 1056,
        "total_tokens": 1381,
    }
    # (2 * $5 + 323 * $10 + 1056 * $40) per 1M tokens, as an exact decimal string.
    assert success["cost_usd"] == "0.04548" and success["cost_source"] == "usage"
    assert success["trace_id"] is None  # no tracing configured
    assert success["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(success["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert stamp == datetime.fromisoformat(success["end_time"])
    assert (failure["status"], failure["error_type"], failure["http_status"]) == (
        "failure",
        "authentication_error",
        401,
    )
    assert (refused["status"], refused["error_type"]) == ("failure", "validation_error")


def test_hand_built_events_keep_decimal_costs_exact(logger, stream):
    logger.on_end(make_event(cost_usd=Decimal("0.0110"), cost_per_image_usd=Decimal("0.0055")))
    logger.on_end(failed_event(retries=2, fallback_from=("a", "b")))
    priced, failed = lines(logger, stream)
    assert priced["cost_usd"] == "0.0110" and priced["cost_per_image_usd"] == "0.0055"
    assert priced["cost_source"] == "usage" and priced["price_ref"] == "gpt-image-1@2025-04-23"
    assert priced["timestamp"] == "2026-03-01T12:00:02.500000Z"
    assert failed["retries"] == 2 and failed["fallback_from"] == ["a", "b"]
    assert failed["error_message"] == "429 from api.example.test: slow down"


def test_trace_id_is_the_one_sent_upstream(stream, monkeypatch, fake, upstream):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = StructlogLogger(stream=stream)
    # structlog first: the trace context is read at the end, whatever the order.
    monkeypatch.setattr(tracking, "success_callback", [logs, OtelLogger(provider)])
    try:
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    finally:
        provider.shutdown()
    (line,) = lines(logs, stream)
    trace_id = fake.requests[-1].headers["traceparent"].split("-")[1]
    assert line["trace_id"] == trace_id
    assert trace_id == format(spans.get_finished_spans()[0].context.trace_id, "032x")


def test_planted_secret_appears_in_no_log_span_or_metric(monkeypatch, upstream, caplog):
    """Calls with a planted key (which the fake echoes back) leave no trace of it anywhere."""
    stream = io.StringIO()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    logs = StructlogLogger(stream=stream)
    receivers = [logs, OtelLogger(provider, capture_content=False), PrometheusLogger(registry)]
    monkeypatch.setattr(tracking, "success_callback", receivers)
    monkeypatch.setattr(tracking, "failure_callback", receivers)
    caplog.set_level(logging.DEBUG)
    image = make_png()
    try:
        params = {"image": image, "prompt": "the secret prompt", "model": "gpt-image-1",
                  "api_base": upstream["api_base"], "metadata": {"team": "blue"}}  # fmt: skip
        with pytest.raises(tracking.AuthenticationError) as refused:
            tracking.image_edit(**params, api_key=PLANTED, max_retries=0)
        assert PLANTED not in str(refused.value)
        tracking.image_edit(**params, api_key=API_KEY)
    finally:
        provider.shutdown()
    assert logs.flush(10)
    captured = "\n".join(
        [
            stream.getvalue(),
            caplog.text,
            generate_latest(registry).decode(),
            *(span.to_json() for span in spans.get_finished_spans()),
        ]
    )
    assert len(spans.get_finished_spans()) == 2 and stream.getvalue().count("\n") == 2
    for secret in (PLANTED, API_KEY, PLANTED[8:], "the secret prompt"):
        assert secret not in captured
    assert base64.b64encode(image).decode()[:40] not in captured  # no image bytes either


def test_prompt_only_with_content_capture_and_truncated(stream, monkeypatch, upstream):
    logs = StructlogLogger(stream=stream, capture_content=True, max_prompt_chars=10)
    monkeypatch.setattr(tracking, "success_callback", [logs])
    tracking.image_edit(
        image=make_png(), prompt="0123456789ABCDEF", model="gpt-image-1", **upstream
    )
    (line,) = lines(logs, stream)
    assert line["prompt"] == "0123456789"


def test_the_hosts_structlog_configuration_applies(monkeypatch, upstream):
    logs = StructlogLogger()
    monkeypatch.setattr(tracking, "success_callback", [logs])
    with structlog.testing.capture_logs() as captured:
        response = tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-1", **upstream
        )
        assert logs.flush(10)
    (entry,) = captured
    assert entry["event"] == "image_edit" and entry["request_id"] == response.request_id


def test_the_hosts_bound_context_reaches_the_line_written_off_the_call_path(upstream):
    """A host's structlog configuration merges the context its code bound
    (``structlog.contextvars.bind_contextvars``, structlog's default first processor): the
    line is written by the integration's thread, whose context was empty, so the request's
    bound fields never reached the call's line. A sync call, an async one and two threads at
    once each keep their own."""
    logs = StructlogLogger()
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as captured:

        def call(request: str) -> str:
            structlog.contextvars.bind_contextvars(http_request=request)
            try:
                response = tracking.image_edit(
                    image=make_png(), prompt="p", model="gpt-image-1", **upstream
                )
            finally:
                structlog.contextvars.unbind_contextvars("http_request")
            return response.request_id

        async def acall() -> str:
            structlog.contextvars.bind_contextvars(http_request="async")
            response = await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", **upstream
            )
            return response.request_id

        expected: dict[str, str] = {}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tracking, "success_callback", [logs])
            expected[call("sync")] = "sync"
            expected[asyncio.run(acall())] = "async"
            threads = [
                threading.Thread(target=lambda r=r: expected.__setitem__(call(r), r))
                for r in ("thread-1", "thread-2")
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert logs.flush(10)
    assert {entry["request_id"]: entry.get("http_request") for entry in captured} == expected
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaked into this thread


def test_default_lines_go_to_stdout_as_json(monkeypatch, capsys, upstream):
    monkeypatch.setattr(tracking, "success_callback", ["structlog"])
    response = tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert tracking.bus.resolve("structlog").flush(10)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["request_id"] == response.request_id


def test_the_library_never_takes_over_logging_configuration(stream, upstream, caplog):
    root_handlers = list(logging.getLogger().handlers)
    logs = StructlogLogger(stream=stream)
    logs.on_end(make_event())
    assert logs.flush(10)
    assert not structlog.is_configured()
    assert logging.getLogger("tracking").handlers == []
    assert logging.getLogger().handlers == root_handlers


def test_a_broken_log_backend_affects_neither_the_call_nor_other_integrations(
    monkeypatch, upstream
):
    closed = io.StringIO()
    closed.close()
    logs = StructlogLogger(stream=closed)
    registry = CollectorRegistry()
    monkeypatch.setattr(tracking, "success_callback", [logs, PrometheusLogger(registry)])
    response = tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert response.images_returned == 1
    assert logs.flush(10)
    assert logs.failed == 1
    labels = {"model": "gpt-image-1", "served_model": "gpt-image-1", "provider": "openai",
              "operation": "image_edit", "status": "success", "error_type": ""}  # fmt: skip
    assert registry.get_sample_value("image_edit_requests_total", labels) == 1


class BlockingLogger:
    """A log backend that holds its first line until released: the queue then fills."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written: list[str] = []

    def info(self, event: str, **fields: Any) -> None:
        self.entered.set()
        self.release.wait(10)
        self.written.append(fields["request_id"])


def test_a_full_queue_drops_the_oldest_and_counts_it():
    backend = BlockingLogger()
    logs = StructlogLogger(backend, queue_size=2)
    before = tracking.bus.counters()["events_dropped"].get("structlog", 0)
    events: list[ImageEditEvent] = [make_event() for _ in range(4)]
    logs.on_end(events[0])
    assert backend.entered.wait(10)  # the writer holds event 0
    for event in events[1:]:
        logs.on_end(event)  # 1, 2 queued; 3 pushes 1 out
    backend.release.set()
    assert logs.flush(10)
    assert logs.dropped == 1
    assert tracking.bus.counters()["events_dropped"]["structlog"] == before + 1
    assert backend.written == [events[0].request_id, events[2].request_id, events[3].request_id]
    logs.shutdown(5)


def test_shutdown_is_idempotent_and_later_lines_are_still_written(stream):
    logs = StructlogLogger(stream=stream)
    logs.on_end(make_event())
    logs.shutdown(5)
    logs.shutdown(5)
    logs.on_end(make_event())
    assert stream.getvalue().count("\n") == 2


def test_builtin_name_resolves_to_the_structlog_integration():
    assert isinstance(bus.resolve("structlog"), StructlogLogger)


def test_lines_gathered_by_the_writer_are_all_written_by_flush(stream):
    """The writer gathers lines for ``linger`` seconds; flush cuts that short (an hour here, so
    a flush that waited for it would time out) and writes every line, in order."""
    logger = StructlogLogger(stream=stream)
    logger.linger = 3600.0
    events = [make_event(request_id=f"req-{i}") for i in range(25)]
    for event in events:
        logger.on_end(event)
    assert logger.flush(30)
    written = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert written == [e.request_id for e in events]
    logger.on_end(make_event(request_id="after"))  # the writer lingers again, then flushes
    logger.shutdown(30)
    assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] == "after"


def test_to_dict_is_json_safe_for_every_field_kind():
    event = failed_event(retries=2, fallback_from=("a", "b"), metadata={"n": 1, "t": ("x",)})
    out = event.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert out["fallback_from"] == ["a", "b"] and out["metadata"] == {"n": 1, "t": ["x"]}
    assert out["start_time"] == event.start_time.isoformat()
    assert list(out) == [f.name for f in dataclasses.fields(ImageEditEvent)]


def test_to_dict_converts_a_value_of_another_type_in_any_field():
    """``to_dict`` looks at the fields that hold Decimals, datetimes and containers one by one
    and checks the others together: a value of another type there (an event changed with
    ``replace``) is converted all the same, and the order of the keys stays the fields'."""
    event = make_event().replace(
        model=("a", "b"), latency_ms=Decimal("1.5"), error_message={"k": ("v",)}
    )
    out = event.to_dict()
    assert out["model"] == ["a", "b"] and out["latency_ms"] == "1.5"
    assert out["error_message"] == {"k": ["v"]}
    assert json.loads(json.dumps(out)) == out
    assert list(out) == [f.name for f in dataclasses.fields(ImageEditEvent)]


def test_to_dict_converts_the_events_own_kinds_as_any_value_of_theirs():
    """The kinds the event's own fields hold (datetimes, Decimals, tuples, frozen metadata, the
    usage) are converted by their exact types first, without the general tests: each gives what
    the general conversion gives, inside metadata too, and a subclass goes the general way."""

    class Label(str):
        pass

    class Stamp(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "stamped"

    when = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    metadata = freeze_metadata(
        {"d": Decimal("0.5"), "when": when, "nested": {"t": (1, "x", None, 2.5)}, "e": {}}
    )
    event = make_event(metadata=metadata, tags=("a", Label("b")), fallback_from=())
    out = event.to_dict()
    assert out["metadata"] == {
        "d": "0.5",
        "when": "2026-01-02T03:04:05.000006+00:00",
        "nested": {"t": [1, "x", None, 2.5]},
        "e": {},
    }
    assert out["tags"] == ["a", "b"] and type(out["tags"][1]) is Label
    assert out["fallback_from"] == [] and out["usage"] == dataclasses.asdict(event.usage)
    assert out["cost_usd"] == "0.011" and out["start_time"] == START.isoformat()
    assert event.replace(start_time=Stamp(2026, 1, 1, tzinfo=UTC)).to_dict()["start_time"] == (
        "stamped"
    )
    assert event.replace(metadata=NO_METADATA).to_dict()["metadata"] == {}


def test_the_lines_timestamp_is_the_calls_end_in_utc(stream):
    """A UTC end (every call's) is reused as ``to_dict`` wrote it; any other is converted."""
    integration = StructlogLogger(stream=stream)
    utc = make_event()
    assert integration.fields(utc)["timestamp"] == "2026-03-01T12:00:02.500000Z"
    paris = datetime(2026, 3, 1, 13, 0, 2, tzinfo=timezone(timedelta(hours=1)))
    assert integration.fields(utc.replace(end_time=paris))["timestamp"] == "2026-03-01T12:00:02Z"


def test_the_private_lines_are_byte_for_byte_structlogs_json_renderer(stream):
    """Without a host configuration the integration writes its lines itself (the processor
    chain cost a line half its time): each must be exactly what structlog's own JSON pipeline
    (``json_line_logger``) prints for the same fields, key order, escapes and NaN included."""
    from tracking.integrations.structlog import json_line_logger

    integration = StructlogLogger(stream=stream, capture_content=True)
    events = [
        make_event(metadata={"nested": {"n": 1, "t": ("x", "é")}, "nan": float("nan")}),
        failed_event(retries=2, fallback_from=("a", "b"), end_user='quote " and \\ \u2028'),
    ]
    items = [
        (events[0], "0af7651916cd43dd8448eb211c80319c", "a prompt\nwith a newline"),
        (events[1], None, None),
    ]
    for event, trace_id, prompt in items:
        integration._write((event, trace_id, prompt, None))
    reference = io.StringIO()
    structlog_logger = json_line_logger(reference)
    for item in items:
        structlog_logger.info("image_edit", **integration.fields(*item))
    assert stream.getvalue() == reference.getvalue()
    assert stream.getvalue().count("\n") == 2 and '"level": "info"' in stream.getvalue()
