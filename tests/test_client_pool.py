"""Pooled HTTP clients: shared across calls, per event loop, rebuilt after a fork."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading

import tracking
from tests.conftest import API_KEY, make_png
from tracking.http import POOL

PNG = make_png(16, 16)


def test_200_concurrent_async_calls_share_one_client_and_reuse_connections(fake, upstream):
    async def batch():
        calls = [
            tracking.aimage_edit(image=PNG, prompt=f"p{i}", model="gpt-image-1", **upstream)
            for i in range(200)
        ]
        return await asyncio.gather(*calls)

    async def main():
        before = len(fake.requests)
        first = await batch()
        second = await batch()
        loop_clients = POOL._async[asyncio.get_running_loop()].clients
        return before, first, second, dict(loop_clients)

    before, first, second, clients = asyncio.run(main())
    assert len(first) == len(second) == 200
    assert len({r.request_id for r in first + second}) == 400
    assert len(clients) == 1  # one client for this loop and upstream, not one per call
    peers = {r.peer for r in fake.requests[before:]}
    assert len(fake.requests) - before == 400
    # 400 requests over at most 200 connections: the second batch reused the first's.
    assert len(peers) <= 200


def test_two_asyncio_runs_in_a_row(upstream):
    async def one():
        return await tracking.aimage_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)

    first = asyncio.run(one())
    second = asyncio.run(one())  # a client bound to the first (closed) loop must not be reused
    assert first.images_returned == second.images_returned == 1


def test_sync_calls_from_threads_share_one_client(fake, upstream):
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(5):
                tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    before = set(POOL._sync)  # other tests' upstreams may be pooled already
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(POOL._sync) - before <= {fake.base_url}
    assert fake.base_url in POOL._sync


def test_pool_is_rebuilt_after_fork(fake):
    script = textwrap.dedent(
        f"""
        import os, sys
        import tracking
        from tracking.http import POOL
        from tests.conftest import make_png
        kwargs = dict(image=make_png(8, 8), prompt="p", model="gpt-image-1",
                      api_base={fake.url!r}, api_key={API_KEY!r})
        tracking.image_edit(**kwargs)
        parent_client = POOL.sync_client({fake.base_url!r})
        pid = os.fork()
        if pid == 0:
            ok = not POOL._sync
            tracking.image_edit(**kwargs)
            ok = ok and POOL.sync_client({fake.base_url!r}) is not parent_client
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        tracking.image_edit(**kwargs)  # the parent's pool still works
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
