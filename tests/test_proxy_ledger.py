"""The proxy's ledger wait (tracking/proxy/ledger.py) on a real SQLite ledger: each request's
await returns only once its own row is committed, concurrent requests share commits without
blocking the event loop, and ``background`` mode does not wait."""

from __future__ import annotations

import asyncio
import sqlite3

from tests.ledger_support import make_event, open_ledger
from tracking.proxy.ledger import ProxyLedger


def _committed(path, request_id: str) -> bool:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT 1 FROM spend_logs WHERE request_id = ?", (request_id,))
        return found.fetchone() is not None


async def test_each_request_waits_for_its_own_row_and_the_loop_stays_free(tmp_path):
    path = tmp_path / "ledger.db"
    proxy_ledger = ProxyLedger(open_ledger(f"sqlite:///{path}", mode="background"))
    ticks = 0

    async def heartbeat() -> None:  # runs only while the loop is free
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def serve_one() -> tuple[str, bool]:
        proxy_ledger.begin()
        event = make_event()
        proxy_ledger.on_end(event)  # what the bus does at the end of the call
        await proxy_ledger.acknowledged()
        return event.request_id, _committed(path, event.request_id)

    beating = asyncio.create_task(heartbeat())
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(asyncio.create_task(serve_one()) for _ in range(200))), 30
        )
    finally:
        beating.cancel()
        proxy_ledger.shutdown(10)
    assert len({request_id for request_id, _ in answers}) == 200
    assert all(committed for _, committed in answers)
    assert ticks > 0  # the loop ran other work while the rows were being committed
    assert proxy_ledger.ledger.writer.queue_depth() == 0


async def test_a_request_without_a_row_and_background_mode_do_not_wait(tmp_path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="background")
    commits: list[int] = []
    ledger.write_hooks.append(lambda seconds, rows: commits.append(rows))
    durable = ProxyLedger(ledger)
    durable.begin()
    await asyncio.wait_for(durable.acknowledged(), 5)  # no call ended: nothing to wait for

    async def burst(count: int) -> None:
        async def one() -> None:
            durable.begin()
            durable.on_end(make_event())
            await durable.acknowledged()

        await asyncio.gather(*(asyncio.create_task(one()) for _ in range(count)))

    await asyncio.wait_for(burst(100), 30)
    assert sum(commits) == 100
    assert len(commits) < 100  # group commits: requests in flight together share one

    background = ProxyLedger(ledger, durable=False)
    background.begin()
    background.on_end(make_event())
    await asyncio.wait_for(background.acknowledged(), 5)
    durable.shutdown(10)
    assert sum(commits) == 101
