"""``num_retries=`` (LiteLLM's per-call name for retries) is ``max_retries=``.

It was a ``TypeError`` ("use max_retries") on ``image_edit``, ``aimage_edit`` and
``image_generation``: a call written for LiteLLM (``litellm.image_edit(..., num_retries=3)``)
failed before it started. It is now the same setting; both names with different values is a
``TypeError`` naming both, before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import deployment
from tracking.router import Router
from tracking.testing import EventRecorder, FakeOpenAI

ALWAYS_500 = {"x-fake-fault": "status=500;retry_after=0"}


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeOpenAI]:
    """A fake of this module's own: the faults are per request (a header), never queued."""
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> EventRecorder:
    recorder = EventRecorder()
    monkeypatch.setattr(tracking, "callbacks", [recorder])
    return recorder


def _call(fake: FakeOpenAI, how: str, **params: Any) -> Any:
    base = {"prompt": "a hat", "model": "gpt-image-2", "api_base": fake.url, "api_key": API_KEY}
    if how == "image_edit":
        return tracking.image_edit(image=make_png(), **base, **params)
    if how == "aimage_edit":
        return asyncio.run(tracking.aimage_edit(image=make_png(), **base, **params))
    return tracking.image_generation(**base, **params)


CALLS = ["image_edit", "aimage_edit", "image_generation"]


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_num_retries_bounds_the_attempts_as_max_retries_does(faulty, recorder, how, retries):
    before = faulty.hits
    with pytest.raises(tracking.InternalServerError):
        _call(faulty, how, num_retries=retries, extra_headers=ALWAYS_500)
    assert faulty.hits - before == retries + 1
    (event,) = recorder.events
    assert (event.status, event.attempts, event.retries) == ("failure", retries + 1, retries)


@pytest.mark.parametrize("how", CALLS)
def test_both_names_with_one_value_are_one_setting(faulty, recorder, how):
    before = faulty.hits
    with pytest.raises(tracking.InternalServerError):
        _call(faulty, how, num_retries=1, max_retries=1, extra_headers=ALWAYS_500)
    assert faulty.hits - before == 2


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize(("num", "most"), [(1, 3), (0, 2), (True, 1), (2, None)])
def test_both_names_with_different_values_are_a_type_error_naming_both(
    faulty, recorder, how, num, most
):
    if most is None:  # None is "not given": num_retries alone, which is fine
        _call(faulty, how, num_retries=num, max_retries=most)
        assert [e.status for e in recorder.events] == ["success"]
        return
    before = faulty.hits
    with pytest.raises(TypeError) as caught:
        _call(faulty, how, num_retries=num, max_retries=most)
    message = str(caught.value)
    assert f"max_retries={most!r}" in message and f"num_retries={num!r}" in message
    assert faulty.hits == before and recorder.events == []  # refused before the call started


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize(("value", "rule"), [(-1, "range"), ("2", "type"), (10**6, "range")])
def test_a_bad_num_retries_is_refused_under_its_own_name(faulty, recorder, how, value, rule):
    before = faulty.hits
    with pytest.raises(tracking.ValidationError) as caught:
        _call(faulty, how, num_retries=value)
    assert (caught.value.param, caught.value.rule) == ("num_retries", rule)
    assert caught.value.message.startswith("num_retries: ")
    assert faulty.hits == before
    assert [(e.status, e.error_type) for e in recorder.events] == [("failure", "validation_error")]


def test_num_retries_is_in_the_signature_the_type_checkers_and_editors_read():
    import inspect

    for entry in (tracking.image_edit, tracking.aimage_edit, tracking.image_generation):
        parameter = inspect.signature(entry).parameters["num_retries"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None


def test_a_routers_call_takes_num_retries_for_its_own_retries(faulty, recorder):
    """A router's ``num_retries`` is the default; the call's (either name) replaces it."""
    router = Router(
        [deployment("gpt", faulty.url, id="g", model="gpt-image-2", api_key=API_KEY)],
        num_retries=3,
        allowed_fails=9,
    )
    before = faulty.hits
    with pytest.raises(tracking.InternalServerError):
        router.image_edit(
            model="gpt", image=make_png(), prompt="a hat", num_retries=0, extra_headers=ALWAYS_500
        )
    assert faulty.hits - before == 1
