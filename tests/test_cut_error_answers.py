"""An error answer whose body breaks off (or stalls) is still that error answer: its status came,
so the attempt was not billed and is retried as that status is; only its message is lost. A
success cut short stays an attempt whose outcome is unknown (maybe billed: estimated).

The upstream is a raw HTTP server on loopback that reads the whole request, sends a status line,
headers and half the body it announced, then closes (or stops sending).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

import tracking
from tests.conftest import edit_either, make_png
from tests.raw_http import read_message
from tests.recorder import record_events


@contextmanager
def _cut_answer(status: int, *, stall: bool = False) -> Iterator[str]:
    """A server answering ``status`` with half its body, then closing (or, with ``stall``,
    keeping the connection open and silent until the test ends)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            read_message(connection)
            reason = b"OK" if status < 300 else b"Error"
            connection.sendall(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
                b"\r\n" % (status, reason) + b'{"error": {"message": "the upstream is '
            )
            if stall:
                done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        done.set()
        thread.join(10)
        listener.close()


def _edit(
    api_base: str, use_async: bool, timeout: float = 30, *, stream: bool = False
) -> BaseException:
    params = {
        "image": make_png(),
        "prompt": "a hat",
        "model": "gpt-image-2",
        "api_base": api_base,
        "api_key": "sk-test-0123456789",
        "max_retries": 0,
        "timeout": timeout,
        "stream": stream,
    }

    async def read_async() -> None:
        async for _ in await tracking.aimage_edit(**params):
            pass

    def call() -> None:
        if not stream:
            edit_either(use_async, **params)
        elif use_async:
            asyncio.run(read_async())
        else:
            for _ in tracking.image_edit(**params):
                pass

    with pytest.raises(tracking.APIError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stall", [False, True], ids=["closed", "stalled"])
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_an_error_answer_cut_short_is_that_error_and_costs_nothing(
    monkeypatch, use_async, stall, stream
):
    events = record_events(monkeypatch)
    with _cut_answer(500, stall=stall) as api_base:
        error = _edit(api_base, use_async, timeout=2, stream=stream)
    assert isinstance(error, tracking.InternalServerError), repr(error)
    event = events.last
    assert (event.http_status, event.error_type) == (500, error.error_type)
    assert (event.cost_usd, event.cost_source) == (Decimal(0), "table")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_success_cut_short_is_still_estimated(monkeypatch, use_async):
    events = record_events(monkeypatch)
    with _cut_answer(200) as api_base:
        error = _edit(api_base, use_async)
    assert isinstance(error, tracking.APIConnectionError), repr(error)
    event = events.last
    assert event.cost_source == "estimate" and event.cost_usd is not None and event.cost_usd > 0
