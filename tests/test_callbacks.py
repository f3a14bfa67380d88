"""User callbacks on the bus: shapes, where they run, exactly once, isolation, drops, flush."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import API_KEY, make_png
from tracking import bus
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.testing import EventRecorder


@pytest.fixture(autouse=True)
def _clean_bus(monkeypatch):
    monkeypatch.setattr(tracking, "success_callback", [])
    monkeypatch.setattr(tracking, "failure_callback", [])
    monkeypatch.setattr(tracking, "callbacks", [])
    yield
    assert tracking.flush(10)
    bus.configure(callback_timeout=bus.DEFAULT_CALLBACK_TIMEOUT, max_queue=bus.DEFAULT_QUEUE_SIZE)


def call(upstream, **params):
    params = {"image": make_png(), "prompt": "a hat", "model": "gpt-image-1", **params}
    return tracking.image_edit(**params, **upstream)


async def acall(upstream, **params):
    params = {"image": make_png(), "prompt": "a hat", "model": "gpt-image-1", **params}
    return await tracking.aimage_edit(**params, **upstream)


def errors_of(name_part: str) -> int:
    return sum(n for k, n in bus.counters()["callback_errors"].items() if name_part in k)


# -- shapes and where they run ------------------------------------------------------------------


def test_sync_function_gets_litellm_arguments_on_the_worker_thread(upstream):
    seen = []

    def on_success(kwargs, response, start_time, end_time):
        seen.append((kwargs, response, start_time, end_time, threading.current_thread().name))

    tracking.success_callback.append(on_success)
    response = call(upstream, user="end-user-7", metadata={"team": "design"})
    assert tracking.flush(10)
    ((kwargs, got, start, end, thread),) = seen
    assert got == response and got is not response  # its own copy
    assert isinstance(start, datetime) and isinstance(end, datetime) and start <= end
    assert thread == "tracking-callbacks"
    assert kwargs["model"] == "gpt-image-1"
    assert kwargs["user"] == "end-user-7"
    assert kwargs["response_cost"] == float(response.cost_usd)
    assert kwargs["call_type"] == "image_edit"
    assert kwargs["metadata"] == {"team": "design"}
    assert kwargs["request_id"] == kwargs["litellm_call_id"] == response.request_id
    assert kwargs["standard_logging_object"]["end_user"] == "end-user-7"
    # LiteLLM's StandardLoggingPayload names, which callbacks written for it read
    logged = kwargs["standard_logging_object"]
    event = kwargs["tracking_event"]
    assert logged["response_cost"] == float(response.cost_usd) > 0
    assert logged["cost_usd"] == str(response.cost_usd)
    assert logged["id"] == response.request_id and logged["status"] == "success"
    assert logged["startTime"] == start.timestamp() and logged["endTime"] == end.timestamp()
    # not streamed: the answer's first chunk is its end, as LiteLLM sets them
    assert logged["completionStartTime"] == end.timestamp()
    assert logged["response_time"] == end.timestamp() - start.timestamp() > 0
    assert logged["cache_hit"] is False
    usage = event.usage
    assert logged["prompt_tokens"] == usage.input_text_tokens + usage.input_image_tokens > 0
    assert logged["completion_tokens"] == usage.output_tokens > 0
    assert logged["total_tokens"] == usage.total_tokens and logged["error_str"] is None
    json.dumps(logged)  # JSON-safe
    assert kwargs["tracking_event"].end_user == "end-user-7"
    assert kwargs["tracking_event"].team == "design"
    assert "exception" not in kwargs


def test_a_streamed_calls_payload_has_litellms_time_to_first_chunk(upstream):
    """LiteLLM's ``completionStartTime`` and ``response_time`` (docs.litellm.ai/docs/proxy/
    logging_spec, read 2026-12-07): for a streamed call the first chunk, which callbacks
    written for LiteLLM read for time to first token; they were missing (a ``KeyError``)."""
    seen = []
    tracking.success_callback.append(lambda kwargs, *rest: seen.append(kwargs))
    stream = tracking.image_edit(
        image=make_png(), prompt="p", model="gpt-image-1", stream=True, partial_images=1, **upstream
    )
    list(stream)
    assert tracking.flush(10)
    (kwargs,) = seen
    logged, event = kwargs["standard_logging_object"], kwargs["tracking_event"]
    assert event.time_to_first_image_ms is not None
    first = event.time_to_first_image_ms / 1000
    assert logged["completionStartTime"] == event.start_time.timestamp() + first
    assert logged["response_time"] == logged["completionStartTime"] - logged["startTime"]
    assert logged["startTime"] < logged["completionStartTime"] <= logged["endTime"]


def test_async_function_on_a_sync_call_runs_on_the_bus_loop(upstream):
    seen = []

    async def on_success(kwargs, response, start_time, end_time):
        seen.append(threading.current_thread().name)

    tracking.success_callback.append(on_success)
    call(upstream)
    assert tracking.flush(10)
    assert seen == ["tracking-callbacks-loop"]


def test_async_function_on_an_async_call_runs_on_the_bus_loop(upstream):
    seen = []

    async def on_success(kwargs, response, start_time, end_time):
        seen.append((threading.current_thread().name, kwargs["call_type"]))

    tracking.success_callback.append(on_success)
    asyncio.run(acall(upstream))
    assert tracking.flush(10)
    assert seen == [("tracking-callbacks-loop", "aimage_edit")]


def test_an_async_callback_still_running_when_asyncio_run_returns_finishes_once(upstream):
    """The caller's loop ends while the callback is in the middle of its work: the callback is
    not cancelled (it runs on the bus's loop) and nothing is counted as dropped."""
    started, finished = threading.Event(), []
    dropped = tracking.bus.counters()["events_dropped"].get("user_callbacks", 0)

    async def on_success(kwargs, response, start_time, end_time):
        started.set()
        await asyncio.sleep(0.2)
        finished.append(kwargs["request_id"])

    async def main():
        response = await acall(upstream)
        while not started.is_set():  # the callback is running; now end this loop
            await asyncio.sleep(0.005)
        return response

    tracking.success_callback.append(on_success)
    response = asyncio.run(main())
    assert tracking.flush(10)
    assert finished == [response.request_id]
    assert tracking.bus.counters()["events_dropped"].get("user_callbacks", 0) == dropped


def test_sync_function_on_an_async_call_runs_on_the_worker_thread(upstream):
    seen = []
    tracking.success_callback.append(
        lambda kwargs, response, s, e: seen.append(threading.current_thread().name)
    )
    asyncio.run(acall(upstream))
    assert tracking.flush(10)
    assert seen == ["tracking-callbacks"]


def test_async_callback_survives_asyncio_run_ending_before_it_ran(upstream):
    seen = []

    async def on_success(kwargs, response, start_time, end_time):
        seen.append(kwargs["request_id"])

    tracking.success_callback.append(on_success)
    response = asyncio.run(acall(upstream))  # the loop closes right after the call returns
    assert tracking.flush(10)
    assert seen == [response.request_id]


@pytest.mark.parametrize("use_async", [False, True], ids=["image_edit", "aimage_edit"])
def test_a_plain_callback_returning_a_coroutine_has_it_awaited_on_the_bus_loop(upstream, use_async):
    """A lambda or a partial around an async function is a plain function to inspect: the
    coroutine it returns was dropped ("coroutine ... was never awaited") and never ran."""
    seen = []

    async def record(how, kwargs, response, start_time, end_time):
        await asyncio.sleep(0)
        seen.append((how, threading.current_thread().name, kwargs["request_id"]))

    tracking.success_callback.extend(
        [functools.partial(record, "partial"), lambda k, r, s, e: record("lambda", k, r, s, e)]
    )
    response = asyncio.run(acall(upstream)) if use_async else call(upstream)
    assert tracking.flush(10)
    loop = "tracking-callbacks-loop"
    assert sorted(seen) == [(how, loop, response.request_id) for how in ("lambda", "partial")]


def test_a_coroutine_returned_by_a_plain_callback_has_the_async_timeout_and_error_counting(
    upstream,
):
    bus.configure(callback_timeout=0.2)

    async def fails():
        raise RuntimeError("boom")

    def returns_failing(kwargs, response, start_time, end_time):
        return fails()

    def returns_hanging(kwargs, response, start_time, end_time):
        return asyncio.sleep(30)

    tracking.success_callback.extend([returns_failing, returns_hanging])
    failed, hung = errors_of("returns_failing"), errors_of("returns_hanging")
    call(upstream)
    asyncio.run(acall(upstream))
    assert tracking.flush(10)  # bounded: each hanging coroutine is given up after 0.2 s
    assert errors_of("returns_failing") == failed + 2
    assert errors_of("returns_hanging") == hung + 2
    assert any(k.endswith("returns_hanging") for k in bus.counters()["callback_timeouts"])


class BothTwins(tracking.CustomLogger):
    def __init__(self):
        self.calls = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.calls.append("sync-success")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.calls.append("async-success")

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.calls.append(("sync-failure", response_obj, type(kwargs["exception"]).__name__))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.calls.append(("async-failure", response_obj, type(kwargs["exception"]).__name__))


def test_logger_gets_the_twin_matching_the_call(upstream):
    logger = BothTwins()
    tracking.callbacks.append(logger)
    call(upstream)
    asyncio.run(acall(upstream))
    with pytest.raises(tracking.ValidationError):
        call(upstream, n=99)
    with pytest.raises(tracking.ValidationError):
        asyncio.run(acall(upstream, n=99))
    assert tracking.flush(10)
    # the sync twins run on the worker thread, so only the set (not the order) is fixed
    assert sorted(map(str, logger.calls)) == sorted(
        map(
            str,
            [
                "sync-success",
                "async-success",
                ("sync-failure", None, "ValidationError"),
                ("async-failure", None, "ValidationError"),
            ],
        )
    )


def test_logger_with_one_twin_gets_it_for_either_kind_of_call(upstream):
    class SyncOnly(tracking.CustomLogger):
        def __init__(self):
            self.threads = []

        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            self.threads.append(threading.current_thread().name)

    class AsyncOnly(tracking.CustomLogger):
        def __init__(self):
            self.threads = []

        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            self.threads.append(threading.current_thread().name)

    sync_only, async_only = SyncOnly(), AsyncOnly()
    tracking.callbacks.extend([sync_only, async_only])
    call(upstream)

    asyncio.run(acall(upstream))
    assert tracking.flush(10)
    assert sync_only.threads == ["tracking-callbacks", "tracking-callbacks"]
    assert async_only.threads == ["tracking-callbacks-loop", "tracking-callbacks-loop"]


def test_success_and_failure_lists_see_only_their_outcome(upstream):
    successes, failures = [], []
    tracking.success_callback.append(lambda k, r, s, e: successes.append(r))
    tracking.failure_callback.append(lambda k, r, s, e: failures.append((r, k["exception"])))
    response = call(upstream)
    with pytest.raises(tracking.ValidationError) as raised:
        call(upstream, n=99)
    assert tracking.flush(10)
    assert successes == [response]
    assert failures == [(None, raised.value)]


# -- exactly once -------------------------------------------------------------------------------


def test_each_callback_runs_exactly_once_per_call_whatever_lists_name_it(upstream):
    counts = {"fn": 0}

    def fn(kwargs, response, start_time, end_time):
        counts["fn"] += 1

    logger = BothTwins()
    tracking.success_callback.extend([fn, logger])
    tracking.failure_callback.extend([fn, logger])
    tracking.callbacks.extend([fn, logger, fn])
    for _ in range(3):
        call(upstream)
    asyncio.run(acall(upstream))
    assert tracking.flush(10)
    assert counts["fn"] == 4
    assert sorted(logger.calls) == ["async-success"] + ["sync-success"] * 3


# -- isolation ----------------------------------------------------------------------------------


def test_a_raising_callback_is_counted_logged_once_and_never_reaches_the_caller(upstream, caplog):
    caplog.set_level(logging.ERROR, logger="tracking")
    after = []

    def boom(kwargs, response, start_time, end_time):
        raise RuntimeError("callback bug")

    tracking.success_callback.extend([boom, lambda k, r, s, e: after.append(1)])
    before = errors_of("boom")
    for _ in range(3):
        assert call(upstream).request_id
    assert tracking.flush(10)
    assert errors_of("boom") == before + 3
    assert after == [1, 1, 1]
    logged = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(logged) == 1
    assert "RuntimeError" in logged[0].getMessage()


def test_a_raising_async_callback_is_counted(upstream):
    async def aboom(kwargs, response, start_time, end_time):
        raise ValueError("async bug")

    tracking.success_callback.append(aboom)
    before = errors_of("aboom")
    call(upstream)
    asyncio.run(acall(upstream))
    assert tracking.flush(10)
    assert errors_of("aboom") == before + 2


def test_a_hanging_sync_callback_is_abandoned_and_the_queue_moves_on(upstream):
    bus.configure(callback_timeout=0.2)
    release = threading.Event()
    later = []

    def hangs(kwargs, response, start_time, end_time):
        release.wait(30)

    tracking.success_callback.extend([hangs, lambda k, r, s, e: later.append(1)])
    before = bus.counters()["callback_timeouts"]
    try:
        call(upstream)
        call(upstream)
        assert tracking.flush(10)  # bounded: each hung call is given up after 0.2 s
        timeouts = bus.counters()["callback_timeouts"]
        name = next(k for k in timeouts if k.endswith("hangs"))
        assert timeouts[name] - before.get(name, 0) == 2
        assert later == [1, 1]
    finally:
        release.set()


def _assert_counted_as_a_timeout(upstream, callback) -> None:
    """One call with ``callback`` (an async callback past a 0.2 s timeout): one error and one
    timeout counted under its name."""
    bus.configure(callback_timeout=0.2)
    tracking.success_callback.append(callback)
    before = errors_of(callback.__name__)
    call(upstream)
    assert tracking.flush(10)
    assert errors_of(callback.__name__) == before + 1
    assert any(k.endswith(callback.__name__) for k in bus.counters()["callback_timeouts"])


def test_a_hanging_async_callback_is_abandoned(upstream):
    async def sleeps(kwargs, response, start_time, end_time):
        await asyncio.sleep(30)

    _assert_counted_as_a_timeout(upstream, sleeps)


async def _ignores_its_cancellation(kwargs, response, start_time, end_time):
    """A careless callback: a retry loop that swallows every error, its cancellation too."""
    while True:
        with contextlib.suppress(BaseException):
            await asyncio.sleep(0.05)


def test_an_async_callback_that_ignores_its_cancellation_is_abandoned_and_counted(upstream):
    """It held ``flush()`` (its in-flight count never came down) and was counted nowhere."""
    done = threading.Event()
    flushed = []

    def flush_then_note() -> None:
        flushed.append(tracking.flush())  # no timeout: returns only once the callback is given up
        done.set()

    _assert_counted_as_a_timeout(upstream, _ignores_its_cancellation)
    threading.Thread(target=flush_then_note, daemon=True).start()
    assert done.wait(30), "flush() still waits for a callback that was given up"
    assert flushed == [True]


def test_an_abandoned_async_callback_does_not_hold_the_interpreters_exit(tmp_path):
    """At exit its coroutine was closed in the main thread, which ran its loop forever."""
    script = textwrap.dedent(
        f"""
        import asyncio, io
        from PIL import Image
        import tracking
        from tracking.testing import FakeOpenAI

        async def stubborn(kwargs, response, start_time, end_time):
            while True:
                try:
                    await asyncio.sleep(0.05)
                except BaseException:
                    pass

        tracking.bus.configure(callback_timeout=0.3)
        tracking.success_callback = [stubborn]
        png = io.BytesIO()
        Image.new("RGBA", (8, 8)).save(png, format="PNG")
        with FakeOpenAI(api_keys=["{API_KEY}"]) as fake:
            tracking.image_edit(
                image=png.getvalue(), prompt="hat", model="gpt-image-2",
                api_base=fake.url, api_key="{API_KEY}",
            )
        print("called")
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=90
        )
    except subprocess.TimeoutExpired as stuck:
        raise AssertionError("the process did not exit") from stuck
    assert result.returncode == 0, result.stderr
    assert result.stdout == "called\n"
    assert "stubborn did not finish within 0.3 s and was abandoned" in result.stderr


def test_an_async_callback_that_blocks_the_loop_past_its_time_is_counted(upstream):
    """No timeout can fire while an ``async def`` blocks (``time.sleep``): it ran, delayed the
    others, and was counted nowhere. It cannot be abandoned, but it is counted now."""

    async def blocks(kwargs, response, start_time, end_time):
        time.sleep(0.5)

    _assert_counted_as_a_timeout(upstream, blocks)


def test_a_full_queue_drops_the_oldest_counts_and_warns(upstream, caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    bus.configure(max_queue=2)
    entered, release = threading.Event(), threading.Event()
    seen = []

    def slow(kwargs, response, start_time, end_time):
        entered.set()
        release.wait(30)
        seen.append(kwargs["request_id"])

    tracking.success_callback.append(slow)
    dropped_before = bus.counters()["events_dropped"].get("user_callbacks", 0)
    first = call(upstream)
    assert entered.wait(10)  # the worker is busy with the first; the rest wait in the queue
    ids = [call(upstream).request_id for _ in range(4)]
    release.set()
    assert tracking.flush(10)
    assert bus.counters()["events_dropped"]["user_callbacks"] - dropped_before == 2
    assert seen == [first.request_id, *ids[2:]]  # the two oldest queued were dropped
    assert any("queue is full" in r.getMessage() for r in caplog.records)


# -- registration -------------------------------------------------------------------------------


def test_register_validates_and_adds_once():
    def fn(kwargs, response, start_time, end_time):
        pass

    tracking.register(fn, fn)
    tracking.register(fn, on="success")
    assert tracking.callbacks == [fn]
    assert tracking.success_callback == [fn]
    with pytest.raises(tracking.ConfigurationError, match="built-in integrations: otel"):
        tracking.register("promethus")
    with pytest.raises(tracking.ConfigurationError, match="not a callback: int"):
        tracking.register(42)
    with pytest.raises(tracking.ConfigurationError, match="must accept"):
        tracking.register(lambda kwargs: None)
    assert tracking.callbacks == [fn]


@pytest.mark.parametrize(
    ("bad", "given"),
    [
        (os.path, "the module 'posixpath'"),
        (42, "int 42"),
        (None, "None"),
        ("promethus", "unknown callback 'promethus'"),
    ],
)
@pytest.mark.parametrize("name", ["success_callback", "failure_callback", "callbacks"])
def test_a_list_set_with_something_not_a_callback_is_refused_when_set(name, bad, given):
    """``tracking.success_callback = [os.path]`` was taken as it was, and only the next call
    failed; it is refused where it is written, naming the list, the entry and what is taken."""

    def fn(kwargs, response, start_time, end_time):
        pass

    setattr(tracking, name, [fn])
    with pytest.raises(tracking.ConfigurationError) as refused:
        setattr(tracking, name, [fn, bad])
    message = str(refused.value)
    assert message.startswith(f"tracking.{name}[1]: ") and given in message, message
    if not isinstance(bad, str):
        assert "expected a function fn(kwargs, response, start_time, end_time)" in message
        assert "a tracking.CustomLogger instance" in message and "prometheus" in message
    assert getattr(tracking, name) == [fn]  # the list stays as it was
    if bad is os.path:  # a lone module, without a list, all the same
        with pytest.raises(tracking.ConfigurationError, match="module 'posixpath'"):
            setattr(tracking, name, bad)


def test_a_module_put_in_a_list_past_its_checks_refuses_the_next_call_naming_it(upstream):
    """``.append`` checks (tests/test_callback_list_checks.py); ``list.append`` on the list goes
    past that check, and the call's start still refuses the entry."""
    list.append(tracking.success_callback, os.path)
    with pytest.raises(tracking.ConfigurationError, match="not a callback: the module 'posixpath'"):
        call(upstream)
    tracking.success_callback.clear()


def test_setting_a_list_of_built_in_names_loads_none_of_them():
    """The names are checked against the known ones; their integrations are still created at
    the first call, after the application has configured them (a tracer provider, a registry)."""
    loaded = dict(bus._INSTANCES)
    tracking.callbacks = ["otel", "structlog"]
    tracking.success_callback = "prometheus"
    assert loaded == bus._INSTANCES


def test_a_class_listed_instead_of_an_instance_is_a_clear_error(upstream):
    """An integration's or a logger's class, not an instance: its hooks would run unbound on
    every call (nothing recorded, an error counted under ``builtins.type``) or never."""
    from tracking.integrations.prometheus import PrometheusLogger

    class Logger(tracking.CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            pass

    for cls in (PrometheusLogger, EventRecorder, Logger):
        with pytest.raises(tracking.ConfigurationError, match=rf"is a class.*{cls.__name__}\(\)"):
            tracking.register(cls)
        with pytest.raises(
            tracking.ConfigurationError, match=r"^tracking\.callbacks\[0\]: .*is a class"
        ):
            tracking.callbacks[:] = [cls]
        list.append(tracking.callbacks, cls)  # past the list's own check: the call's start
        with pytest.raises(tracking.ConfigurationError, match="is a class"):
            call(upstream)
        tracking.callbacks.clear()
    assert not any("builtins.type" in name for name in bus.counters()["callback_errors"])


def test_register_without_arguments_checks_the_lists(monkeypatch):
    list.append(tracking.failure_callback, "no-such-sink")  # past the list's own check
    with pytest.raises(tracking.ConfigurationError, match="unknown callback 'no-such-sink'"):
        tracking.register()
    tracking.failure_callback.clear()
    tracking.register()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "5", True])
def test_a_callback_timeout_that_is_not_a_positive_finite_number_is_refused(bad):
    """``nan`` abandoned every callback at once; ``inf`` held the exit forever behind a hung
    callback (or failed it with an OverflowError, losing the queued callbacks)."""
    with pytest.raises(tracking.ConfigurationError, match="callback_timeout: must be a positive"):
        bus.configure(callback_timeout=bad)
    assert bus.DELIVERY.timeout == bus.DEFAULT_CALLBACK_TIMEOUT


@pytest.mark.parametrize("bad", [0, -1, 2.5, 1e3, "100", True, False])
def test_a_queue_bound_that_is_not_a_positive_whole_number_is_refused(bad):
    """``max_queue=True`` set a bound of 1, ``2.5`` one of 2, and ``"100"`` raised a plain
    TypeError from the comparison: each is now a ConfigurationError, the bound unchanged."""
    with pytest.raises(tracking.ConfigurationError, match="max_queue: must be a whole number"):
        bus.configure(max_queue=bad)
    assert bus.DELIVERY.max_queue == bus.DEFAULT_QUEUE_SIZE


def test_a_callback_timeout_from_the_environment_is_checked_at_import():
    def imported_with(value: str) -> subprocess.CompletedProcess[str]:
        script = "import tracking; print(tracking.bus.DELIVERY.timeout)"
        return subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "TRACKING_CALLBACK_TIMEOUT": value},
            capture_output=True,
            text=True,
            timeout=60,
        )

    for bad in ("abc", "0", "-2", "nan", "inf"):
        result = imported_with(bad)
        assert result.returncode != 0
        assert (
            f"ConfigurationError: TRACKING_CALLBACK_TIMEOUT: must be a positive number of "
            f"seconds, got {bad!r}" in result.stderr
        )
    result = imported_with("2.5")
    assert result.returncode == 0 and result.stdout.strip() == "2.5"


