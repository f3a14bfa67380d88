"""A real Redis Cluster of three masters on loopback, for the tests of the proxy's counters on one.

:func:`redis_cluster` starts three ``redis-server --cluster-enabled yes`` in a temporary folder,
on free ports (each with its cluster bus port, the port + 10000, free too), joins them with
``redis-cli --cluster create`` and waits, polling with a generous bound, for every node to say
``cluster_state:ok``; the module's tests share it, each under a key prefix of its own
(:func:`cluster_prefix`), and the servers are stopped after the module. Its URL is the proxy's
for a cluster: ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import require_tool

__all__ = ["cluster_client", "cluster_prefix", "redis_cluster", "redis_prefix", "redis_url"]

#: Bounds "never" on a loaded machine: the cluster's start, each node's answers.
_START_SECONDS = 120.0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 < 65536 and _bindable(port + 10000):
            return port


def _wait_ok(cli: str, ports: list[int]) -> None:
    deadline = time.monotonic() + _START_SECONDS
    for port in ports:
        while True:
            info = subprocess.run(
                [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True
            ).stdout
            if "cluster_state:ok" in info:
                break
            assert time.monotonic() < deadline, f"the cluster never got ready: {info}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster on loopback for the module: its ``redis+cluster://`` URL."""
    server = require_tool("redis-server", "redis-server")
    cli = require_tool("redis-cli", "redis-tools")
    folder = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(3):
            port = _cluster_port()
            ports.append(port)
            node = folder / str(port)
            node.mkdir()
            command = [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled"]
            command += ["yes", "--cluster-config-file", str(node / "nodes.conf"), "--dir"]
            command += [str(node), "--save", "", "--appendonly", "no", "--protected-mode", "no"]
            with (Path(node) / "server.log").open("wb") as log:  # (the server keeps its copy)
                servers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + _START_SECONDS
        for port in ports:
            while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True).returncode:
                assert time.monotonic() < deadline, f"redis-server on {port} never answered"
                time.sleep(0.1)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=_START_SECONDS,
        )
        _wait_ok(cli, ports)
        yield "redis+cluster://" + ",".join(nodes)
    finally:
        for process in servers:
            process.terminate()
        for process in servers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cluster_client(url: str) -> Any:
    """A blocking ``RedisCluster`` client for the cluster's URL (the proxy's own way)."""
    from tracking.redis_outage import redis_client

    return redis_client(url, 30.0)


@pytest.fixture
def redis_url(redis_cluster: str) -> str:
    """The cluster as ``redis_url``: a module importing it runs its tests written for the
    shared Redis server (imported from their module) on the cluster."""
    return redis_cluster


@pytest.fixture
def redis_prefix(cluster_prefix: str) -> str:
    """``cluster_prefix`` as ``redis_prefix``, beside :func:`redis_url`."""
    return cluster_prefix


@pytest.fixture
def cluster_prefix(redis_cluster: str) -> Iterator[str]:
    """A unique key prefix on the cluster; every key of it is deleted afterwards (on each
    master: a scan sees one node's keys)."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = cluster_client(redis_cluster)
    try:
        for node in client.get_primaries():
            for key in client.scan_iter(match=f"*{prefix}*", target_nodes=node):
                client.delete(key)
    finally:
        client.close()
