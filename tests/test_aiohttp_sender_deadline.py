"""The async path's whole-exchange deadline (``tracking.aiohttp_sender._Exchange``, the call's
``timeout`` around each ``post``) does what ``asyncio.timeout`` did there: its own expiry alone
becomes ``TimeoutError`` (an ``httpx.ReadTimeout`` or ``ConnectTimeout`` out of ``post``), any
other cancellation passes through as itself, an enclosing deadline that passes first stays the
enclosing one's, the task's count of cancellation requests is restored, and a block done in time
leaves nothing armed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from tracking.aiohttp_sender import AiohttpSender, _Exchange
from tracking.client_settings import settings_for


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()  # an answer that never comes


def test_its_own_expiry_is_a_timeout_and_is_taken_back() -> None:
    async def main() -> int:
        with pytest.raises(TimeoutError), _Exchange(0.05):
            await _forever()
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0


def test_another_cancellation_passes_through_as_itself() -> None:
    async def main() -> None:
        entered = asyncio.Event()

        async def exchange() -> None:
            with _Exchange(60):
                entered.set()
                await _forever()

        running = asyncio.create_task(exchange())
        await entered.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())


def test_an_enclosing_deadline_that_passes_first_stays_the_enclosing_ones() -> None:
    async def main() -> bool:
        outer = asyncio.timeout(0.05)

        async def exchange() -> None:
            async with outer:
                with _Exchange(60):
                    await _forever()

        with pytest.raises(TimeoutError):
            await exchange()
        return outer.expired()

    assert asyncio.run(main())


def test_a_block_done_in_time_leaves_nothing_armed() -> None:
    async def main() -> int:
        with _Exchange(0.01):
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # past the deadline: nothing may cancel this task now
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A server that accepts connections and reads, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/images/edits"
    finally:
        listener.close()


def test_post_past_its_timeout_is_a_read_timeout_and_leaves_the_task_clean(
    silent_upstream: str,
) -> None:
    async def main() -> int:
        sender = AiohttpSender(settings_for(silent_upstream))
        try:
            with pytest.raises(httpx.ReadTimeout):  # connected (the backlog): sent
                await sender.post(silent_upstream, body=b"{}", headers={}, timeout=0.3, limit=1024)
        finally:
            await sender.aclose()
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0
