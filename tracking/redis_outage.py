"""Living through a Redis outage: shared by the router's state and the proxy's counters.

Both keep their state in Redis when it answers and fall back to local state when it does not.
:class:`RedisOutage` remembers that Redis is down for ``retry_interval`` seconds (so a dead
server costs one timeout per interval, not one per call) and warns once per outage.
:func:`redis_client` and :func:`async_redis_client` make every client either of them uses, with
the same settings: ``timeout`` bounds connecting and each answer, and a timeout is never retried
by the client (it is an outage, which :class:`RedisOutage` handles).

How long Redis is left alone after an error is ``TRACKING_REDIS_RETRY_SECONDS`` (default 5 s),
for the proxy's counters and the router's state alike (:func:`retry_interval_from_environment`).
"""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import Any

from .environment_numbers import seconds_from_environment
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "RETRY_ENV",
    "RedisOutage",
    "async_redis_client",
    "import_redis",
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


def redis_client(url: str, timeout: float) -> Any:
    """A blocking client for ``url`` (for sync callers only, never on an event loop)."""
    redis = import_redis()
    return redis.Redis.from_url(url, **_settings(timeout))


def async_redis_client(url: str, timeout: float) -> Any:
    """A ``redis.asyncio`` client for ``url``; it belongs to the event loop that first uses it."""
    import_redis()
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, **_settings(timeout))


class RedisOutage:
    """Whether Redis is considered down right now; the first failure of an outage is logged."""

    def __init__(self, log: logging.Logger, warning: str, retry_interval: float) -> None:
        redis = import_redis()
        #: What counts as Redis being unavailable.
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
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
