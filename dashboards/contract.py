"""The Prometheus metric contract, as data the dashboards and tests check against.

Metric names and label names are a public contract: dashboards, alerts and users' own queries
depend on them. This table is the contract (docs/observability.md) so that a dashboard or
rule naming a metric or label outside it fails a test, and so the test suite can compare it
with what the code exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "METRICS",
    "OPERATIONS",
    "TARGET_LABELS",
    "MetricSpec",
    "exposed_names",
    "metric_of_series",
]

#: The values of the ``operation`` label: what a call did (an edit, or a generation).
OPERATIONS = ("image_edit", "image_generation")

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its type, its labels, and who produces it."""

    type: MetricType
    labels: tuple[str, ...]
    #: ``sdk`` (every SDK process with the prometheus integration), ``opt_in`` (only when
    #: switched on), ``router``, ``ledger`` or ``proxy`` (only once that part runs), ``stream``
    #: (only once a streamed call has had its first image), ``grounding`` (only once a call to
    #: a model whose price bills Grounding with Google Search has been made).
    source: str = "sdk"


METRICS: dict[str, MetricSpec] = {
    "image_edit_requests_total": MetricSpec(
        "counter", ("model", "served_model", "provider", "operation", "status", "error_type")
    ),
    "image_edit_images_total": MetricSpec(
        "counter", ("model", "served_model", "provider", "operation", "size", "quality")
    ),
    "image_edit_cost_usd_total": MetricSpec(
        "counter", ("model", "served_model", "provider", "operation")
    ),
    "image_edit_tokens_total": MetricSpec(
        "counter", ("model", "served_model", "provider", "operation", "token_type")
    ),
    "image_edit_request_duration_seconds": MetricSpec(
        "histogram", ("model", "provider", "operation", "status")
    ),
    "image_edit_time_to_first_image_seconds": MetricSpec(
        "histogram", ("model", "provider", "operation"), "stream"
    ),
    "image_edit_search_grounding_uses_total": MetricSpec(
        "counter", ("model", "served_model", "provider", "operation", "unit"), "grounding"
    ),
    "image_edit_retries_total": MetricSpec("counter", ("model", "deployment"), "router"),
    "image_edit_fallbacks_total": MetricSpec(
        "counter", ("from_model", "to_model", "outcome"), "router"
    ),
    "image_edit_deployment_cooldowns_total": MetricSpec(
        "counter", ("model", "deployment"), "router"
    ),
    "image_edit_unpriced_requests_total": MetricSpec("counter", ("model",)),
    "image_edit_retired_model_requests_total": MetricSpec("counter", ("model",)),
    "image_edit_end_user_cost_usd_total": MetricSpec("counter", ("end_user",), "opt_in"),
    "tracking_end_user_series_evicted_total": MetricSpec("counter", (), "opt_in"),
    "tracking_callback_errors_total": MetricSpec("counter", ("callback",), "bus"),
    "tracking_events_dropped_total": MetricSpec("counter", ("sink",), "bus"),
    "tracking_integration_errors_total": MetricSpec("counter", ("integration",), "bus"),
    "tracking_ledger_queue_depth": MetricSpec("gauge", (), "ledger"),
    "tracking_ledger_outbox_rows": MetricSpec("gauge", (), "ledger"),
    "tracking_ledger_stuck_seconds": MetricSpec("gauge", (), "ledger"),
    "tracking_ledger_write_seconds": MetricSpec("histogram", (), "ledger"),
    "tracking_ledger_replayed_total": MetricSpec("counter", (), "ledger"),
    "tracking_ledger_quarantined_total": MetricSpec("counter", (), "ledger"),
    "image_edit_proxy_rejections_total": MetricSpec("counter", ("reason",), "proxy"),
    "image_edit_proxy_withheld_attempts_total": MetricSpec("counter", (), "proxy"),
}

#: Labels every scraped series carries besides its own (added by Prometheus or by histograms).
TARGET_LABELS = ("instance", "job")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exposed_names(name: str) -> tuple[str, ...]:
    """The series names a metric family appears under once scraped."""
    if METRICS[name].type == "histogram":
        return tuple(name + suffix for suffix in _HISTOGRAM_SERIES)
    return (name,)


def metric_of_series(series: str) -> str | None:
    """The contract metric a scraped series name belongs to, or None when it is not ours."""
    if series in METRICS:
        return series
    for suffix in _HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and base in METRICS and METRICS[base].type == "histogram":
            return base
    return None
