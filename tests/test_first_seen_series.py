"""Every counter an alert or a rate panel reads is scraped at 0 before its first count.

A counter series that appears already at 1 has no increase: ``rate()`` and ``increase()`` never
see its first count. These tests start the series whose label values are known in advance (a
router's model groups, deployments and fallback hops; the callback lists' entries; the bus's
sinks; the integrations' own names) and prove, with a real Prometheus scraping a real proxy
(tests/test_dashboards.py's harness), that the first fallback, the first call of a model
failing, its first spend, the first callback error and the first dropped event show on the
dashboards' panels and in the alerts' expressions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.test_dashboards import (
    Prometheus,
    _by,
    _small_png,
    panel_queries,
    rules,
    start_prometheus,  # noqa: F401 - a fixture, used by name
    substitute,
)
from tracking.errors import ERROR_TYPES, UNSERVED_ERROR_TYPES
from tracking.integrations.prometheus import PrometheusLogger
from tracking.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


def _panel_by(prom: Prometheus, title: str, label: str, **variables: str) -> dict[str, float]:
    (query,) = [q for q in panel_queries() if q.panel == title]
    return _by(prom, label, substitute(query.expr, **variables))


def _alert(prom: Prometheus, name: str) -> list[dict[str, Any]]:
    (rule,) = [r for r in rules() if r.get("alert") == name]
    return prom.query(rule["expr"])


def _edit(proxy: ProxyProcess, model: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "add a red hat", "size": "1024x1024"},
        files={"image": ("a.png", _small_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )


def _metric_line(proxy: ProxyProcess, start: str) -> float | None:
    for line in httpx.get(f"{proxy.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(start):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- what is started at 0 (no Prometheus needed) --------------------------------------------


def test_watch_router_starts_each_known_label_set_at_0_and_observes_once():
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)

    def deployment(group: str, model: str, name: str) -> dict[str, Any]:
        return {
            "model_name": group,
            "litellm_params": {"model": model, "api_base": "http://127.0.0.1:9", "api_key": "k"},
            "model_info": {"id": name},
        }

    router = tracking.Router(
        model_list=[
            deployment("big", "gpt-image-1", "big-a"),
            deployment("mid", "gemini/gemini-3-pro-image", "mid-a"),
            deployment("small", "gpt-image-1-mini", "small-a"),
        ],
        fallbacks=[{"big": ["mid", "small"]}],
    )
    try:
        logger.watch_router(router)
        logger.watch_router(router)  # twice: still one observer, no series more
        assert router.cooldown_observers.count(logger.record_cooldown) == 1
        samples = {
            (metric.name, tuple(sorted(sample.labels.items())))
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.value == 0
        }
    finally:
        router.close()

    def labelled(name: str) -> set[tuple[tuple[str, str], ...]]:
        return {labels for metric, labels in samples if metric == name}

    # each hop a call asking for "big" can take, with both outcomes: 4 series
    hops = {
        (dict(s)["from_model"], dict(s)["to_model"], dict(s)["outcome"])
        for s in labelled("image_edit_fallbacks")
    }
    assert hops == {
        (source, target, outcome)
        for source, target in (("big", "mid"), ("mid", "small"))
        for outcome in ("success", "failure")
    }
    # every group with every model that can serve it (its own and its fallbacks'), both
    # operations, success and each error type: its first failure of any kind is a rise
    requests = labelled("image_edit_requests")
    served = {
        (dict(s)["model"], dict(s)["served_model"], dict(s)["provider"])
        for s in requests
        if dict(s)["served_model"]
    }
    assert served == {
        ("big", "gpt-image-1", "openai"),
        ("big", "gemini-3-pro-image", "gemini"),
        ("big", "gpt-image-1-mini", "openai"),
        ("mid", "gemini-3-pro-image", "gemini"),
        ("small", "gpt-image-1-mini", "openai"),
    }
    unserved = {s for s in requests if not dict(s)["served_model"]}
    # and each group's calls no model served: both operations, the six ways they can end
    assert {(dict(s)["model"], dict(s)["error_type"]) for s in unserved} == {
        (group, error) for group in ("big", "mid", "small") for error in UNSERVED_ERROR_TYPES
    }
    assert len(unserved) == 3 * 2 * len(UNSERVED_ERROR_TYPES)
    assert len(requests) == len(served) * 2 * (1 + len(ERROR_TYPES)) + len(unserved)
    assert len(labelled("image_edit_cost_usd")) == len(served) * 2 + 3 * 2  # unserved: 1 each
    assert (("deployment", "mid-a"), ("model", "mid")) in labelled("image_edit_retries")


def test_watch_router_starts_the_unpriced_counter_of_the_groups_an_unpriced_deployment_serves():
    """A group whose own deployment, or a fallback's, has no known price has its unpriced-call
    counter at 0; a group only priced deployments serve has none (bounded: the config's
    groups)."""
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)

    def deployment(group: str, model: str) -> dict[str, Any]:
        return {
            "model_name": group,
            "litellm_params": {"model": model, "api_base": "http://127.0.0.1:9", "api_key": "k"},
        }

    router = tracking.Router(
        model_list=[
            deployment("priced", "gpt-image-1"),
            deployment("house", "openai/house-image-first-seen"),
            deployment("falls-to-house", "gpt-image-1-mini"),
        ],
        fallbacks=[{"falls-to-house": ["house"]}],
    )
    try:
        logger.watch_router(router)
    finally:
        router.close()
    started = {
        sample.labels["model"]: sample.value
        for metric in registry.collect()
        if metric.name == "image_edit_unpriced_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert started == {"house": 0, "falls-to-house": 0}


#: Run in a process of its own: the bus's counters are the process's, and another test's
#: callbacks or integrations must not have named these series already.
_BUS_NAMES = """
import json, tracking
from prometheus_client import CollectorRegistry
from tracking.integrations.otel import OtelLogger
from tracking.integrations.prometheus import PrometheusLogger
from tracking.integrations.structlog import StructlogLogger

