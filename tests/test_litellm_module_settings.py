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
