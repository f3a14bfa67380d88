"""Sending one prepared request with aiohttp: the async half of the call flow's I/O.

httpx's async client costs several times the CPU of aiohttp per request, and even httpx over an
aiohttp transport spends as much again converting requests and answers between the two libraries
(``benchmarks/async_throughput.py`` measures all three). The call flow needs none of httpx's
client features on this path (no redirects, cookies or auth; the body is encoded once; a
streamed answer is opened with :meth:`AiohttpSender.open` and read by its driver), so the async
driver posts with aiohttp directly. Errors are raised as the same httpx
exception types the sync client raises (a dropped connection is a ``RemoteProtocolError``, not a
timeout), so the flow maps both paths' failures with one piece of code.

Its proxy, TLS context and User-Agent come from :mod:`tracking.client_settings`, as the sync
client's do.

The session keeps no cookies: one session serves every caller of an event loop, so a cookie an
upstream sets for one caller must never ride along on another's request.

:meth:`AiohttpSender.post` bounds the whole exchange by its timeout (connecting, sending, the
answer's headers and body), so an upstream trickling its answer cannot hold a call past it: a
timeout before a connection was made is a ``ConnectTimeout`` (nothing was sent, nothing billed),
one after it a ``ReadTimeout`` (the request may have gone out whole: estimated). A streamed
answer (:meth:`AiohttpSender.open`) keeps per-read timeouts, as the sync client's streams do.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import httpx

from .client_settings import ClientSettings
from .http import AnswerTooLarge, aread_capped

__all__ = ["AiohttpSender", "as_httpx_errors"]


if TYPE_CHECKING:
    from aiohttp.tracing import Trace


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # As httpx's timeout: each of connect and every read may take up to ``seconds`` (a whole
    # exchange is bounded besides, in post()).
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class _Exchange:
    """One :meth:`AiohttpSender.post` under way: whether its connection was made yet, and the
    status and headers of an error answer once they are in."""

    __slots__ = ("connected", "error_answer")

    def __init__(self) -> None:
        self.connected = False
        self.error_answer: tuple[int, Mapping[str, str]] | None = None


#: The post() under way in this task, told by :class:`_Connector` once it has its connection.
_EXCHANGE: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "tracking_aiohttp_exchange", default=None
)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, marking the exchange under way as connected (see post())."""

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own signature
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        exchange = _EXCHANGE.get()
        if exchange is not None:
            exchange.connected = True
        return connection


def _httpx_error(exc: BaseException) -> Exception | None:
    """The httpx error the sync client raises for the fault aiohttp raised as ``exc``, if any."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "connect timed out")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(str(exc) or "read timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected")
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.InvalidURL(str(exc))
    if isinstance(exc, aiohttp.ClientError):
        return httpx.ReadError(str(exc) or type(exc).__name__)
    return None


class _AsHttpxErrors:
    """The context manager :func:`as_httpx_errors` returns: stateless, so one serves every
    block (a class, not a generator: it runs around every async attempt)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        mapped = _httpx_error(exc) if exc is not None else None
        if mapped is not None:
            raise mapped from exc


_AS_HTTPX_ERRORS = _AsHttpxErrors()


def as_httpx_errors() -> _AsHttpxErrors:
    """aiohttp's errors raised as the httpx errors the sync client raises for the same faults."""
    return _AS_HTTPX_ERRORS


class AiohttpSender:
    """One aiohttp session (created lazily in the running loop) posting prepared requests."""

    def __init__(self, settings: ClientSettings, *, max_connections: int = 200) -> None:
        self._settings = settings
        # aiohttp's own default (True) for plain http, where no TLS context is needed
        self._ssl: ssl.SSLContext | bool = settings.ssl if settings.ssl is not None else True
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _Connector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                headers={"User-Agent": self._settings.user_agent},
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # the settings read the environment, for both paths
            )
        return self._session

    async def post(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - the whole exchange's, as the sync client takes it
        method: str = "POST",
        limit: int,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST (or ``method``: a job's status, a result to download) and read the answer up to
        ``limit`` bytes (:class:`~tracking.http.CappedBody`): ``(status, headers, body)``, or an
        httpx error, or :class:`~tracking.http.AnswerTooLarge`. ``timeout`` bounds the whole
        exchange (see the module docstring)."""
        exchange = _Exchange()
        token = _EXCHANGE.set(exchange)
        try:
            async with asyncio.timeout(timeout):
                with as_httpx_errors():
                    async with self.session.request(
                        method,
                        url,
                        data=body,
                        headers=headers,
                        timeout=_timeout(timeout),
                        allow_redirects=False,
                        proxy=self._settings.proxy,
                        ssl=self._ssl,
                    ) as answer:
                        if answer.status >= 400:
                            exchange.error_answer = answer.status, answer.headers
                        try:
                            return answer.status, answer.headers, await aread_capped(answer, limit)
                        except AnswerTooLarge:
                            answer.close()
                            raise
        except (TimeoutError, httpx.TransportError) as exc:
            if exchange.error_answer is not None:
                # an error answer whose body broke off or stalled: the status said it all (not
                # billed, retried as that status is), only the message is lost
                return *exchange.error_answer, b""
            if isinstance(exc, httpx.TransportError):
                raise
            # the whole exchange's timeout (aiohttp's own are httpx errors)
            if exchange.connected:
                raise httpx.ReadTimeout("the answer did not arrive whole in time") from None
            raise httpx.ConnectTimeout("no connection was made in time") from None
        finally:
            _EXCHANGE.reset(token)

    async def open(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - as post()
    ) -> aiohttp.ClientResponse:
        """POST and return the answer once its headers are in, its body unread (a stream): the
        caller reads it under :func:`as_httpx_errors` and must ``close()`` it."""
        with as_httpx_errors():
            return await self.session.post(
                url, data=body, headers=headers, timeout=_timeout(timeout), allow_redirects=False
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
