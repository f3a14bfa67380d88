"""A real integration object that keeps every event it receives (for asserting on attempts)."""

from __future__ import annotations

import pytest

import tracking


class EventRecorder:
    """Implements the internal integration protocol; ``events`` holds each call's event."""

    def __init__(self) -> None:
        self.events: list[tracking.ImageEditEvent] = []

    def on_start(self, call: object) -> None:
        pass

    def on_end(self, event: tracking.ImageEditEvent) -> None:
        self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        pass

    @property
    def last(self) -> tracking.ImageEditEvent:
        return self.events[-1]


def record_events(monkeypatch: pytest.MonkeyPatch) -> EventRecorder:
    """Register a fresh recorder as the only success and failure callback for one test."""
    recorder = EventRecorder()
    monkeypatch.setattr(tracking, "success_callback", [recorder])
    monkeypatch.setattr(tracking, "failure_callback", [recorder])
    return recorder
