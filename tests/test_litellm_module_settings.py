"""LiteLLM's module-wide settings, set on ``tracking``, are refused rather than ignored.

``tracking.max_budget = 10`` (LiteLLM's SDK-wide spending cap, docs.litellm.ai/docs/budget_manager)
and ``tracking.num_retries = 3`` were kept as plain module attributes that nothing reads: the
cap capped nothing, the retries never applied. A misspelt callback list
(``tracking.success_callbacks = [fn]``) was kept the same way, and its callbacks never ran.
"""

from __future__ import annotations

import importlib
import sys

import pytest

import tracking
from tests.conftest import make_png
from tracking.testing import EventRecorder

LITELLM_SETTINGS = {
    "max_budget": 10.0,
    "num_retries": 3,
    "request_timeout": 60,
    "drop_params": True,
    "api_key": "sk-test",
    "openai_key": "sk-test",
    "api_base": "http://127.0.0.1:1/v1",
    "input_callback": [print],
    "_async_success_callback": [print],
    "_async_failure_callback": [print],
    "set_verbose": True,
}


@pytest.mark.parametrize("name", sorted(LITELLM_SETTINGS))
def test_a_litellm_setting_is_refused_and_says_what_to_use(name):
    with pytest.raises(tracking.ConfigurationError, match=f"tracking.{name}: LiteLLM's setting"):
        setattr(tracking, name, LITELLM_SETTINGS[name])
    assert name not in vars(tracking)


def test_max_budget_says_no_cap_is_enforced():
    with pytest.raises(tracking.ConfigurationError, match="no process-wide spending cap"):
        tracking.max_budget = 10  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("success_callbacks", "success_callback"),
        ("sucess_callback", "success_callback"),
        ("failure_callbacks", "failure_callback"),
        ("callback", "callbacks"),
    ],
)
def test_a_misspelt_callback_list_is_refused_naming_the_list(name, meant):
    with pytest.raises(tracking.ConfigurationError, match=f"did you mean tracking.{meant}\\?"):
        setattr(tracking, name, [print])
    assert name not in vars(tracking)


def test_calls_still_work_after_a_refused_setting(monkeypatch, upstream):
    recorder = EventRecorder()
    monkeypatch.setattr(tracking, "callbacks", [recorder])
    with pytest.raises(tracking.ConfigurationError):
        tracking.num_retries = 0  # type: ignore[attr-defined]
    tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert [event.status for event in recorder.events] == ["success"]


def test_submodules_are_still_bound_when_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tracking.demo", raising=False)
    monkeypatch.delattr(tracking, "demo", raising=False)
    module = importlib.import_module("tracking.demo")
    assert tracking.demo is module  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("base_url", "api_base"),  # OpenAI's client's and LiteLLM's alias
        ("request_timeout", "timeout"),
        ("custom_llm_provider", "the provider as the model's prefix"),
        ("promt", "prompt"),  # a near miss
    ],
)
def test_an_unknown_call_parameter_names_the_function_and_what_was_meant(given, meant, upstream):
    """The ``TypeError`` named the builder behind the call (``image_edit_params()``) and left a
    LiteLLM user to guess the name used here."""
    calls = [
        (tracking.image_edit, "image_edit", {"image": make_png()}),
        (tracking.image_generation, "image_generation", {}),
    ]
    for call, entry, image in calls:
        with pytest.raises(TypeError) as caught:
            call(model="gpt-image-1", prompt="p", **image, **{given: 1}, **upstream)
        message = str(caught.value)
        assert message.startswith(f"{entry}() got an unexpected keyword argument {given!r}; ")
        assert f"; use {meant}" in message


def test_an_unknown_name_with_no_known_meaning_is_the_plain_type_error(upstream):
    with pytest.raises(TypeError) as caught:
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", colour=1, **upstream)
    assert str(caught.value) == "image_edit() got an unexpected keyword argument 'colour'"
