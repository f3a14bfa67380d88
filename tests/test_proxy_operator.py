"""What an operator turns on with a variable or a switch: OpenTelemetry from the standard
``OTEL_*`` variables alone, the opt-in per-end-user Prometheus metric, and no double counting
when a config names a second Prometheus logger. Real ``tracking serve`` subprocesses in front of
the session's fake upstream; spans go to a small OTLP/HTTP receiver on loopback or to stdout.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests import test_otel
from tests.accounts_support import edit, wait_for
from tests.conftest import API_KEY, make_png
from tests.proxy_support import ProxyProcess, one_deployment_config, write_config

#: The otel tests' OTLP/HTTP receiver fixture, shared under this name.
collector_ = test_otel.collector


def _config(folder: Path, fake_url: str, **litellm_settings: object) -> Path:
    return write_config(
        folder / "config.yaml",
        one_deployment_config(
            fake_url,
            litellm_settings=litellm_settings,
            general_settings={"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        ),
    )


def _metric(proxy: ProxyProcess, prefix: str) -> float:
    for line in httpx.get(f"{proxy.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_otlp_endpoint_alone_exports_spans_without_otel_in_the_callbacks(
    fake, tmp_path, collector_
):
    endpoint = f"http://127.0.0.1:{collector_.server_port}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_EXPORTER": "",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with ProxyProcess(_config(tmp_path, fake.url), env=env) as proxy, httpx.Client() as client:
        response = edit(client, proxy.url, None)
        assert response.status_code == 200, response.text
        wait_for(lambda: any(p == "/v1/traces" for p, _ in collector_.received))  # type: ignore[attr-defined]
    bodies = [b for p, b in collector_.received if p == "/v1/traces"]  # type: ignore[attr-defined]
    assert "image_edit gpt-image-1" in {span.name for span in _exported_spans(collector_)}
    assert all(API_KEY.encode() not in body for body in bodies)


def _exported_spans(collector: Any) -> list[Any]:
    return [
        span
        for path, body in collector.received
        if path == "/v1/traces"
        for resource in trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def _wait_for_the_calls_span(collector: Any) -> None:
    """The call's own span, which a loaded machine may send in a later export than others."""
    wait_for(
        lambda: any(s.name == "image_edit gpt-image-1" for s in _exported_spans(collector)),
        timeout=30,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_callers_traceparent_parents_the_proxys_span_and_reaches_the_upstream(
    fake, tmp_path, collector_, stream
):
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    fields = {"model": "gpt-image-1", "prompt": "p", "quality": "low", "size": "1024x1024"}
    if stream:
        fields["stream"] = "true"
    with ProxyProcess(_config(tmp_path, fake.url), env=env) as proxy, httpx.Client() as client:
        response = client.post(
            f"{proxy.url}/v1/images/edits",
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
            data=fields,
            files={"image": ("a.png", make_png(), "image/png")},
        )
        assert response.status_code == 200, response.text
        _wait_for_the_calls_span(collector_)
    (span,) = [s for s in _exported_spans(collector_) if s.name == "image_edit gpt-image-1"]
    assert span.trace_id.hex() == trace_id  # the caller's trace goes on through the proxy
    assert span.parent_span_id.hex() == caller_span
    sent = [r for r in fake.requests if r.headers.get("traceparent", "").count(trace_id)]
    assert len(sent) == 1
    assert sent[0].headers["traceparent"].split("-")[2] == span.span_id.hex()


def test_otel_traces_exporter_console_prints_spans(fake, tmp_path):
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with ProxyProcess(_config(tmp_path, fake.url), env=env) as proxy, httpx.Client() as client:
        assert edit(client, proxy.url, None).status_code == 200
        wait_for(lambda: '"name": "image_edit gpt-image-1"' in proxy.log())
        assert "spans exported to console" in proxy.log()


def test_end_user_metric_switch_and_no_double_count_from_a_second_prometheus_logger(fake, tmp_path):
    # The user's own module holding a Prometheus logger, named as a callback beside ours.
    (tmp_path / "my_callbacks.py").write_text(
        "from tracking.integrations.prometheus import PrometheusLogger\n"
        "prometheus = PrometheusLogger()\n"
    )
    config = _config(
        tmp_path,
        fake.url,
        callbacks=["my_callbacks.prometheus", "prometheus"],
        success_callback=["prometheus"],
        enable_end_user_cost_tracking_prometheus_only=True,
    )
    requests = 'image_edit_requests_total{error_type="",model="gpt-image-1"'
    with ProxyProcess(config) as proxy, httpx.Client() as client:
        assert "a second Prometheus callback" in proxy.log()
        before = _metric(proxy, requests)
        assert edit(client, proxy.url, None, user="alice").status_code == 200
        assert _metric(proxy, requests) == before + 1
        assert _metric(proxy, 'image_edit_end_user_cost_usd_total{end_user="alice"}') > 0


def test_end_user_metric_is_off_by_default(fake, tmp_path):
    with ProxyProcess(_config(tmp_path, fake.url)) as proxy, httpx.Client() as client:
        assert edit(client, proxy.url, None, user="bob").status_code == 200
        assert "image_edit_end_user_cost_usd_total{" not in httpx.get(f"{proxy.url}/metrics").text


def test_a_malformed_traceparent_starts_a_new_trace_and_the_call_goes_through(
    fake, tmp_path, collector_
):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with ProxyProcess(_config(tmp_path, fake.url), env=env) as proxy, httpx.Client() as client:
        response = client.post(
            f"{proxy.url}/v1/images/edits",
            headers={"traceparent": "00-" + "z" * 32 + "-" + "0" * 16 + "-01", "baggage": "%%"},
            data={"model": "gpt-image-1", "prompt": "p", "quality": "low", "size": "1024x1024"},
            files={"image": ("a.png", make_png(), "image/png")},
        )
        assert response.status_code == 200, response.text
        _wait_for_the_calls_span(collector_)
    (span,) = [s for s in _exported_spans(collector_) if s.name == "image_edit gpt-image-1"]
    assert span.parent_span_id == b""  # a root span: nothing to join
    assert "Traceback" not in proxy.log()