def test_counters_have_the_documented_shape():
    snapshot = bus.counters()
    assert set(snapshot) == {
        "callback_errors",
        "callback_timeouts",
        "events_dropped",
        "integration_errors",
    }
    bus.record_drop("test_sink", 3)
    assert bus.counters()["events_dropped"]["test_sink"] >= 3


# -- flush at interpreter exit ------------------------------------------------------------------


def test_queued_callbacks_are_delivered_at_interpreter_exit(tmp_path):
    out = tmp_path / "delivered.txt"
    script = textwrap.dedent(
        f"""
        import io, time
        from PIL import Image
        import tracking
        from tracking.testing import FakeOpenAI

        def slow(kwargs, response, start_time, end_time):
            time.sleep(0.3)  # still queued when the script ends
            with open({str(out)!r}, "a") as f:
                f.write("sync " + kwargs["user"] + "\\n")

        async def aslow(kwargs, response, start_time, end_time):
            import asyncio
            await asyncio.sleep(0.3)
            with open({str(out)!r}, "a") as f:
                f.write("async " + kwargs["user"] + "\\n")

        tracking.success_callback = [slow, aslow]
        png = io.BytesIO()
        Image.new("RGBA", (8, 8)).save(png, format="PNG")
        with FakeOpenAI(api_keys=["{API_KEY}"]) as fake:
            for user in ("u1", "u2"):
                tracking.image_edit(
                    image=png.getvalue(), prompt="hat", model="gpt-image-1", user=user,
                    api_base=fake.url, api_key="{API_KEY}",
                )
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(out.read_text().splitlines())
    assert lines == ["async u1", "async u2", "sync u1", "sync u2"]


def test_an_integration_in_any_list_gets_both_outcomes_once(upstream):
    only_failure, everywhere = EventRecorder(), EventRecorder()
    tracking.failure_callback.extend([only_failure, everywhere])
    tracking.success_callback.append(everywhere)
    tracking.callbacks.append(everywhere)
    call(upstream)
    with pytest.raises(tracking.ValidationError):
        call(upstream, n=99)
    assert [e.status for e in only_failure.events] == ["success", "failure"]
    assert [e.status for e in everywhere.events] == ["success", "failure"]


# -- the lists changed while calls are in flight ------------------------------------------------

SLOW_CALL = {"extra_headers": {"x-fake-fault": "latency=1"}}


def changed_mid_call(upstream, change, **params):
    """Make a call the fake holds for 1 s, running ``change`` 0.5 s into it."""
    timer = threading.Timer(0.5, change)
    timer.start()
    try:
        return call(upstream, **SLOW_CALL, **params)
    finally:
        timer.join()


def integration_errors_of(name: str) -> int:
    return bus.counters()["integration_errors"].get(name, 0)


def test_a_bad_entry_added_mid_call_leaves_that_call_to_the_receivers_it_started_with(
    upstream,
):
    recorder, seen = EventRecorder(), []
    tracking.callbacks.append(recorder)
    tracking.success_callback.append(lambda k, r, s, e: seen.append(k["request_id"]))
    before = integration_errors_of("builtins.int")
    # ``list.append``: past the list's own check, as a list changed behind its back
    response = changed_mid_call(upstream, lambda: list.append(tracking.success_callback, 5))
    assert tracking.flush(10)
    assert [e.request_id for e in recorder.events] == [response.request_id]
    assert seen == [response.request_id]
    assert integration_errors_of("builtins.int") == before  # the call's own lists were good
    with pytest.raises(tracking.ConfigurationError):  # the next call starts with the bad list
        call(upstream)


def test_a_list_set_to_none_mid_call_is_empty_and_never_reaches_the_caller(upstream):
    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    tracking.success_callback.append(lambda k, r, s, e: None)

    def clear() -> None:
        tracking.success_callback = None

    response = changed_mid_call(upstream, clear)
    assert [e.request_id for e in recorder.events] == [response.request_id]
    assert tracking.flush(10)  # also the exit hook's path
    tracking.shutdown(10)


def test_none_or_a_lone_entry_instead_of_a_list(upstream, monkeypatch):
    seen = []

    def on_success(kwargs, response, start_time, end_time):
        seen.append(kwargs["request_id"])

    monkeypatch.setattr(tracking, "failure_callback", None)
    monkeypatch.setattr(tracking, "success_callback", on_success)
    monkeypatch.setattr(tracking, "callbacks", "prometheus")  # a name, not its letters
    response = call(upstream)
    assert tracking.flush(10)
    assert seen == [response.request_id]
    assert [type(i).__name__ for i in bus.integrations()] == ["PrometheusLogger"]
    assert tracking.failure_callback == [] and tracking.callbacks == ["prometheus"]
    tracking.register(on_success, on="failure")
    assert tracking.failure_callback == [on_success]


# -- callbacks change nothing but their own copies ---------------------------------------------


def _vandal(kwargs, response, start_time, end_time):
    """Changes everything a callback is handed, as a buggy or hostile callback might."""
    response.raw["data"].clear()
    response._hidden_params["response_cost"] = 0
    kwargs["metadata"]["tags"].append("EVIL")
    kwargs["metadata"]["team"] = "HACKED"
    event = kwargs["tracking_event"]
    for change in (
        lambda: event.metadata.__setitem__("team", "HACKED"),
        lambda: event.metadata["tags"].append("EVIL"),
        lambda: event.metadata["nested"].__setitem__("x", "EVIL"),
    ):
        with contextlib.suppress(TypeError, AttributeError):
            change()


def test_a_callback_changes_neither_the_callers_response_and_metadata_nor_what_others_see(
    upstream, tmp_path
):
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'spend.db'}", auto_migrate=True)
    recorder, later = EventRecorder(), []
    tracking.callbacks.extend([recorder, ledger])
    tracking.success_callback.extend(
        [_vandal, lambda k, r, s, e: later.append((k["metadata"], r, k["tracking_event"]))]
    )
    metadata = {"team": "design", "tags": ["a"], "nested": {"x": 1}}
    response = call(upstream, metadata=metadata)
    assert tracking.flush(10)
    assert metadata == {"team": "design", "tags": ["a"], "nested": {"x": 1}}
    assert len(response.data) == len(response.raw["data"]) == 1
    assert response._hidden_params["response_cost"] > 0
    ((seen_metadata, seen_response, event),) = later
    assert seen_metadata == metadata  # a fresh copy per callback, lists as the caller sent them
    assert len(seen_response.data) == 1
    assert event is recorder.events[0]
    assert event.to_dict()["metadata"] == metadata
    with ledger.engine.connect() as conn:
        (row,) = conn.execute(sa.select(spend_logs)).all()
    assert row.metadata == metadata and row.team == "design"
    ledger.shutdown(10)


def test_an_async_callback_cannot_change_the_callers_response(upstream):
    async def avandal(kwargs, response, start_time, end_time):
        _vandal(kwargs, response, start_time, end_time)

    tracking.success_callback.append(avandal)
    metadata = {"team": "design", "tags": ["a"], "nested": {"x": 1}}
    response = asyncio.run(acall(upstream, metadata=metadata))
    assert tracking.flush(10)
    assert metadata == {"team": "design", "tags": ["a"], "nested": {"x": 1}}
    assert len(response.raw["data"]) == 1 and response._hidden_params["response_cost"] > 0


# -- nothing a hook or callback raises reaches the call -----------------------------------------


class _Exiting(EventRecorder):
    """An integration whose hooks raise SystemExit (say, a library calling sys.exit)."""

    def on_start(self, call):
        raise SystemExit(3)

    def on_end(self, event):
        raise SystemExit(4)


def test_an_integration_raising_system_exit_never_reaches_the_call(upstream):
    recorder = EventRecorder()
    tracking.callbacks.extend([_Exiting(), recorder])
    before = errors_of("_Exiting")
    response = call(upstream)
    aresponse = asyncio.run(acall(upstream))
    assert [e.request_id for e in recorder.events] == [response.request_id, aresponse.request_id]
    assert errors_of("_Exiting") == before + 4  # on_start and on_end, of each call


def test_a_callback_raising_system_exit_stops_neither_the_worker_nor_the_bus_loop(upstream):
    seen = []

    def exits(kwargs, response, start_time, end_time):
        raise SystemExit(1)

    async def aexits(kwargs, response, start_time, end_time):
        raise SystemExit(1)

    async def arecords(kwargs, response, start_time, end_time):
        seen.append(("async", kwargs["request_id"]))

    tracking.success_callback.extend(
        [exits, aexits, lambda k, r, s, e: seen.append(("sync", k["request_id"])), arecords]
    )
    before = errors_of("exits")
    first, second = call(upstream), call(upstream)
    assert tracking.flush(5)  # a dead worker or loop would hold these until the timeout
    ids = (first.request_id, second.request_id)
    assert sorted(seen) == sorted((kind, i) for kind in ("async", "sync") for i in ids)
    assert errors_of("exits") == before + 4  # exits and aexits, for each call


def test_flush_called_from_a_callback_returns_at_once_and_the_event_reaches_the_others(upstream):
    """The callback's own delivery is in flight while it runs: a flush there waited for itself
    until its timeout (on the bus's loop, stalling every async callback meanwhile), or forever
    with no timeout. It flushes the integrations and returns False at once."""
    flushed, seen = [], []

    def flushes(kwargs, response, start_time, end_time):
        began = time.monotonic()
        flushed.append(("sync", tracking.flush(timeout=3), time.monotonic() - began))

    async def aflushes(kwargs, response, start_time, end_time):
        began = time.monotonic()
        flushed.append(("async", tracking.flush(timeout=3), time.monotonic() - began))

    async def arecords(kwargs, response, start_time, end_time):
        seen.append(("async", kwargs["request_id"]))

    recorder = EventRecorder()
    tracking.success_callback.extend(
        [flushes, aflushes, lambda k, r, s, e: seen.append(("sync", k["request_id"])), arecords]
    )
    tracking.callbacks.append(recorder)
    began = time.monotonic()
    ids = [call(upstream).request_id, asyncio.run(acall(upstream)).request_id]
    assert tracking.flush(10)
    assert time.monotonic() - began < 2.5
    assert (
        sorted((kind, done) for kind, done, _ in flushed)
        == [("async", False)] * 2 + [("sync", False)] * 2
    )
    assert all(took < 1 for _, _, took in flushed), flushed
    assert sorted(seen) == sorted((kind, i) for kind in ("async", "sync") for i in ids)
    assert [e.request_id for e in recorder.events] == ids


# -- one snapshot per call, one run per callback -------------------------------------------------


class _Handler:
    def __init__(self) -> None:
        self.calls = 0

    def handle(self, kwargs, response, start_time, end_time) -> None:
        self.calls += 1


def test_a_bound_method_listed_twice_runs_once_per_call(upstream):
    """``obj.handle`` is a new object at each access: identity never matched, so the same
    method registered twice (or put in two lists) ran twice per call."""
    handler = _Handler()
    tracking.register(handler.handle, on="success")
    tracking.register(handler.handle, on="success")
    assert len(tracking.success_callback) == 1
    tracking.callbacks.append(handler.handle)
    call(upstream)
    assert tracking.flush(10)
    assert handler.calls == 1


@pytest.mark.parametrize("use_async", [False, True])
def test_the_receivers_a_call_started_with_end_it(upstream, use_async):
    """The lists were read again when the call ended: a span opened at the start was never
    ended (the integration removed meanwhile), and one added got an end without a start."""
    later = EventRecorder()
    seen: list[str] = []

    class Swapping(EventRecorder):
        def on_start(self, call) -> None:
            super().on_start(call)
            tracking.callbacks = [later]  # the lists change while the call is in flight
            tracking.success_callback = [lambda *_: seen.append("new")]

    first = Swapping()
    tracking.callbacks = [first]
    tracking.success_callback = [lambda *_: seen.append("old")]
    if use_async:
        asyncio.run(acall(upstream))
    else:
        call(upstream)
    assert tracking.flush(10)
    assert len(first.events) == 1 and later.events == []
    assert seen == ["old"]
    call(upstream)  # the next call takes the lists as they are now
    assert tracking.flush(10)
    assert len(later.events) == 1 and seen == ["old", "new"]


def test_lost_attempts_reach_the_integrations_the_call_started_with(monkeypatch):
    """``on_lost_attempts`` read the lists as they were then, not the call's own receivers."""
    from tracking import flow
    from tracking.testing import FakeOpenAI

    monkeypatch.setattr(flow, "_INITIAL_BACKOFF", 0.001)
    lost: list[int] = []

    class Counting(EventRecorder):
        def on_start(self, call) -> None:
            super().on_start(call)
            tracking.callbacks = []  # removed while the call is in flight

        def on_lost_attempts(self, call, attempts) -> None:
            lost.append(len(attempts))

    first = Counting()
    tracking.callbacks = [first]
    with FakeOpenAI(api_keys=[API_KEY], faults=["drop;times=1"]) as fake:
        tracking.image_edit(
            image=make_png(), prompt="a hat", model="gpt-image-2", quality="low",
            api_base=fake.url, api_key=API_KEY, max_retries=1,
        )  # fmt: skip
    assert lost == [1] and len(first.events) == 1


def test_a_litellm_logger_is_told_which_of_its_hooks_never_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """A CustomLogger written for LiteLLM with ``log_pre_api_call`` and ``log_stream_event``
    was accepted without a word, and those never ran; a warning names them, once per class."""

    class LiteLLMStyle(tracking.CustomLogger):
        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            pass

        async def async_log_stream_event(self, *args: Any) -> None:
            pass

        def log_success_event(self, *args: Any) -> None:
            pass

    class Plain(tracking.CustomLogger):
        def log_success_event(self, *args: Any) -> None:
            pass

    monkeypatch.setattr(tracking, "success_callback", [])  # put back after the test
    with caplog.at_level(logging.WARNING, logger="tracking"):
        tracking.register(LiteLLMStyle(), on="success")
        tracking.register(LiteLLMStyle(), on="success")
        tracking.register(Plain(), on="success")
    said = [r.getMessage() for r in caplog.records if "never called here" in r.getMessage()]
    assert len(said) == 1, said
    assert "log_pre_api_call, async_log_stream_event" in said[0]
    assert "LiteLLMStyle" in said[0]
