"""The SDK's side of the proxy protocol: ``safety_identifier`` names the end user, OpenAI's error
codes on validation errors, and a :class:`~tracking.call_control.CallControl` that presets a
call's request id and stops its retries once the caller has gone."""

from __future__ import annotations

import asyncio

import pytest

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tracking.call_control import CallControl, controlled
from tracking.request import end_user_of


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"user": "u"}, ("u", None)),
        ({"safety_identifier": "s"}, ("s", None)),
        ({"safety_identifier": "s", "user": "u"}, ("s", "u")),
        ({"safety_identifier": "s", "user": "s"}, ("s", None)),
        ({"safety_identifier": "", "user": "u"}, ("u", None)),  # empty: OpenAI uses user
        ({"safety_identifier": None, "user": ""}, (None, None)),
    ],
)
def test_end_user_of_follows_openais_precedence(params, expected):
    assert end_user_of(params) == expected


def test_safety_identifier_is_the_events_end_user_and_is_sent_upstream(monkeypatch, fake, upstream):
    recorder = record_events(monkeypatch)
    tracking.image_edit(
        image=make_png(),
        prompt="p",
        model="gpt-image-1",
        safety_identifier="si-1",
        user="user-1",
        metadata={"team": "t"},
        **upstream,
    )
    assert recorder.last.end_user == "si-1"
    assert recorder.last.metadata == {"team": "t", "user": "user-1"}  # the other id kept
    sent = fake.requests[-1].fields
    assert sent["safety_identifier"] == "si-1" and sent["user"] == "user-1"


def test_a_safety_identifier_that_is_not_text_is_refused_with_openais_code(upstream):
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-1", safety_identifier=7, **upstream
        )
    assert (caught.value.param, caught.value.code) == ("safety_identifier", "invalid_type")


@pytest.mark.parametrize(
    ("kwargs", "rule", "code"),
    [
        ({"n": 11}, "range", "integer_above_max_value"),
        ({"n": 0}, "range", "integer_below_min_value"),
        ({"quality": "ultra"}, "enum", "invalid_value"),
        ({"response_format": "url"}, "unsupported", "unsupported_parameter"),
        ({"prompt": "x" * 40_000}, "max_length", "string_above_max_length"),
    ],
)
def test_validation_errors_carry_openais_code_beside_our_rule(upstream, kwargs, rule, code):
    params = {"image": make_png(), "prompt": "p", "model": "gpt-image-1", **kwargs}
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(**params, **upstream)
    assert (caught.value.rule, caught.value.code) == (rule, code)


def test_a_controlled_call_takes_the_preset_request_id_once(monkeypatch, upstream):
    record_events(monkeypatch)

    async def two_calls() -> tuple[str, str]:
        with controlled(CallControl(request_id="preset-id-0001")):
            first = await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", **upstream
            )
            second = await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", **upstream
            )
        return first.request_id, second.request_id

    first, second = asyncio.run(two_calls())
    assert first == "preset-id-0001" and second != first


def _abandoned_at_once(fake) -> CallControl:
    control = CallControl()
    control.abandon()  # the caller left during the first attempt
    return control


def _probed(fake) -> CallControl:
    # The proxy's way: a check read before each attempt and during backoff (no task waits for
    # the disconnect). It turns true once the first attempt was sent.
    before = fake.hits
    return CallControl(probe=lambda: fake.hits > before)


@pytest.mark.parametrize("make_control", [_abandoned_at_once, _probed])
def test_a_call_whose_caller_left_starts_no_new_attempt(monkeypatch, fake, upstream, make_control):
    recorder = record_events(monkeypatch)
    fake.inject(status=500, times=None)
    before = fake.hits
    try:

        async def call() -> None:
            with controlled(make_control(fake)):
                await tracking.aimage_edit(
                    image=make_png(), prompt="p", model="gpt-image-1", max_retries=5, **upstream
                )

        with pytest.raises(tracking.InternalServerError):
            asyncio.run(call())
    finally:
        fake.clear_faults()
    assert fake.hits - before == 1
    assert recorder.last.attempts == 1 and recorder.last.status == "failure"


def test_a_calls_finish_adds_to_its_events_metadata_and_never_loses_the_event(
    monkeypatch, upstream
):
    """``CallControl.finish`` (the proxy stores a URL answer's images there) runs before the
    event is made: what it returns is in the event; one that raises or is cancelled still
    leaves exactly one event of the call that succeeded."""
    import threading

    recorder = record_events(monkeypatch)
    started, release = threading.Event(), threading.Event()

    def blocking(response, request_id):
        started.set()
        release.wait(30)
        return {"never": "added"}

    def failing(response, request_id):
        raise OSError("the store is gone")

    async def calls() -> None:
        for finish in (lambda response, request_id: {"answered": request_id}, failing):
            with controlled(CallControl(finish=finish)):
                await tracking.aimage_edit(
                    image=make_png(), prompt="p", model="gpt-image-1", metadata={"a": 1}, **upstream
                )
        with controlled(CallControl(finish=blocking)):
            task = asyncio.create_task(
                tracking.aimage_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
            )
            await asyncio.to_thread(started.wait, 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        release.set()

    asyncio.run(calls())
    added, failed, cancelled = recorder.events[-3:]
    assert added.metadata == {"a": 1, "answered": added.request_id}
    assert failed.status == "success" and failed.metadata == {"a": 1}
    assert cancelled.status == "success" and "never" not in cancelled.metadata
