"""An aiohttp application served on loopback from a thread with its own event loop.

The fake upstream (:class:`~tracking.testing.FakeOpenAI`) and the tests' purpose-built upstreams
use it, so that sync code under test can call them while the server keeps answering. Stopping
ends the loop: handlers still running (a fault's sleep) get ``shutdown_timeout`` seconds to
finish, then are cancelled and awaited, never left to be destroyed with a warning; ``stop``
returns once the server's thread has ended. Until 2026-12-06 the default was 60 s, longer than
``stop`` waited (10 s): stopping a fake that held a request (``latency=60``) took 10 s and
returned with its thread still serving.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web

__all__ = ["AppThread", "ServedApp"]


class AppThread:
    """Serve ``app`` on ``host:port`` (0: a free port) until :meth:`stop`."""

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "aiohttp-app",
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Start serving; returns the port. A failure to bind is raised here."""
        ready = threading.Event()
        failure: list[BaseException] = []
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
        )

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site(runner))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.port

    async def _start_site(self, runner: web.AppRunner) -> None:
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            # aiohttp waits shutdown_timeout for the handlers, then as long for their cancellation
            self._thread.join(2 * self.shutdown_timeout + 10)
            self._loop = None
            self._thread = None


class ServedApp:
    """A fake upstream's lifecycle: :meth:`start` serves ``self.app`` on ``host:port`` from a
    thread (a port of 0 becomes the free port chosen), :meth:`stop` ends it; a context manager."""

    app: web.Application
    host: str
    port: int
    thread_name = "fake-upstream"
    _server: AppThread | None = None

    def start(self) -> Self:
        self._server = AppThread(self.app, self.host, self.port, name=self.thread_name)
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
