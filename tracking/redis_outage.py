"""Living through a Redis outage: shared by the router's state and the proxy's counters.

Both keep their state in Redis when it answers and fall back to local state when it does not.
:class:`RedisOutage` remembers that Redis is down for ``retry_interval`` seconds (so a dead
server costs one timeout per interval, not one per call) and warns once per outage.
:func:`redis_client` and :func:`async_redis_client` make every client either of them uses, with
the same settings: ``timeout`` bounds connecting and each answer, and a timeout is never retried
by the client (it is an outage, which :class:`RedisOutage` handles).

How long Redis is left alone after an error is ``TRACKING_REDIS_RETRY_SECONDS`` (default 5 s),
for the proxy's counters and the router's state alike (:func:`retry_interval_from_environment`).

A Redis Cluster is named by a URL whose scheme is ``redis+cluster://`` (``rediss+cluster://``
with TLS) and whose host part lists one or more of its nodes, comma-separated
(``redis+cluster://:password@10.0.0.1:7000,10.0.0.2:7000``; the rest are discovered): both clients
are then redis-py's ``RedisCluster``. LiteLLM names a cluster by its startup nodes
(``redis_startup_nodes``, a list of ``{host, port}``), which the proxy turns into such a URL
(:func:`cluster_url`); LiteLLM has no URL of its own for a cluster.

LiteLLM names a cluster in two more places, read here too (:func:`cache_redis_url`): its
response cache's ``litellm_settings.cache_params.redis_startup_nodes`` (with ``cache: true``;
https://docs.litellm.ai/docs/proxy/caching, "Redis Cluster", read 2026-12-07), and the
``REDIS_CLUSTER_NODES`` environment variable, a JSON list of ``{"host", "port"}`` that
LiteLLM's every Redis client reads (``litellm/_redis.py``, ``_get_redis_client_logic`` and
``init_redis_cluster``: ``json.loads`` of the variable, each item a ``ClusterNode(**item)``,
``REDIS_PASSWORD`` as the password; BerriAI/litellm at 009e7bc0985219e25d93d15d70924c85315ea119,
read 2026-12-07). This proxy has no response cache: the Redis that ``cache_params`` or
``REDIS_CLUSTER_NODES`` names holds its shared counters, as LiteLLM's proxy keeps its counters
in its cache's Redis.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .environment_numbers import seconds_from_environment
from .errors import ConfigurationError

__all__ = [
    "CLUSTER_NODES_ENV",
    "DEFAULT_RETRY_SECONDS",
    "RETRY_ENV",
    "RedisOutage",
    "async_redis_client",
    "cache_redis_url",
    "cluster_url",
    "import_redis",
    "is_cluster_url",
    "redis_client",
    "retry_interval_from_environment",
    "seconds_from_environment",
    "timeout_from_environment",
]

log = logging.getLogger("tracking")

#: How long after a Redis error the state is kept locally before Redis is tried again.
RETRY_ENV = "TRACKING_REDIS_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 5.0


def retry_interval_from_environment() -> float:
    """``TRACKING_REDIS_RETRY_SECONDS``, the seconds Redis is left alone after an error."""
    return seconds_from_environment(RETRY_ENV, DEFAULT_RETRY_SECONDS)


#: How long one exchange with Redis may take before Redis is taken as away.
TIMEOUT_ENV = "TRACKING_REDIS_TIMEOUT_SECONDS"


def timeout_from_environment(default: float) -> float:
    """``TRACKING_REDIS_TIMEOUT_SECONDS``: how long connecting and each answer (the proxy's
    counters: each operation as a whole) may take before Redis is taken as away; ``default``
    when unset (the router's state 0.25 s, the proxy's counters 1 s). 0 would make the sockets
    non-blocking: it is logged and ``default`` used, as a value that is not a number is."""
    seconds = seconds_from_environment(TIMEOUT_ENV, default)
    if seconds == 0:
        log.warning("%s=0 is not a timeout; using %g", TIMEOUT_ENV, default)
        return default
    return seconds


def import_redis() -> ModuleType:
    """The ``redis`` package, or a clear error naming the extra that installs it."""
    try:
        import redis
    except ModuleNotFoundError:
        from .extras import install_hint

        raise ConfigurationError(
            f"redis_url needs the 'redis' package: {install_hint('redis')}"
        ) from None
    return redis


def _settings(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
    }


#: The schemes of a URL naming a Redis Cluster by some of its nodes.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def cluster_url(nodes: object, password: str | None = None) -> str:
    """The ``redis+cluster://`` URL of LiteLLM's ``redis_startup_nodes`` (a list of mappings with
    ``host`` and ``port``); a clear error for anything else."""
    if not isinstance(nodes, list) or not nodes:
        raise ConfigurationError("redis_startup_nodes: expected a list of {host, port}")
    hosts = []
    for node in nodes:
        host = node.get("host") if isinstance(node, dict) else None
        port = node.get("port", 6379) if isinstance(node, dict) else None
        if (
            not isinstance(host, str)
            or not host
            or isinstance(port, bool)
            or re.fullmatch(r"[0-9]{1,5}", str(port)) is None  # ("²".isdigit() is true)
            or not 1 <= int(str(port)) <= 65535
        ):
            raise ConfigurationError(
                "redis_startup_nodes: each node is {host, port} (a port from 1 to 65535), "
                f"got {node!r:.200}"
            )
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis+cluster://{auth}{','.join(hosts)}"


def settings_redis_url(settings: Mapping[str, Any]) -> str | None:
    """The Redis a config's ``router_settings`` name, as LiteLLM's keys do: ``redis_url``, else
    a Redis Cluster's ``redis_startup_nodes``, else ``redis_host`` / ``redis_port`` (6379) with
    ``redis_password`` (quoted into the URL); None when they name none. The router and the
    proxy's counters both read it here, so they always share one Redis."""
    url = settings.get("redis_url")
    if url:
        return str(url)
    password = settings.get("redis_password")
    nodes = settings.get("redis_startup_nodes")
    if nodes:
        return cluster_url(nodes, password)
    host = settings.get("redis_host")
    if not host:
        return None
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return f"redis://{auth}{host}:{settings.get('redis_port') or 6379}/0"


