"""Fixtures for the machine's real services: PostgreSQL on 127.0.0.1:5432, Redis on :6379.

Each test gets its own database (created and dropped) or its own Redis key prefix; the
``module_`` variants give one to a test module whose tests share a proxy. When a
service is absent the test skips with the reason, except under CI (``CI`` set), where
``.ci/run`` makes every service required and absence is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

#: ``socket_timeout`` for the Redis state a test makes to check what it shares or counts (not
#: what an outage does): the defaults, 0.25 s for the router's state and 1 s for the proxy's
#: counters, were exceeded on a loaded 2-core CI machine, and the state then went on locally
#: (degraded), which the test read as a wrong count. A bound for a Redis that never answers.
REDIS_TIMEOUT = 30.0
#: The same bound for a proxy started by a test that checks what its Redis counters or router
#: state share (``TRACKING_REDIS_TIMEOUT_SECONDS``; not for a test of an outage).
REDIS_TIMEOUT_ENV = {"TRACKING_REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT)}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=10):
            return True
    except OSError:
        return False


def unavailable(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail under CI, which installs everything."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI requires it")
    pytest.skip(reason)


def require_service(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        unavailable(f"{name} is not reachable on {host}:{port}")


def require_tool(name: str, package: str) -> str:
    """The path of command ``name``, or :func:`unavailable` naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install {package})")
    assert path is not None
    return path


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A SQLAlchemy URL to a new, empty PostgreSQL database, dropped on leaving."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    import psycopg

    name = f"tracking_test_{uuid.uuid4().hex[:12]}"
    admin = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_key_prefix(url: str) -> Iterator[str]:
    """A unique Redis key prefix; every key under it is deleted on leaving."""
    import redis

    prefix = f"tracking-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _redis_url() -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL to a fresh, empty PostgreSQL database, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """``postgres_url`` for a whole test module (for a proxy the module's tests share): its
    tests count their own rows, never the whole ledger's."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    """The shared Redis server's URL; pair it with ``redis_prefix`` for isolation."""
    return _redis_url()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    with fresh_key_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def module_redis_url() -> str:
    """``redis_url`` for a module-scoped fixture."""
    return _redis_url()


@pytest.fixture(scope="module")
def module_redis_prefix(module_redis_url: str) -> Iterator[str]:
    """``redis_prefix`` for a whole test module (for a proxy the module's tests share)."""
    with fresh_key_prefix(module_redis_url) as prefix:
        yield prefix
