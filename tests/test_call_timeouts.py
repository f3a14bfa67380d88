"""The call's ``timeout`` bounds each attempt's whole exchange (connecting, sending, the answer's
headers and body), sync and async: an upstream trickling its answer a byte at a time no longer
holds a call past it, nor does a FLUX status page trickled poll after poll (the timeout bounds
the whole job). A streamed answer keeps per-read (idle) timeouts. A timed-out attempt whose
request went out is still estimated, never $0. Upstreams are small servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import API_KEY, make_png
from tests.recorder import record_events
from tracking.testing.app_thread import AppThread

PNG = make_png(64, 64)
#: how long each misbehaving upstream keeps trickling: far past any timeout below
TRICKLE_SECONDS = 30.0
#: generous: the calls time out after 2 or 3 s; before the fix they lasted TRICKLE_SECONDS
#: (12 s left a loaded 2-core machine less room than needed; any bound below 30 s tells the two)
BOUND = 20.0


async def _trickle(request: web.Request, body: bytes, pause: float) -> web.StreamResponse:
    await request.read()
    answer = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await answer.prepare(request)  # the headers go at once
    try:
        for index in range(len(body)):
            await answer.write(body[index : index + 1])
            await asyncio.sleep(pause)
        await answer.write_eof()
    except (ConnectionError, RuntimeError):  # the client gave up, as it should
        pass
    return answer


async def _whitespace_then_nothing(request: web.Request) -> web.StreamResponse:
    return await _trickle(request, b" " * int(TRICKLE_SECONDS) + b"{}", 1.0)


@pytest.fixture(scope="module")
def trickling() -> Iterator[str]:
    """An upstream answering 200 to Gemini's and xAI's edit routes, one byte a second."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1beta/models/{target}", _whitespace_then_nothing)
    app.router.add_post("/images/edits", _whitespace_then_nothing)
    server = AppThread(app, name="trickling", shutdown_timeout=0.1)
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow_flux() -> Iterator[str]:
    """A FLUX API whose submit answers at once and whose status page trickles (Pending)."""

    async def submit(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": "j1", "polling_url": f"{base}/poll?id=j1"})

    async def poll(request: web.Request) -> web.StreamResponse:
        body = b'{"id": "j1", "status": "Pending", "pad": "' + b"." * 60 + b'"}'
        return await _trickle(request, body, 0.5)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/{model}", submit)
    app.router.add_get("/poll", poll)
    server = AppThread(app, name="slow-flux", shutdown_timeout=0.1)
    base = f"http://127.0.0.1:{server.start()}"
    try:
        yield base
    finally:
        server.stop()


class _TrickledHeaders:
    """A raw HTTP server that reads a request, then sends its status line and headers one byte
    every half second (aiohttp and httpx read headers in pieces: each read is quick)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _TrickledHeaders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 60
        with connection:
            connection.settimeout(5)
            try:
                connection.recv(1 << 20)  # the request (small: the rest waits in the buffer)
                for index in range(len(head)):
                    if self._stop.wait(0.5):
                        return
                    connection.sendall(head[index : index + 1])
            except OSError:  # the client gave up, as it should
                return


def _run(use_async: bool, **params: Any) -> tuple[BaseException, float]:
    """The call's failure and how long it took, through the sync or the async entry point."""
    started = time.monotonic()
    call: Callable[[], Any] = (
        (lambda: asyncio.run(tracking.aimage_edit(**params)))
        if use_async
        else (lambda: tracking.image_edit(**params))
    )
    with pytest.raises(tracking.APITimeoutError) as caught:
        call()
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("model", ["gemini/gemini-3.1-flash-image", "xai/grok-imagine-image"])
def test_a_trickled_answer_ends_at_the_calls_timeout(monkeypatch, trickling, use_async, model):
    events = record_events(monkeypatch)
    _, elapsed = _run(
        use_async,
        image=PNG,
        prompt="a hat",
        model=model,
        api_base=trickling,
        api_key=API_KEY,
        timeout=2,
        max_retries=0,
    )
    assert elapsed < BOUND  # the answer would have trickled on for 30 s
    event = events.last
    assert event.error_type == "timeout"
    # the request went out whole: maybe billed, so estimated as any timed-out read is
    assert event.cost_source == "estimate" and event.cost_usd is not None and event.cost_usd > 0


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_trickled_headers_end_at_the_calls_timeout(monkeypatch, use_async):
    events = record_events(monkeypatch)
    with _TrickledHeaders() as server:
        _, elapsed = _run(
            use_async,
            image=PNG,
            prompt="a hat",
            model="xai/grok-imagine-image",
            api_base=server.url,
            api_key=API_KEY,
            timeout=2,
            max_retries=0,
        )
    assert elapsed < BOUND  # the headers would have trickled on for 35 s
    assert events.last.cost_source == "estimate"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_flux_job_whose_status_trickles_ends_at_the_calls_timeout(
    monkeypatch, slow_flux, use_async
):
    """docs/flux.md: the call's timeout bounds the whole job; each poll gets what is left."""
    events = record_events(monkeypatch)
    error, elapsed = _run(
        use_async,
        image=PNG,
        prompt="a hat",
        model="black_forest_labs/flux-kontext-pro",
        api_base=slow_flux,
        api_key=API_KEY,
        timeout=3,
        max_retries=0,
    )
    assert elapsed < BOUND  # one status page alone trickles for 35 s
    assert error.job_submitted  # never submitted again
    event = events.last
    # the job was accepted, so it is billed: estimated at Kontext [pro]'s price
    assert event.cost_source == "estimate" and event.cost_usd is not None and event.cost_usd > 0


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_streamed_answer_keeps_per_read_timeouts(fake, use_async):
    """Events 1 s apart for 3 s in all: each read within the 2.5 s timeout, the whole not (a
    loaded machine made events 0.8 s apart arrive near a 1.5 s timeout)."""
    params: dict[str, Any] = dict(
        image=PNG,
        prompt="a hat",
        model="gpt-image-2",
        size="1024x1024",
        api_base=fake.url,
        api_key=API_KEY,
        timeout=2.5,
        max_retries=0,
        stream=True,
        partial_images=3,
        extra_headers={"x-fake-fault": "event_delay=1.0"},
    )

    async def consume_async() -> list[Any]:
        return [event async for event in await tracking.aimage_edit(**params)]

    started = time.monotonic()
    events = asyncio.run(consume_async()) if use_async else list(tracking.image_edit(**params))
    assert time.monotonic() - started > 2.5  # longer than the timeout, and not cut off
    assert events[-1].type == "image_edit.completed"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_connection_not_made_within_the_timeout_is_not_billed(monkeypatch, use_async):
    """A listener whose accept queue is full drops new connections' SYNs: connecting hangs.
    Nothing was sent, so the timeout costs nothing (a timeout after connecting is estimated)."""
    events = record_events(monkeypatch)
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
            time.sleep(0.2)
            _, elapsed = _run(
                use_async,
                image=PNG,
                prompt="a hat",
                model="xai/grok-imagine-image",
                api_base="http://{}:{}".format(*full.getsockname()),
                api_key=API_KEY,
                timeout=1.5,
                max_retries=0,
            )
        finally:
            for filler in fillers:
                filler.close()
    assert elapsed < BOUND
    event = events.last
    assert event.error_type == "timeout" and event.cost_usd == 0
    assert event.cost_source != "estimate"
