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

A non-streamed exchange (:func:`send_sync`, :meth:`AiohttpSender.post`) is bounded as a whole by
its timeout: connecting, sending and reading the answer's headers and body together, so an
upstream trickling its answer a byte at a time cannot hold a call past it. The sync client
enforces it under every socket operation (:class:`_DeadlineBackend`: each one may take only what
is left); a streamed answer keeps the official client's per-read (idle) timeout.

No answer is read past a cap (:data:`DEFAULT_MAX_RESPONSE_BYTES`, 512 MiB, or
``TRACKING_MAX_RESPONSE_BYTES``): both clients read the body in chunks into one
:class:`CappedBody`, so an upstream sending gigabytes costs the cap at most, never the process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import http.cookiejar
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import httpcore
import httpx

from .client_settings import settings_for
from .errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

    from .aiohttp_sender import AiohttpSender

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_RESPONSE_BYTES_ENV",
    "POOL",
    "AnswerTooLarge",
    "CappedBody",
    "ClientPool",
    "aread_capped",
    "max_response_bytes",
    "origin_of",
    "read_capped",
    "send_sync",
]

_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30)


#: The most bytes of one answer's body the SDK reads (a non-streamed answer, decoded), unless
#: ``TRACKING_MAX_RESPONSE_BYTES`` says otherwise. The largest legitimate answer is ten images of
#: gpt-image-2's largest size (3840x2160) as incompressible PNGs in base64: about 10 x 44 MB,
#: 440 MB; real ones are a fraction of that. A larger answer is not read past this cap.
DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024 * 1024
MAX_RESPONSE_BYTES_ENV = "TRACKING_MAX_RESPONSE_BYTES"


def max_response_bytes() -> int:
    """The cap on one answer's body: ``TRACKING_MAX_RESPONSE_BYTES``, else the default."""
    raw = os.environ.get(MAX_RESPONSE_BYTES_ENV)
    return DEFAULT_MAX_RESPONSE_BYTES if not raw else _cap(raw)


@functools.lru_cache(maxsize=8)
def _cap(raw: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise ConfigurationError(
            f"{MAX_RESPONSE_BYTES_ENV}: a positive whole number of bytes, got {raw!r}"
        )
    return int(text)


class AnswerTooLarge(Exception):
    """A success answer (status below 400) whose body is larger than the cap: it was not read
    past the cap, and the connection was closed. The call flow makes it an
    :class:`~tracking.errors.APIResponseError` (the upstream may well have billed it)."""

    def __init__(self, status: int, headers: Mapping[str, str], limit: int) -> None:
        super().__init__(f"the answer's body is larger than {limit:,} bytes")
        self.status = status
        self.headers = headers
        self.limit = limit


class CappedBody:
    """An answer's body collected chunk by chunk up to ``limit`` bytes: one rule for the sync
    and async clients. A success answer over the limit raises :class:`AnswerTooLarge` (from
    its declared length, before any of it is read, when it is not compressed); an error
    answer's body is cut at the limit (its first bytes say what went wrong)."""

    __slots__ = ("_chunks", "_headers", "_limit", "_size", "_status", "declared_within")

    def __init__(self, status: int, headers: Mapping[str, str], limit: int) -> None:
        self._status = status
        self._headers = headers
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        declared = headers.get("content-length")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        length = (
            int(declared)
            if declared is not None
            and len(declared) <= 19  # int() refuses past 4,300 digits; no body is that long
            and declared.isascii()
            and declared.isdigit()
            else None
        )
        #: The answer declares an uncompressed length within the limit: the client, which
        #: reads no more than a declared length, can read it whole in one go.
        self.declared_within = length is not None and length <= limit and encoding == "identity"
        if length is not None and length > limit and encoding == "identity":
            self._over()

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once the limit is reached (read no further)."""
        room = self._limit - self._size
        if len(chunk) > room:
            self._over()
            self._chunks.append(chunk[:room])
            self._size = self._limit
            return False
        self._chunks.append(chunk)
        self._size += len(chunk)
        return True

    def body(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    def _over(self) -> None:
        if self._status < 400:
            raise AnswerTooLarge(self._status, self._headers, self._limit)


def send_sync(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    limit: int,
) -> tuple[int, httpx.Headers, bytes]:
    """Send one request and read its answer up to ``limit`` bytes (:class:`CappedBody`):
    ``(status, headers, body)``, or an httpx error, or :class:`AnswerTooLarge`.

    ``timeout`` bounds the whole exchange (see the module docstring): past it, a read raises
    ``httpx.ReadTimeout`` (a connection, ``ConnectTimeout``; sending, ``WriteTimeout``)."""
    deadline = time.monotonic() + timeout
    token = _DEADLINE.set(deadline)
    try:
        request = client.build_request(
            method, _parsed_url(url), content=body, headers=headers, timeout=timeout
        )
        response = client.send(request, stream=True)
        try:
            return response.status_code, response.headers, read_capped(response, limit, deadline)
        except httpx.TransportError:
            if response.status_code < 400:
                raise  # a success cut short: its outcome is unknown (maybe billed)
            # an error answer whose body broke off or stalled: the status said it all (not
            # billed, retried as that status is), only the message is lost
            return response.status_code, response.headers, b""
        finally:
            response.close()  # a body left unread closes the connection rather than reusing it
            _unlink(response)
    finally:
        _DEADLINE.reset(token)


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """``url`` parsed by httpx once: every call to an upstream sends to the same few URLs, and
    httpx parses a text URL anew for each request (its checks, and its host through
    ``ipaddress``). An ``httpx.URL`` is immutable, so requests share it as they share a
    client's ``base_url``."""
    return httpx.URL(url)


def read_capped(response: httpx.Response, limit: int, deadline: float | None = None) -> bytes:
    """The body of an open (streamed) httpx answer, read up to ``limit`` (:class:`CappedBody`)
    and, given a ``deadline`` (``time.monotonic()``), not past it (``httpx.ReadTimeout``); the
    caller closes the answer."""
    capped = CappedBody(response.status_code, response.headers, limit)
    for chunk in response.iter_bytes():
        if deadline is not None and time.monotonic() >= deadline:
            raise httpx.ReadTimeout("the answer was not read whole within the timeout")
        if not capped.add(chunk):
            break
    return capped.body()


#: When the sync exchange under way in this thread must be over (``time.monotonic()``); None
#: outside :func:`send_sync` (a streamed answer: per-read timeouts only).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tracking_http_deadline", default=None
)
#: A request body is written in pieces of this size, each within what is left of the deadline
#: (most images' requests are one piece: one system call, as without a deadline).
_WRITE_PIECE = 1024 * 1024


