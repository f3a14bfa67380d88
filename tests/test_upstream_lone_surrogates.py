"""A lone UTF-16 surrogate in an upstream's JSON (a ``"\\ud800"`` escape, or the CESU-8 bytes of
one) is read as U+FFFD: left in an answer's ``quality`` or an error's message it reached the
event, where the billed call's ledger row was refused (set aside in quarantine, out of
``spend_logs``) and an OTLP exporter failed to encode the span, losing its whole batch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracking
from tests.scripted_upstream import PNG, Reply, scripted_upstream
from tracking.integrations.otel import OtelLogger
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.integrations.structlog import StructlogLogger
from tracking.response import upstream_json
from tracking.testing import EventRecorder

ANSWER = (
    '{"data": [{"b64_json": "%s"}], "size": "1024x1024", "quality": "low\\ud800",'
    ' "usage": {"input_tokens": 10, "output_tokens": 100,'
    ' "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}}}'
)
ERROR = b'{"error": {"message": "bad \\udfff input \xed\xa0\x80", "type": "invalid_request_error"}}'


def test_upstream_json_makes_lone_surrogates_replacement_characters_and_keeps_the_rest():
    body = b'{"k\\ud800": ["a \\udc00 b", "\\ud83d\\ude00", "\\u00e9t\xc3\xa9", 1, null]}'
    read = {"k\ufffd": ["a \ufffd b", "\U0001f600", "\u00e9t\u00e9", 1, None]}
    assert upstream_json(body) == read
    clean = {"data": [{"b64_json": "aGF0"}], "note": "caf\u00e9"}
    assert upstream_json(json.dumps(clean)) == clean


def test_a_lone_surrogate_from_the_upstream_reaches_no_sink(tmp_path: Path, monkeypatch):
    import base64

    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    lines = io.StringIO()
    recorder = EventRecorder()
    sinks = [recorder, ledger, OtelLogger(tracer_provider=provider), StructlogLogger(stream=lines)]
    monkeypatch.setattr(tracking, "callbacks", sinks)
    monkeypatch.setattr(tracking, "success_callback", [])
    monkeypatch.setattr(tracking, "failure_callback", [])
    try:
        with scripted_upstream() as upstream:
            answer = ANSWER % base64.b64encode(PNG).decode()
            upstream.reply = Reply(body=answer.encode())
            response = tracking.image_edit(image=PNG, **upstream.params("openai"))
            assert response.quality == "low\ufffd" and response.cost_usd > 0
            upstream.reply = Reply(body=ERROR, status=400)
            with pytest.raises(tracking.BadRequestError) as refused:
                tracking.image_edit(image=PNG, **upstream.params("openai"))
        assert "bad \ufffd input \ufffd" in str(refused.value)
        assert tracking.flush(10)
        billed, failed = recorder.events
        assert billed.quality == "low\ufffd" and billed.cost_usd == response.cost_usd
        assert failed.error_message is not None and "bad \ufffd input" in failed.error_message
        # The billed row is in spend_logs, nothing set aside.
        with ledger.engine.connect() as connection:
            rows = connection.execute(
                sa.select(spend_logs.c.request_id, spend_logs.c.cost_usd)
            ).all()
        assert {row.request_id: row.cost_usd for row in rows} == {
            billed.request_id: billed.cost_usd,
            failed.request_id: 0,
        }
        assert ledger.quarantined_rows == 0
        # Every span encodes for OTLP; every log line is JSON.
        finished = spans.get_finished_spans()
        assert len(finished) == 2 and encode_spans(finished).SerializeToString()
        logged = [json.loads(line) for line in lines.getvalue().splitlines()]
        assert [line["quality"] for line in logged] == ["low\ufffd", None]
    finally:
        ledger.shutdown(10)
