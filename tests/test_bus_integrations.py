"""Integration objects and built-in names registered in the callback lists."""

from __future__ import annotations

import asyncio

import pytest

import tracking
from tests.conftest import make_png
from tracking.integration import CallStart
from tracking.testing import EventRecorder


class Recorder(EventRecorder):
    """The shipped recorder, adding a header upstream as a tracing integration would."""

    def on_start(self, call: CallStart) -> None:
        super().on_start(call)
        call.headers["x-recorder"] = call.request_id


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(tracking, "success_callback", [rec])
    monkeypatch.setattr(tracking, "failure_callback", [rec])  # the same object: once per call
    return rec


def test_integration_sees_start_and_one_end_per_call(recorder, fake, upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="p", model="gpt-image-1", user="user-9", **upstream
    )
    assert [c.request_id for c in recorder.started] == [response.request_id]
    assert fake.requests[-1].headers["x-recorder"] == response.request_id
    (event,) = recorder.events
    assert event.request_id == response.request_id
    assert event.status == "success"
    assert event.end_user == "user-9"
    assert event.images_returned == 1


def test_failed_call_yields_a_failure_event(recorder, upstream):
    with pytest.raises(tracking.ValidationError):
        asyncio.run(
            tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", n=99, **upstream
            )
        )
    (event,) = recorder.events
    assert event.status == "failure"
    assert event.error_type == "validation_error"
    assert event.call_type == "aimage_edit"
    assert recorder.started == []  # refused before it started


def test_unknown_builtin_name_is_a_clear_error(monkeypatch, upstream):
    with pytest.raises(tracking.ConfigurationError, match="built-in integrations: otel"):
        tracking.success_callback = ["promethus"]  # refused where it is set
    monkeypatch.setattr(tracking, "success_callback", [])
    with pytest.raises(tracking.ConfigurationError, match="built-in integrations: otel"):
        tracking.success_callback.append("promethus")  # and where it is added
    list.append(tracking.success_callback, "promethus")  # past both: at the next call's start
    with pytest.raises(tracking.ConfigurationError, match="built-in integrations: otel"):
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
