"""What an operator turns on with a variable or a switch: OpenTelemetry from the standard
``OTEL_*`` variables alone, the opt-in per-end-user Prometheus metric, and no double counting
when a config names a second Prometheus logger. Real ``tracking serve`` subprocesses in front of
the session's fake upstream; spans go to a small OTLP/HTTP receiver on loopback or to stdout.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests import test_otel
from tests.accounts_support import edit, wait_for
from tests.conftest import API_KEY
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
    names = {
        span.name
        for body in bodies
        for resource in trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert "image_edit gpt-image-1" in names
    assert all(API_KEY.encode() not in body for body in bodies)


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
