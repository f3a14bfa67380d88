"""Callbacks that raise, hang or are slow, under concurrent sync and async load: every call
returns its own result unaffected and in bounded time, every well-behaved callback and
integration still gets every event exactly once, and the misbehaviour is counted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import tracking
from tracking import bus
from tracking.errors import InternalServerError

from .conftest import make_png

SYNC_CALLS, ASYNC_CALLS, FAILING_CALLS = 24, 24, 6
#: How long a hung callback hangs unless released (after the calls)
HANG = 60


@pytest.fixture(autouse=True)
def _clean_bus(monkeypatch):
    monkeypatch.setattr(tracking, "success_callback", [])
    monkeypatch.setattr(tracking, "failure_callback", [])
    monkeypatch.setattr(tracking, "callbacks", [])
    # Long enough that a loaded machine does not abandon the 10 ms async callbacks; short
    # enough that the three hung calls each give their worker up quickly.
    bus.configure(callback_timeout=1.0)
    yield
    assert tracking.flush(15)
    bus.configure(callback_timeout=bus.DEFAULT_CALLBACK_TIMEOUT)


class Recorder:
    """A well-behaved integration and callbacks, counting what they get (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()

    def note(self, kind: str, request_id: str) -> None:
        with self.lock:
            self.seen[f"{kind}:{request_id}"] += 1

    # the internal integration protocol
    def on_start(self, call: object) -> None:
        pass

    def on_end(self, event: tracking.ImageEditEvent) -> None:
        self.note("integration", event.request_id)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class RaisingIntegration:
    def on_start(self, call: object) -> None:
        raise RuntimeError("on_start exploded")

    def on_end(self, event: object) -> None:
        raise RuntimeError("on_end exploded")

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class RaisingLogger(tracking.CustomLogger):
    async def async_log_success_event(self, kwargs, response, start_time, end_time):
        raise ValueError("logger exploded")

    def log_success_event(self, kwargs, response, start_time, end_time):
        raise ValueError("logger exploded")

    def log_failure_event(self, kwargs, response, start_time, end_time):
        raise ValueError("logger exploded")


def test_misbehaving_callbacks_never_touch_calls_and_others_get_every_event(fake, upstream):
    recorder = Recorder()
    release = threading.Event()
    hung = Counter[str]()

    def raises(kwargs, response, start_time, end_time):
        raise RuntimeError("callback exploded")

    async def araises(kwargs, response, start_time, end_time):
        raise RuntimeError("async callback exploded")

    def hangs(kwargs, response, start_time, end_time):
        # Hangs on a few calls only: each hang costs the worker its 1 s timeout.
        if kwargs["metadata"].get("hang"):
            hung["n"] += 1
            release.wait(HANG)

    def slow(kwargs, response, start_time, end_time):
        time.sleep(0.005)
        recorder.note("sync", kwargs["request_id"])

    async def aslow(kwargs, response, start_time, end_time):
        await asyncio.sleep(0.01)
        recorder.note("async", kwargs["request_id"])

    everything = [raises, araises, hangs, slow, aslow]
    tracking.success_callback.extend(everything)
    tracking.failure_callback.extend(everything)
    tracking.callbacks.extend([recorder, RaisingIntegration(), RaisingLogger()])
    errors_before = sum(bus.counters()["callback_errors"].values())
    params = {"image": make_png(16, 16), "prompt": "a hat", "model": "gpt-image-1", **upstream}

    def sync_call(i: int) -> str:
        return tracking.image_edit(**params, metadata={"hang": i < 3}).request_id

    def failing_call(_: int) -> None:
        with pytest.raises(InternalServerError):
            tracking.image_edit(
                **params, max_retries=0, extra_headers={"x-fake-fault": "status=500"}
            )

    async def async_calls() -> list[str]:
        responses = await asyncio.gather(
            *(tracking.aimage_edit(**params) for _ in range(ASYNC_CALLS))
        )
        # Async callbacks of async calls run on this loop: keep it open until they have run
        # (asyncio.run cancels what is still running when it returns; see docs/guarantees.md).
        deadline = time.monotonic() + 60  # a bound for "never"
        while time.monotonic() < deadline and not all(
            recorder.seen[f"async:{r.request_id}"] for r in responses
        ):
            await asyncio.sleep(0.01)
        return [r.request_id for r in responses]

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            sync_ids = list(pool.map(sync_call, range(SYNC_CALLS)))
            list(pool.map(failing_call, range(FAILING_CALLS)))
        async_ids = asyncio.run(async_calls())
        calls_took = time.monotonic() - started
        assert tracking.flush(60)
    finally:
        release.set()
    # A call that waited for a hung callback would have taken HANG seconds (the bound was 10 s,
    # a time 54 calls may take on a loaded machine)
    assert calls_took < HANG, f"the calls took {calls_took:.1f} s"
    ids = {*sync_ids, *async_ids}
    assert len(ids) == SYNC_CALLS + ASYNC_CALLS
    for kind in ("integration", "sync", "async"):
        got = {key.split(":", 1)[1]: n for key, n in recorder.seen.items() if key.startswith(kind)}
        # Every call once: the successes by id, and the failures (whose ids only events carry).
        assert len(got) == SYNC_CALLS + ASYNC_CALLS + FAILING_CALLS, kind
        assert set(got.values()) == {1} and ids <= set(got), kind
    assert hung["n"] == 3
    assert any(k.endswith("hangs") for k in bus.counters()["callback_timeouts"])
    errors = sum(bus.counters()["callback_errors"].values()) - errors_before
    assert errors >= 3 * (len(ids) + FAILING_CALLS)  # raises, araises and the logger, on every call