def on_call(kwargs, response, start_time, end_time):
    pass

def refused_with_its_list(kwargs, response, start_time, end_time):
    pass

PrometheusLogger(CollectorRegistry())
OtelLogger()
tracking.success_callback = [on_call, StructlogLogger(), "otel"]
try:
    tracking.callbacks = [refused_with_its_list, 42]
except tracking.ConfigurationError:
    pass
print(json.dumps(tracking.bus.counters()))
"""


def test_the_bus_counters_known_in_advance_start_at_0():
    """Each callback-list entry's error counter starts at 0 when the list is set (a built-in
    name under its class's name, unloaded), the ``user_callbacks`` sink's with the first user
    callback, and each integration's own failure counter (and its sink's) when it is created;
    a list refused for a bad entry starts none."""
    result = subprocess.run(
        [sys.executable, "-c", _BUS_NAMES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout.splitlines()[-1])
    assert counters["callback_errors"] == {
        "__main__.on_call": 0,
        "tracking.integrations.structlog.StructlogLogger": 0,
        "tracking.integrations.otel.OtelLogger": 0,
    }
    assert counters["events_dropped"] == {"user_callbacks": 0, "structlog": 0}
    assert counters["integration_errors"] == {
        "prometheus": 0,
        "ledger": 0,
        "otel": 0,
        "structlog": 0,
    }


# --- a real Prometheus scraping a real proxy --------------------------------------------------

ROUTER_CONFIG = """
model_list:
  - model_name: gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
  - model_name: fresh-gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
  - model_name: down-gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{down}"}}
router_settings:
  fallbacks: [{{down-gpt-image-1: [gpt-image-1]}}]
  num_retries: 0
general_settings:
  master_key: "{master_key}"
