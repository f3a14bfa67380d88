"""User callbacks run in a copy of the caller's context, taken when the call ended.

They ran in the bus's threads' own contexts: a callback could not read a ``ContextVar`` the
caller had set (a request id bound by a web framework, a tenant), except, by accident, an
``async def`` one after an async call. Each callback now gets its own copy of the context of
the call that caused it, for sync and async calls and every shape of callback.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tracking.call_control import CallControl, controlled, current_control

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "test_request_id", default=None
)
WAIT = 30.0  # seconds: generous under CI load, never reached when things work


pytestmark = pytest.mark.usefixtures("clean_callbacks")


def _params(upstream: dict[str, str], ok: bool) -> dict[str, Any]:
    # a bad size fails the call before anything is sent: its failure event goes to the callbacks
    return {
        "image": make_png(),
        "prompt": "a hat",
        "model": "gpt-image-1",
        "size": "1024x1024" if ok else "7x7",
        **upstream,
    }


def _call_sync(upstream: dict[str, str], request_id: str, ok: bool = True) -> None:
    REQUEST_ID.set(request_id)
    try:
        tracking.image_edit(**_params(upstream, ok))
    except tracking.ValidationError:
        assert not ok


def _call_async(upstream: dict[str, str], request_id: str, ok: bool = True) -> None:
    async def main() -> None:
        REQUEST_ID.set(request_id)
        try:
            await tracking.aimage_edit(**_params(upstream, ok))
        except tracking.ValidationError:
            assert not ok

    asyncio.run(main())


def _shapes(seen: list[tuple[str, str | None]]) -> dict[str, Any]:
    """One callback of each shape, each noting the request id it reads."""

    def plain(kwargs, response, start_time, end_time):
        seen.append(("plain", REQUEST_ID.get()))

    async def coroutine(kwargs, response, start_time, end_time):
        await asyncio.sleep(0)
        seen.append(("coroutine", REQUEST_ID.get()))

    async def awaited():
        await asyncio.sleep(0)
        seen.append(("returned awaitable", REQUEST_ID.get()))

    def returns_awaitable(kwargs, response, start_time, end_time):
        return awaited()

    class SyncLogger(tracking.CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(("sync logger", REQUEST_ID.get()))

        def log_failure_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(("sync logger", REQUEST_ID.get()))

    class AsyncLogger(tracking.CustomLogger):
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(("async logger", REQUEST_ID.get()))

        async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(("async logger", REQUEST_ID.get()))

    return {
        "plain": plain,
        "coroutine": coroutine,
        "returned awaitable": returns_awaitable,
        "sync logger": SyncLogger(),
        "async logger": AsyncLogger(),
    }


CALLERS: dict[str, Callable[..., None]] = {"sync": _call_sync, "async": _call_async}


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_every_shape_of_callback_reads_the_callers_context_variables(upstream, caller, outcome):
    seen: list[tuple[str, str | None]] = []
    shapes = _shapes(seen)
    listed = tracking.success_callback if outcome == "success" else tracking.failure_callback
    listed.extend([shapes["plain"], shapes["coroutine"], shapes["returned awaitable"]])
    tracking.callbacks.extend([shapes["sync logger"], shapes["async logger"]])
    CALLERS[caller](upstream, f"req-{caller}-{outcome}", ok=outcome == "success")
    assert tracking.flush(WAIT)
    assert sorted(seen) == sorted((name, f"req-{caller}-{outcome}") for name in shapes)


def test_the_context_is_the_one_the_call_ended_in_not_the_callers_later_one(upstream):
    """A copy taken in the call: what the caller sets afterwards never reaches the callback."""
    go, seen = threading.Event(), []

    def on_success(kwargs, response, start_time, end_time):
        assert go.wait(WAIT)
        seen.append(REQUEST_ID.get())

    tracking.success_callback.append(on_success)
    _call_sync(upstream, "req-1")
    REQUEST_ID.set("req-after")  # the callback is still waiting: it must not see this
    go.set()
    assert tracking.flush(WAIT)
    assert seen == ["req-1"]


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_what_a_callback_sets_reaches_neither_another_callback_nor_the_caller(upstream, caller):
    seen: list[tuple[str, str | None]] = []

    def first(kwargs, response, start_time, end_time):
        REQUEST_ID.set("changed by first")

    async def second(kwargs, response, start_time, end_time):
        REQUEST_ID.set("changed by second")

    def third(kwargs, response, start_time, end_time):
        seen.append(("third", REQUEST_ID.get()))

    async def fourth(kwargs, response, start_time, end_time):
        seen.append(("fourth", REQUEST_ID.get()))

    tracking.success_callback.extend([first, second, third, fourth])
    for n in range(3):  # the worker and the loop run many calls' callbacks in turn
        CALLERS[caller](upstream, f"req-{n}")
    assert tracking.flush(WAIT)
    expected = [(name, f"req-{n}") for n in range(3) for name in ("third", "fourth")]
    assert sorted(seen) == sorted(expected)


def test_concurrent_async_calls_each_hand_their_own_context_to_their_callbacks(upstream):
    """The web framework's case: one request id per task, many tasks on one loop."""
    seen: list[tuple[str, str | None]] = []

    def on_success(kwargs, response, start_time, end_time):
        seen.append((kwargs["metadata"]["request"], REQUEST_ID.get()))

    tracking.success_callback.append(on_success)

    async def one(n: int) -> None:
        REQUEST_ID.set(f"req-{n}")
        params = _params(upstream, ok=True)
        await tracking.aimage_edit(**params, metadata={"request": f"req-{n}"})

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(8)))

    asyncio.run(main())
    assert tracking.flush(WAIT)
    assert sorted(seen) == sorted((f"req-{n}", f"req-{n}") for n in range(8))


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_a_callback_never_runs_under_the_control_of_the_call_that_caused_it(upstream, caller):
    """The proxy controls each call (its id, its budget's cover, what it cost): a callback that
    made a call of its own under the ended call's control would take that call's place there."""
    seen: list[object] = []

    def plain(kwargs, response, start_time, end_time):
        seen.append(current_control())

    async def coroutine(kwargs, response, start_time, end_time):
        seen.append(current_control())

    tracking.success_callback.extend([plain, coroutine])
    control = CallControl()

    if caller == "sync":
        with controlled(control):
            _call_sync(upstream, "req-controlled")
            assert current_control() is control  # the caller's own context keeps it
    else:

        async def main() -> None:
            with controlled(control):
                REQUEST_ID.set("req-controlled")
                await tracking.aimage_edit(**_params(upstream, ok=True))
                assert current_control() is control

        asyncio.run(main())
    assert tracking.flush(WAIT)
    assert control.claimed and seen == [None, None]
