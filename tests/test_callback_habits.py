"""Callbacks written as LiteLLM users write them, and what went wrong silently or unhelpfully.

* a callback's ``response_obj.get("usage")`` (LiteLLM's responses take ``.get`` and ``in``
  beside ``[...]``) raised ``AttributeError``: counted as the callback's error, its spend never
  recorded;
* every ``functools.partial`` callback was counted and logged as ``functools.partial``: the
  errors of different callbacks in one count, a log line naming none of them;
* a generator function (a ``yield`` left in) was accepted and never ran: calling it makes a
  generator, nothing of its body runs, nothing is counted;
* a logger written for LiteLLM's own ``CustomLogger`` base was refused as "not a callback"
  without a word on the one change it needs.
"""

from __future__ import annotations

import functools
import logging

import pytest

import tracking
from tests.conftest import make_png
from tracking import bus

pytestmark = pytest.mark.usefixtures("clean_callbacks")


def _call(upstream):
    return tracking.image_edit(image=make_png(), prompt="a hat", model="gpt-image-2", **upstream)


def test_a_litellm_callback_reads_its_response_with_get_and_in(upstream):
    seen = []

    class SpendLogger(tracking.CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            usage = response_obj.get("usage", {})
            seen.append(
                (
                    usage.get("total_tokens"),
                    "data" in response_obj,
                    "nothing" in response_obj,
                    response_obj.get("nothing", "default"),
                    len(response_obj.get("data")),
                )
            )

    tracking.callbacks.append(SpendLogger())
    response = _call(upstream)
    assert tracking.flush(30)
    assert seen == [(response["usage"]["total_tokens"], True, False, "default", 1)]
    assert errors("SpendLogger") == 0


def errors(name_part: str) -> int:
    return sum(n for k, n in bus.counters()["callback_errors"].items() if name_part in k)


def failing_base(tag, kwargs, response, start_time, end_time):
    raise RuntimeError(tag)


def test_a_partial_is_counted_and_logged_under_its_functions_name(upstream, caplog):
    before = errors("test_callback_habits.failing_base")
    tracking.success_callback.extend(
        [functools.partial(failing_base, "x"), functools.partial(failing_base, "y")]
    )
    with caplog.at_level(logging.ERROR, logger="tracking"):
        _call(upstream)
        assert tracking.flush(30)
    assert errors("test_callback_habits.failing_base") == before + 2
    assert "functools.partial" not in bus.counters()["callback_errors"]
    assert "failing_base raised RuntimeError" in caplog.text


def making_a_generator(kwargs, response, start_time, end_time):
    yield kwargs


async def making_an_async_generator(kwargs, response, start_time, end_time):
    yield kwargs


@pytest.mark.parametrize(
    "entry",
    [making_a_generator, making_an_async_generator, functools.partial(making_a_generator)],
    ids=["generator", "async-generator", "partial"],
)
def test_a_generator_function_is_refused_where_it_is_listed(entry):
    with pytest.raises(tracking.ConfigurationError) as caught:
        tracking.success_callback.append(entry)
    message = str(caught.value)
    assert message.startswith("tracking.success_callback[0]: callback ")
    assert "making_a" in message and "generator function" in message and "yield" in message
    assert tracking.success_callback == []
    with pytest.raises(tracking.ConfigurationError, match="generator function"):
        tracking.register(entry)


def test_a_logger_written_for_litellms_base_class_is_told_what_to_change():
    class LiteLLMHandler:  # as if subclassing litellm.integrations.custom_logger.CustomLogger
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            pass

    with pytest.raises(tracking.ConfigurationError) as caught:
        tracking.callbacks = [LiteLLMHandler()]
    message = str(caught.value)
    assert message.startswith("tracking.callbacks[0]: not a callback: LiteLLMHandler")
    assert "subclass of tracking.CustomLogger" in message
    assert "LiteLLMHandler(tracking.CustomLogger)" in message
    with pytest.raises(tracking.ConfigurationError) as plain:
        tracking.callbacks = [object()]  # no logger's methods: no such hint
    assert "CustomLogger (" not in str(plain.value) and "subclass" not in str(plain.value)
