"""Sending one prepared request with aiohttp: the async half of the call flow's I/O.

httpx's async client costs several times the CPU of aiohttp per request, and even httpx over an
aiohttp transport spends as much again converting requests and answers between the two libraries
(``benchmarks/async_throughput.py`` measures all three). The call flow needs none of httpx's
client features on this path (no redirects, cookies, auth or streaming; the body is encoded
once), so the async driver posts with aiohttp directly. Errors are raised as the same httpx
exception types the sync client raises (a dropped connection is a ``RemoteProtocolError``, not a
timeout), so the flow maps both paths' failures with one piece of code.

The session keeps no cookies: one session serves every caller of an event loop, so a cookie an
upstream sets for one caller must never ride along on another's request.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import aiohttp
import httpx

__all__ = ["AiohttpSender"]


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # As httpx's timeout: each of connect and every read may take up to ``seconds``.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class AiohttpSender:
    """One aiohttp session (created lazily in the running loop) posting prepared requests."""

    def __init__(self, *, max_connections: int = 200) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 - per-attempt connect/read timeouts, as the sync client takes them
        method: str = "POST",
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST (or ``method``: a job's status, a result to download) and read the whole answer:
        ``(status, headers, body)``, or an httpx error."""
        try:
            async with self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=_timeout(timeout),
                allow_redirects=False,
            ) as answer:
                return answer.status, answer.headers, await answer.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.InvalidURL(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
