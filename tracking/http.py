"""Pooled HTTP clients: one per upstream for sync calls (httpx), one per event loop and upstream
for async calls (aiohttp, see :mod:`tracking.aiohttp_sender`).

Never one client per call. An async client belongs to the loop that made it; when that loop is
shut down (the end of ``asyncio.run``) its clients are closed through an async generator the loop
finalises, so repeated ``asyncio.run`` calls work without leaks or warnings. After a fork the
child starts with empty pools: sockets inherited from the parent are never reused.

Both kinds are configured from :func:`tracking.client_settings.settings_for` (proxy variables,
CA bundle, User-Agent), so the sync and async paths leave the same way.

The pooled clients keep no cookies: one client serves every caller, so a cookie an upstream sets
in answer to one caller must never ride along on another caller's request (and skipping the
cookie jar saves parsing every answer's headers for it).
"""

from __future__ import annotations

import asyncio
import atexit
import http.cookiejar
import os
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from .client_settings import settings_for

if TYPE_CHECKING:
    from .aiohttp_sender import AiohttpSender

__all__ = ["POOL", "ClientPool", "origin_of", "unlink_response"]

_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30)


def unlink_response(response: httpx.Response) -> None:
    """Break the cycle httpx makes between a fully read response and its stream.

    The cycle (response -> stream -> response) keeps the response, its request and so the whole
    request body alive until the garbage collector runs; with image bodies of hundreds of KB per
    call that churn costs more CPU than the rest of the SDK (benchmarks/async_throughput.py).
    Once the body is read, a plain byte stream over the content serves any later read.
    """
    response.stream = httpx.ByteStream(response.content)


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that never stores or sends a cookie."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


class _NoCookieStore(httpx.Cookies):
    """httpx's cookie store over :class:`_NoCookies`, skipping the urllib adapters httpx builds
    for every answer before handing them to the jar (about 6% of a sync call's CPU)."""

    def __init__(self) -> None:
        super().__init__(_NoCookies())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.Client):
    """An ``httpx.Client`` whose cookie store is always the empty :class:`_NoCookieStore`."""

    _no_cookies = _NoCookieStore()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        pass  # httpx's own __init__ sets its private store, never this property


class _LoopClients:
    """The async clients of one event loop, closed when that loop finalises its async generators."""

    def __init__(self) -> None:
        self.clients: dict[str, AiohttpSender] = {}
        self.closer: AsyncGenerator[None, None] | None = None

    async def close_at_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            clients, self.clients = list(self.clients.values()), {}
            for client in clients:
                await client.aclose()


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: the key the pool keeps one client per."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


class ClientPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[str, httpx.Client] = {}
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary()
        )
        self._orphans: list[Any] = []  # a forked child's inherited clients: kept, never used
        #: The loop of the latest async call and its clients (skips the weak-dict lookup).
        self._last: tuple[asyncio.AbstractEventLoop, _LoopClients] | None = None

    def sync_client(self, origin: str) -> httpx.Client:
        client = self._sync.get(origin)
        if client is None:
            with self._lock:
                client = self._sync.get(origin)
                if client is None:
                    settings = settings_for(origin)
                    client = _CookielessClient(
                        limits=_LIMITS,
                        follow_redirects=False,
                        trust_env=False,  # the settings read the environment, for both paths
                        proxy=settings.proxy,
                        verify=settings.ssl if settings.ssl is not None else True,
                        headers={"User-Agent": settings.user_agent},
                    )
                    self._sync[origin] = client
        return client

    async def async_client(self, origin: str) -> AiohttpSender:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:  # the usual case: the same loop as last time
            entry = last[1]
        else:
            found = self._async.get(loop)
            entry = found if found is not None else _LoopClients()
            self._async[loop] = entry
            self._last = (loop, entry)
        client = entry.clients.get(origin)
        if client is None:
            # Imported here: aiohttp costs more to import than httpx, and sync callers never
            # need it (it would more than double the time until a first sync call is ready).
            from .aiohttp_sender import AiohttpSender

            client = AiohttpSender(
                settings_for(origin), max_connections=_LIMITS.max_connections or 200
            )
            entry.clients[origin] = client
            if entry.closer is None:
                entry.closer = entry.close_at_loop_end()
                await entry.closer.__anext__()
        return client

    def after_fork(self) -> None:
        self._orphans.append((self._sync, dict(self._async)))
        self._lock = threading.Lock()
        self._sync = {}
        self._async = weakref.WeakKeyDictionary()
        self._last = None

    def close_sync(self) -> None:
        with self._lock:
            clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()


POOL = ClientPool()
os.register_at_fork(after_in_child=POOL.after_fork)
atexit.register(POOL.close_sync)
