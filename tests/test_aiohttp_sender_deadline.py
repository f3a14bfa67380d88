"""The async path's whole-exchange deadline (the call's ``timeout`` around each
``AiohttpSender.post``): past it, the exchange ends as an ``httpx.ReadTimeout`` once connected,
and the caller's task is left as it was (its count of cancellation requests restored), so an
enclosing ``asyncio.timeout`` or task group still tells its own cancellations apart."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from tracking.aiohttp_sender import AiohttpSender
from tracking.client_settings import settings_for


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