#: LiteLLM's environment variable naming a Redis Cluster: a JSON list of ``{"host", "port"}``.
CLUSTER_NODES_ENV = "REDIS_CLUSTER_NODES"
#: The password LiteLLM's Redis clients take from the environment (``REDIS_PASSWORD``).
PASSWORD_ENV = "REDIS_PASSWORD"  # noqa: S105 - a variable's name


def _environment_cluster_url(environ: Mapping[str, str]) -> str | None:
    """The ``redis+cluster://`` URL ``REDIS_CLUSTER_NODES`` names (None when unset or empty),
    with ``REDIS_PASSWORD``; a :class:`~tracking.errors.ConfigurationError` naming the variable
    for anything but a JSON list of ``{"host", "port"}``."""
    text = environ.get(CLUSTER_NODES_ENV)
    if not text or not text.strip():
        return None
    try:
        nodes = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigurationError(
            f'{CLUSTER_NODES_ENV}: not JSON; expected a list of {{"host": ..., "port": ...}}, '
            'as LiteLLM reads it (e.g. [{"host": "10.0.0.1", "port": 7000}])'
        ) from None
    try:
        return cluster_url(nodes, environ.get(PASSWORD_ENV) or None)
    except ConfigurationError as exc:
        raise ConfigurationError(
            exc.message.replace("redis_startup_nodes:", f"{CLUSTER_NODES_ENV}:", 1)
        ) from None