def _within(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` for one socket operation, cut to what is left before the deadline (if any);
    ``error`` once nothing is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the exchange did not finish within the timeout")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write takes at most what is left of the deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if len(buffer) <= _WRITE_PIECE:
            self._stream.write(buffer, _within(timeout, httpcore.WriteTimeout))
            return
        view = memoryview(buffer)  # pieces without copies: a socket sends a view as it is
        for start in range(0, len(view), _WRITE_PIECE):  # a slow reader cannot stretch one write
            piece = cast(bytes, view[start : start + _WRITE_PIECE])
            self._stream.write(piece, _within(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._stream.start_tls(
                ssl_context, server_hostname, _within(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with :class:`_DeadlineStream` connections."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _within(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _within(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _bound_by_deadlines(client: httpx.Client) -> httpx.Client:
    """``client`` with :class:`_DeadlineBackend` under each of its connection pools (the direct
    one and a proxy's). httpx offers no setting for it, so the pool's backend is replaced; if a
    later httpx or httpcore lays its pools out otherwise, the body's reads are still bounded
    between chunks (:func:`read_capped`), and ``tests/test_call_timeouts.py`` says so."""
    transports: list[Any] = [getattr(client, "_transport", None)]
    transports += list(getattr(client, "_mounts", {}).values())
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(
            backend, _DeadlineBackend
        ):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return client


async def aread_capped(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    """:func:`read_capped` for an aiohttp answer (one read when it declares a length within the
    limit, as aiohttp reads no more than that); an answer cut short is closed, not pooled."""
    capped = CappedBody(answer.status, answer.headers, limit)
    if capped.declared_within:
        return await answer.read()
    async for chunk in answer.content.iter_any():
        if not capped.add(chunk):
            answer.close()
            break
    return capped.body()


def _unlink(response: httpx.Response) -> None:
    """Break the cycle httpx makes between a response and its stream.

    The cycle (response -> stream -> response) keeps the response, its request and so the whole
    request body alive until the garbage collector runs; with image bodies of hundreds of KB per
    call that churn costs more CPU than the rest of the SDK (benchmarks/async_throughput.py).
    """
    response.stream = _EMPTY


_EMPTY = httpx.ByteStream(b"")


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
                    client = _bound_by_deadlines(
                        _CookielessClient(
                            limits=_LIMITS,
                            follow_redirects=False,
                            trust_env=False,  # the settings read the environment, for both paths
                            proxy=settings.proxy,
                            verify=settings.ssl if settings.ssl is not None else True,
                            headers={"User-Agent": settings.user_agent},
                        )
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
