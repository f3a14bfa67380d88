"""An httpx async transport over aiohttp: a comparison point for ``async_throughput.py``.

The SDK's async path once sent through httpx over this transport; it now sends with aiohttp
directly (``tracking/aiohttp_sender.py``), which saves httpx's client layer and the conversion of
every request and answer between the two libraries. This variant stays as a measured baseline.

Per request it does as little as it can (measured by ``benchmarks/async_throughput.py``): the
session keeps no cookies (the pooled clients never share cookies between callers, see
:mod:`tracking.http`), answer headers are handed to httpx as the raw bytes aiohttp read, and timeout
objects are reused.
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

_SKIPPED_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


@functools.lru_cache(maxsize=64)
def _timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one aiohttp session, created lazily in the running loop."""

    def __init__(self, *, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        timeout = _timeout(timeouts.get("connect"), timeouts.get("read"))
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SKIPPED_HEADERS
        ]
        body = request.content
        try:
            async with self._get_session().request(
                request.method,
                str(request.url),
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=answer.raw_headers,
                    content=content,
                    request=request,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(
                str(exc) or "server disconnected", request=request
            ) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
