"""``/metrics``: the Prometheus exposition of one proxy, in one process or across its workers.

The exposed registry is, in order: the one given to the app (how an integration with its own
registry plugs in), else, with ``PROMETHEUS_MULTIPROC_DIR`` set (``--workers N``), a fresh
registry that sums every worker's files on each scrape, as prometheus_client's multiprocess mode
requires, else prometheus_client's default registry, where metrics created without a
``registry=`` argument land. The proxy's own counter,
``image_edit_proxy_rejections_total{reason}``, counts what it refuses before the SDK call (auth,
size, rate).
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["MULTIPROC_ENV", "MetricsExposition", "count_rejection"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_REJECTIONS: Any = None
_LOCK = threading.Lock()


def _rejections() -> Any:
    global _REJECTIONS
    if _REJECTIONS is None:
        with _LOCK:
            if _REJECTIONS is None:
                from integrations.prometheus import PrometheusLogger

                # The "prometheus" integration defines this metric in the same registry: one
                # definition, or a config naming that integration could not start.
                _REJECTIONS = PrometheusLogger().metrics.proxy_rejections
                for reason in ("auth", "size", "rate", "budget"):
                    _REJECTIONS.labels(reason=reason)
    return _REJECTIONS


def count_rejection(reason: str) -> None:
    _rejections().labels(reason=reason).inc()


class MetricsExposition:
    """Renders the exposition for a scrape; cheap to build, safe to share between requests."""

    def __init__(self, registry: Any = None) -> None:
        self._registry = registry
        _rejections()  # the proxy's metrics exist (at zero) from the first scrape on

    def registry(self) -> Any:
        if self._registry is not None:
            return self._registry
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return registry
        from prometheus_client import REGISTRY

        return REGISTRY

    def render(self, accept: str | None) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        output: bytes = encoder(self.registry())
        return output, content_type
