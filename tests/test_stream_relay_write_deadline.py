"""The relay's write deadline (``request_read_timeout`` on each event's ``send``): a write the
client does not take in time ends as ``_ClientStalled``; any other cancellation of the relay
(the client gone, the server stopping) passes through as itself; a write in time leaves no
timer behind and no cancellation pending on the task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tracking.proxy.stream_relay import _ClientStalled, _write

MESSAGE: dict[str, Any] = {"type": "http.response.body", "body": b"x", "more_body": True}


async def _never_taken(message: dict[str, Any]) -> None:
    await asyncio.get_running_loop().create_future()  # a connection that stays full


def test_a_write_not_taken_in_time_is_a_stalled_client() -> None:
    async def main() -> int:
        with pytest.raises(_ClientStalled):
            await _write(_never_taken, MESSAGE, 0.05)
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0  # its own cancellation taken back


def test_another_cancellation_passes_through_as_itself() -> None:
    async def main() -> None:
        entered = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            entered.set()
            await _never_taken(message)

        writing = asyncio.create_task(_write(send, MESSAGE, 60))
        await entered.wait()
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing

    asyncio.run(main())


def test_a_write_taken_in_time_leaves_nothing_armed() -> None:
    async def main() -> int:
        taken: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            taken.append(message)

        await _write(send, MESSAGE, 0.01)
        await asyncio.sleep(0.1)  # past the deadline: nothing may cancel this task now
        assert taken == [MESSAGE]
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0
