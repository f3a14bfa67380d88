"""What both HTTP clients are configured with, decided in one place: proxy, CA bundle, User-Agent.

The sync path (httpx, :mod:`tracking.http`) and the async path (aiohttp,
:mod:`tracking.aiohttp_sender`) are different libraries with different defaults: httpx reads
the proxy variables and trusts certifi's CA bundle, aiohttp (as we create it) reads neither and
trusts the system store, and each sends its own ``User-Agent``. Left to those defaults a call
would leave through a corporate proxy when sync and straight out when async. So neither client
is left to its defaults: :func:`settings_for` reads the environment once per upstream and both
clients are built from what it returns (``trust_env`` is off on both).

* Proxy: ``HTTPS_PROXY`` for ``https://`` upstreams, ``HTTP_PROXY`` for ``http://`` ones,
  ``ALL_PROXY`` for either when those are unset (lower-case spellings too, as curl reads them);
  ``NO_PROXY`` lists hosts (``example.com`` also covers its subdomains, ``host:port`` one port,
  ``*`` every host) that are reached directly.
* CA bundle: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else certifi's bundle (what httpx
  trusts by default), one :class:`ssl.SSLContext` shared by both clients.
* ``User-Agent: image-edit-tracking/<version>`` on every request.

The pools are built per upstream and kept, so a change of these variables reaches upstreams
not yet called (and every upstream in a new process).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import ssl
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ClientSettings", "proxy_for", "settings_for", "ssl_context", "user_agent"]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a client for one upstream origin is configured."""

    user_agent: str
    #: The forward proxy's URL, or None to connect directly.
    proxy: str | None
    #: The TLS context (None for a plain ``http://`` upstream).
    ssl: ssl.SSLContext | None


def settings_for(origin: str) -> ClientSettings:
    """The settings of a client for ``origin`` (``scheme://host[:port]``)."""
    secure = origin.lower().startswith("https://")
    return ClientSettings(user_agent(), proxy_for(origin), ssl_context() if secure else None)


@functools.cache
def user_agent() -> str:
    try:
        version = importlib.metadata.version("image-edit-tracking")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        version = "0"
    return f"image-edit-tracking/{version}"


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The one TLS context of both clients (built on first use: loading a bundle takes ms)."""
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def proxy_for(url: str) -> str | None:
    """The proxy a request to ``url`` goes through, per the environment; None: direct."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # both spellings of each variable
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or _bypassed(host, port, proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith(f".{name}"):
            return True
    return False
