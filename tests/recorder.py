"""Registering the shipped :class:`tracking.testing.EventRecorder` (or a Prometheus logger) for
one test."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

import tracking
from tracking.integrations.prometheus import PrometheusLogger
from tracking.testing import EventRecorder

__all__ = ["EventRecorder", "record_events", "watch_prometheus"]


def record_events(monkeypatch: pytest.MonkeyPatch) -> EventRecorder:
    """Register a fresh recorder as the only success and failure callback for one test."""
    recorder = EventRecorder()
    monkeypatch.setattr(tracking, "success_callback", [recorder])
    monkeypatch.setattr(tracking, "failure_callback", [recorder])
    return recorder


def watch_prometheus(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """Register a Prometheus logger on a fresh registry as the only success and failure callback
    for one test; the registry its series are read from."""
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    monkeypatch.setattr(tracking, "failure_callback", [logger])
    return registry