"""


@pytest.mark.slow
def test_a_first_fallback_first_failure_and_first_spend_show_on_the_panels(
    start_prometheus,  # noqa: F811
    tmp_path,
):
    """On a proxy that has served nothing yet, a model group's very first call fails (a 400),
    another group's first call falls back, and a third's first call is charged: each is the
    first count of its series, and each shows on its rate panel (the proxy started those series
    at 0 from its router's config, ``watch_router``)."""
    with (
        FakeOpenAI(api_keys=[API_KEY]) as fake,
        FakeOpenAI(api_keys=[API_KEY], faults=["status=500;retry_after=0;always"]) as down,
    ):
        config = tmp_path / "config.yaml"
        config.write_text(
            ROUTER_CONFIG.format(
                api_key=API_KEY, fake=fake.url, down=down.url, master_key=MASTER_KEY
            )
        )
        with ProxyProcess(config) as proxy:
            prom = start_prometheus({"proxy": proxy.port})
            prom.scraped_once_more("proxy")  # every series as it is before any call
            fake.inject(status=400, times=1)
            assert _edit(proxy, "fresh-gpt-image-1").status_code == 400
            assert _edit(proxy, "down-gpt-image-1").status_code == 200  # fell back
            assert _edit(proxy, "gpt-image-1").status_code == 200
            prom.scraped_once_more("proxy")

            fresh = {"model": "fresh-gpt-image-1"}
            failing = _panel_by(prom, "Request rate by status", "status", **fresh)
            assert failing.get("failure", 0) > 0, failing
            shares = _panel_by(prom, "Error ratio by error type", "error_type", **fresh)
            assert shares.get("bad_request", 0) > 0, shares
            fell_back = _panel_by(prom, "Fallbacks by route and outcome", "outcome")
            assert fell_back.get("success", 0) > 0, fell_back
            spend = _panel_by(prom, "Spend per hour by model", "model")
            assert spend.get("gpt-image-1", 0) > 0, spend
            assert spend.get("down-gpt-image-1", 0) > 0, spend
            # bounded: the one hop of the config, with its two outcomes
            hops = prom.query('image_edit_fallbacks_total{job="proxy"}')
            assert {(s["metric"]["from_model"], s["metric"]["outcome"]) for s in hops} == {
                ("down-gpt-image-1", "success"),
                ("down-gpt-image-1", "failure"),
            }


#: The proxy's own callbacks module (a dotted name in its config, found in the config's folder).
CALLBACKS_MODULE = """
import time
from pathlib import Path

import tracking

tracking.bus.configure(max_queue=1)  # one callback waiting at most: one more is a drop


def fails(kwargs, response, start_time, end_time):
    raise RuntimeError("the first failure of this callback")


def waits(kwargs, response, start_time, end_time):
    Path("started").touch()
    deadline = time.monotonic() + 20
    while not Path("gate").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""
CALLBACKS_CONFIG = """
model_list:
  - model_name: gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
litellm_settings:
  success_callback: [first_seen_callbacks.waits]
  failure_callback: [first_seen_callbacks.fails]
general_settings:
  master_key: "{master_key}"
"""


@pytest.mark.slow
def test_a_first_callback_error_and_first_dropped_event_show_on_the_panels(
    start_prometheus,  # noqa: F811
    tmp_path,
):
    """A proxy's user callback raises for the first time, and its callback queue drops its first
    event: both counters were scraped at 0 (the callback lists' entries and the
    ``user_callbacks`` sink start at 0 when the lists are set), so the first of each shows on
    the "Callback errors" and "Dropped events" panels, and the alerts on them fire."""
    (tmp_path / "first_seen_callbacks.py").write_text(CALLBACKS_MODULE)
    config = tmp_path / "config.yaml"
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        config.write_text(
            CALLBACKS_CONFIG.format(api_key=API_KEY, fake=fake.url, master_key=MASTER_KEY)
        )
        proxy = ProxyProcess(config)
        proxy.start()
        try:
            prom = start_prometheus({"proxy": proxy.port})
            prom.scraped_once_more("proxy")
            fake.inject(status=400, times=1)
            assert _edit(proxy, "gpt-image-1").status_code == 400  # fails raises
            failed = 'tracking_callback_errors_total{callback="first_seen_callbacks.fails"}'
            prom.wait_until(lambda: _metric_line(proxy, failed) == 1, "the callback's error")
            assert _edit(proxy, "gpt-image-1").status_code == 200  # waits runs, and waits
            prom.wait_until((tmp_path / "started").exists, "the waiting callback to start")
            assert _edit(proxy, "gpt-image-1").status_code == 200  # queued
            assert _edit(proxy, "gpt-image-1").status_code == 200  # the queued one dropped
            dropped = 'tracking_events_dropped_total{sink="user_callbacks"}'
            prom.wait_until(lambda: _metric_line(proxy, dropped) == 1, "the first drop")
            prom.scraped_once_more("proxy")

            errors = _panel_by(prom, "Callback errors by callback", "callback")
            assert errors.get("first_seen_callbacks.fails", 0) > 0, errors
            drops = _panel_by(prom, "Dropped events by sink", "sink")
            assert drops.get("user_callbacks", 0) > 0, drops
            firing = {s["metric"]["callback"] for s in _alert(prom, "ImageEditCallbacksFailing")}
            assert firing == {"first_seen_callbacks.fails"}
            firing = {s["metric"]["sink"] for s in _alert(prom, "ImageEditEventsDropped")}
            assert firing == {"user_callbacks"}
        finally:
            (tmp_path / "gate").touch()  # the waiting callback returns: the proxy can stop
            proxy.stop()


UNPRICED_CONFIG = """
model_list:
  - model_name: gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
  - model_name: house-model
    litellm_params: {{model: openai/{house}, api_key: "{api_key}", api_base: "{fake}"}}
general_settings:
  master_key: "{master_key}"
"""


@pytest.mark.slow
def test_a_first_unpriced_call_shows_on_its_panel(start_prometheus, tmp_path):  # noqa: F811
    """A model group whose deployment has no known price: its first call is unpriced, the
    first count of ``image_edit_unpriced_requests_total{model}``, and shows in the "Unpriced
    requests by model" panel's ``increase()`` (the proxy started the series at 0 from its
    config, ``watch_router``); the series appeared already at 1 and the panel showed nothing.
    Only the config's unpriced group has the series."""
    house = "house-image-first-seen"
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[house]) as fake:
        config = tmp_path / "config.yaml"
        config.write_text(
            UNPRICED_CONFIG.format(
                api_key=API_KEY, fake=fake.url, house=house, master_key=MASTER_KEY
            )
        )
        with ProxyProcess(config) as proxy:
            prom = start_prometheus({"proxy": proxy.port})
            prom.scraped_once_more("proxy")  # every series as it is before any call
            assert _edit(proxy, "house-model").status_code == 200
            counted = 'image_edit_unpriced_requests_total{model="house-model"}'
            prom.wait_until(lambda: _metric_line(proxy, counted) == 1, "the unpriced call")
            prom.scraped_once_more("proxy")

            unpriced = _panel_by(prom, "Unpriced requests by model", "model")
            assert unpriced.get("house-model", 0) > 0, unpriced
            series = prom.query('image_edit_unpriced_requests_total{job="proxy"}')
            assert {s["metric"]["model"] for s in series} == {"house-model"}
