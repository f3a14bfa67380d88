"""An async routed call cancelled at any point leaves nothing of itself in the routing state.

* Cancelled while its Redis "begin" was answered: the pipeline had run in Redis (the call was
  in flight there and held an rpm place) but the call never learnt it, so no end removed it: the
  entry stayed for its 10-minute lease, and least-busy routing saw a call that was not there.
  The begin now finishes in the background and is undone.
* Cancelled while a large request was prepared off the event loop: the route was never told,
  and the call stayed in flight in the process's state for good.
* Cancelled in the backoff before a retry: the retry, never sent, kept its rpm place.
"""

from __future__ import annotations

import asyncio
import io
import os

import pytest
import redis.asyncio
from PIL import Image

from tests.conftest import API_KEY, make_png
from tests.router_support import StubUpstream, deployment
from tests.services import REDIS_HOST, REDIS_PORT
from tracking.router import MemoryState, RedisState, Router


class HoldingRelay:
    """A loopback TCP relay to Redis that holds Redis's answer to the first pipeline with a
    ZADD (a call's begin: Redis runs it, the caller does not hear back) until ``release``."""

    def __init__(self) -> None:
        self.begin_sent = asyncio.Event()
        self.release = asyncio.Event()
        self._hold = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        self._writers += [writer, up_writer]
        for pump in (self._requests(reader, up_writer), self._answers(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if b"ZADD" in data and not self.begin_sent.is_set():
                self._hold = True
                self.begin_sent.set()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._hold:
                await self.release.wait()
                self._hold = False
            writer.write(data)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
        await self.server.wait_closed()


async def _until(check, what: str) -> None:
    """Poll ``check`` (a coroutine function) until true; fail after 60 s (a bound for "never",
    on a loaded machine) naming ``what``."""
    for _ in range(6000):
        if await check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"still not {what} after 60 s")


@pytest.mark.redis
async def test_a_call_cancelled_during_its_redis_begin_leaves_no_entry(
    redis_url, redis_prefix, fake
):
    relay = HoldingRelay()
    port = await relay.start()
    # a long socket timeout: the held answer is a cancellation's window, never an outage
    state = RedisState(f"redis://127.0.0.1:{port}/0", prefix=redis_prefix, socket_timeout=30)
    router = Router(
        [deployment("images", fake.url, id="d", model="gpt-image-2", api_key=API_KEY)], state=state
    )
    direct = redis.asyncio.Redis.from_url(redis_url)
    in_flight = f"{redis_prefix}inflight-calls:d"

    async def rpm() -> int:
        keys = [key async for key in direct.scan_iter(match=f"{redis_prefix}rpm:d:*")]
        return sum([int(await direct.get(key) or 0) for key in keys])

    try:
        call = asyncio.create_task(
            router.aimage_edit(image=make_png(), prompt="a red hat", model="images")
        )
        await asyncio.wait_for(relay.begin_sent.wait(), 30)

        async def begun() -> bool:  # Redis ran the begin; its answer is held
            return bool(await direct.zcard(in_flight) == 1 and await rpm() == 1)

        await _until(begun, "begun in Redis")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        relay.release.set()

        async def undone() -> bool:
            return bool(await direct.zcard(in_flight) == 0 and await rpm() == 0)

        await _until(undone, "undone: the cancelled call is still in flight in Redis")
    finally:
        await direct.aclose()
        await relay.close()


class _CancelsOnBegin(MemoryState):
    """Routing state whose ``begin`` number ``at`` cancels the call's task: the call is then
    cancelled at its next wait, deterministically."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.begun = 0

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        self.begun += 1
        if self.begun == self.at:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return super().begin(deployment_id, rpm_limit)


def _noise_png(side: int = 400) -> bytes:
    """A PNG that does not compress: over 256 KiB, so a Gemini request is prepared off the loop."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


async def test_a_call_cancelled_while_its_request_is_prepared_is_not_left_in_flight():
    state = _CancelsOnBegin(at=1)
    gemini = {
        "model_name": "images",
        "litellm_params": {"model": "gemini/gemini-3-pro-image", "api_key": "AIza-test-0123"},
        "model_info": {"id": "gem"},
    }
    router = Router([gemini], state=state, register_prices=False)
    image = _noise_png()
    assert len(image) > 256 * 1024
    with pytest.raises(asyncio.CancelledError):
        await router.aimage_edit(image=image, prompt="a red hat", model="images")
    snapshot = state.snapshot(["gem"])
    assert (snapshot.in_flight, snapshot.rpm) == ({"gem": 0}, {"gem": 0})


async def test_a_retry_cancelled_in_its_backoff_takes_no_rpm_place(recorder):
    state = _CancelsOnBegin(at=2)  # the retry's begin: the call is cancelled in its backoff
    with StubUpstream(status=500) as broken:
        router = Router(
            [deployment("images", broken.url, id="d", model="gpt-image-2", api_key=API_KEY)],
            state=state,
            num_retries=1,
            register_prices=False,
        )
        with pytest.raises(asyncio.CancelledError):
            await router.aimage_edit(image=make_png(), prompt="a red hat", model="images")
        assert broken.hits == 1
    snapshot = state.snapshot(["d"])
    assert (snapshot.in_flight, snapshot.rpm) == ({"d": 0}, {"d": 1})  # the one request sent
    (event,) = recorder.events
    assert (event.deployment_id, event.attempts) == ("d", 1)
