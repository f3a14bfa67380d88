"""``/metrics``: the Prometheus integration's registry, in one process or across its workers.

The proxy always runs the ``"prometheus"`` integration (:class:`tracking.integrations.prometheus.
PrometheusLogger`): every call's metrics, the router's cooldowns and the proxy's own
``image_edit_proxy_rejections_total{reason}`` (a label per kind of refusal) land in its
registry. A scrape renders that registry, or, with ``PROMETHEUS_MULTIPROC_DIR`` set
(``--workers N``), a fresh registry summing every worker's files, so any worker answers the
same totals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracking.integrations.prometheus import PrometheusLogger

__all__ = ["MULTIPROC_ENV", "MetricsExposition"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsExposition:
    """Renders the exposition of one logger's registry; safe to share between requests."""

    def __init__(self, logger: PrometheusLogger) -> None:
        self.logger = logger
        from tracking.integrations.prometheus import PROXY_REJECTION_REASONS

        for reason in sorted(PROXY_REJECTION_REASONS):
            logger.metrics.proxy_rejections.labels(reason)  # present, at zero, from the start

    def count_rejection(self, reason: str) -> None:
        self.logger.record_proxy_rejection(reason)

    def count_withheld_attempt(self) -> None:
        self.logger.record_withheld_attempt()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        from tracking.integrations.prometheus import metrics_registry

        encoder, content_type = choose_encoder(accept or "")
        output: bytes = encoder(metrics_registry(self.logger.registry))
        return output, content_type
