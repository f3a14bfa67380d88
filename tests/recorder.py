"""Registering the shipped :class:`tracking.testing.EventRecorder` for one test."""

from __future__ import annotations

import pytest

import tracking
from tracking.testing import EventRecorder

__all__ = ["EventRecorder", "record_events"]


def record_events(monkeypatch: pytest.MonkeyPatch) -> EventRecorder:
    """Register a fresh recorder as the only success and failure callback for one test."""
    recorder = EventRecorder()
    monkeypatch.setattr(tracking, "success_callback", [recorder])
    monkeypatch.setattr(tracking, "failure_callback", [recorder])
    return recorder