def cache_redis_url(
    cache: bool, cache_params: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The Redis LiteLLM's response cache would use, and which setting names it: with
    ``cache: true`` (and ``cache_params.type`` ``redis``, LiteLLM's default), its
    ``cache_params``' ``redis_startup_nodes`` (a cluster), else its ``host`` / ``port`` /
    ``password``; else, whatever ``cache`` says, the cluster of ``REDIS_CLUSTER_NODES``. A
    password not given beside them is ``REDIS_PASSWORD``, as LiteLLM reads it. (None, None)
    when none is named. The proxy's counters use it when ``router_settings`` names no Redis.

    LiteLLM lets ``REDIS_CLUSTER_NODES`` replace the nodes a config names (its clients read
    the variable last); here the config wins, and the start warns that the variable is not
    used (:mod:`tracking.config`)."""
    if cache and cache_params.get("type", "redis") == "redis":
        password = cache_params.get("password") or environ.get(PASSWORD_ENV) or None
        nodes = cache_params.get("redis_startup_nodes")
        if nodes:
            return cluster_url(nodes, password), "litellm_settings.cache_params"
        host = cache_params.get("host")
        if host:
            settings = {"redis_host": host, "redis_port": cache_params.get("port")}
            return settings_redis_url({**settings, "redis_password": password}), (
                "litellm_settings.cache_params"
            )
    url = _environment_cluster_url(environ)
    return url, (CLUSTER_NODES_ENV if url else None)


def _cluster_settings(url: str) -> dict[str, Any]:
    """``RedisCluster``'s arguments for a ``redis+cluster://`` URL: its startup nodes, the
    credentials and TLS."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    nodes = []
    for address in netloc.split(","):
        found = re.fullmatch(r"\[?([^\[\]]*?)\]?(?::(\d+))?", address.strip())
        if found is None or not found.group(1):
            raise ConfigurationError(f"redis_url: no cluster node in {address!r}")
        nodes.append((found.group(1), int(found.group(2) or 6379)))
    return {
        "startup_nodes": nodes,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "ssl": parts.scheme.lower() == "rediss+cluster",
    }


class _LazyCluster:
    """A blocking ``RedisCluster`` made at its first use, not at once: its constructor asks the
    nodes for the slots, and a cluster away at start is an outage like any other, met by the
    first exchange (and tried again by the next), never an error at start."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._client is None:
                import redis.cluster

                found = _cluster_settings(self._url)
                cluster: Any = redis.cluster
                nodes = [cluster.ClusterNode(host, port) for host, port in found["startup_nodes"]]
                settings = {**found, "startup_nodes": nodes, **_settings(self._timeout)}
                self._client = cluster.RedisCluster(**settings)
        return getattr(self._client, name)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()


def redis_client(url: str, timeout: float) -> Any:
    """A blocking client for ``url`` (for sync callers only, never on an event loop); a
    ``RedisCluster`` for a ``redis+cluster://`` URL (made at its first use)."""
    redis = import_redis()
    if is_cluster_url(url):
        _cluster_settings(url)  # (a URL naming no node is an error at once)
        return _LazyCluster(url, timeout)
    return redis.Redis.from_url(url, **_settings(timeout))


def async_redis_client(url: str, timeout: float) -> Any:
    """A ``redis.asyncio`` client for ``url``; it belongs to the event loop that first uses it.
    A ``redis.asyncio.cluster.RedisCluster`` for a ``redis+cluster://`` URL."""
    import_redis()
    import redis.asyncio

    if is_cluster_url(url):
        import redis.asyncio.cluster

        found = _cluster_settings(url)
        cluster = redis.asyncio.cluster
        nodes = [cluster.ClusterNode(host, port) for host, port in found["startup_nodes"]]
        settings = _settings(timeout)
        del settings["retry_on_timeout"]  # (not an argument of the asyncio cluster client)
        return cluster.RedisCluster(**{**found, "startup_nodes": nodes}, **settings)
    return redis.asyncio.Redis.from_url(url, **_settings(timeout))


class RedisOutage:
    """Whether Redis is considered down right now; the first failure of an outage is logged."""

    def __init__(self, log: logging.Logger, warning: str, retry_interval: float) -> None:
        redis = import_redis()
        #: What counts as Redis being unavailable (a cluster's client also raises
        #: ``RedisClusterException``: no node reachable, a slot not covered).
        self.errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            OSError,
            redis.exceptions.RedisClusterException,
        )
        self.retry_interval = retry_interval
        self._log = log
        self._warning = warning  # formatted with the error's type name and the interval
        self._down_until = 0.0
        #: How many failures so far: a user of Redis that saw fewer since it last checked knows
        #: Redis was away meanwhile (and may have restarted).
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def failed(self, exc: BaseException) -> None:
        """Redis just failed: use local state for ``retry_interval`` seconds."""
        with self._lock:
            first = not self.down
            self._down_until = time.monotonic() + self.retry_interval
            self.failures += 1
        if first:
            self._log.warning(self._warning, type(exc).__name__, self.retry_interval)
