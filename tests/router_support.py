"""Upstreams and helpers for the router tests: scripted stubs on loopback, an event recorder.

``StubUpstream`` is a tiny aiohttp app run on the fake's loopback thread: it answers every edit
with a fixed status (500 / 429 with ``Retry-After: 0``, 400) or, after an optional delay, with
a minimal OpenAI-shaped success. It counts its hits. ``closed_port()`` gives a port nobody
listens on (connection refused).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any

from aiohttp import web

from tests.conftest import API_KEY, make_png
from tests.recorder import EventRecorder
from tracking.router import Router
from tracking.testing import FakeOpenAI

_PNG_B64 = base64.b64encode(make_png(1, 1)).decode()


class StubUpstream(FakeOpenAI):
    """An upstream answering every edit the same way, counting hits (runs like the fake)."""

    hits: int = 0  # a plain counter here, shadowing the fake's read-only property

    def __init__(
        self, *, status: int = 200, delay: float = 0.0, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.status = status
        self.delay = delay
        self.headers = headers or {}
        self.hits = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/images/edits", self._edit)

    async def _edit(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status >= 400:
            body = {"error": {"message": f"stub says {self.status}", "type": "server_error"}}
            return web.json_response(body, status=self.status, headers=self.headers)
        body: dict[str, Any] = {
            "created": 1_700_000_000,
            "data": [{"b64_json": _PNG_B64}],
            "usage": {"input_tokens": 10, "output_tokens": 90, "total_tokens": 100},
        }
        return web.Response(body=json.dumps(body), content_type="application/json")


def closed_port() -> int:
    """A loopback port with no listener: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deployment(
    group: str,
    api_base: str,
    *,
    id: str,
    model: str = "gpt-image-1",
    api_key: str = "sk-test-0123456789abcdefSECRET",
    **params: Any,
) -> dict[str, Any]:
    """One model_list entry."""
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_base": api_base, "api_key": api_key, **params},
        "model_info": {"id": id},
    }


def primary_and_backup(
    primary_url: str, primary_model: str, backup_url: str, backup_model: str
) -> Router:
    """Group ``primary`` (deployment ``p``) falling back to ``backup`` (``b``); one retry in a
    group, and no cooldown in the way."""
    return Router(
        [
            deployment("primary", primary_url, id="p", model=primary_model, api_key=API_KEY),
            deployment("backup", backup_url, id="b", model=backup_model, api_key=API_KEY),
        ],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=1,
        allowed_fails=9,
    )


Recorder = EventRecorder  # the shared recorder of tests/recorder.py


class ManualClock:
    """Time for a router's state that moves only when a test says so (``advance``): no test
    sleeps past a cooldown or dodges a minute boundary. Pass ``clock=clock.time`` and
    ``monotonic=clock.monotonic`` to the state."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start  # the start of a calendar minute

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatheringUpstream(StubUpstream):
    """A :class:`StubUpstream` that holds every edit until ``together`` of them have arrived,
    then answers them all: calls that fail at once, deterministically (no timing involved)."""

    def __init__(self, together: int, *, status: int = 500, wait_at_most: float = 30.0) -> None:
        super().__init__(status=status, headers={"Retry-After": "0"})
        self.together = together
        self.wait_at_most = wait_at_most  # a guard against a hung test, never a measurement
        self.arrived = 0
        self._all_in: asyncio.Event | None = None

    async def _edit(self, request: web.Request) -> web.Response:
        if self._all_in is None:  # made on the fake's own loop
            self._all_in = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.together:
            self._all_in.set()
        async with asyncio.timeout(self.wait_at_most):
            await self._all_in.wait()
        return await super()._edit(request)
