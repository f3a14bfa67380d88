"""The call path's promises: exactly one event per call, even a cancelled one; unique ids."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tracking.testing import FakeOpenAI, recording

PNG = make_png(16, 16)


@pytest.fixture
def throttled() -> Iterator[FakeOpenAI]:
    """A fake of this test's own that answers every request 429 with a long Retry-After."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["status=429;retry_after=30;always"]) as server:
        yield server


def test_a_call_cancelled_in_its_backoff_yields_exactly_one_failure_event(throttled):
    """The first attempt gets a 429 and the call sleeps 30 s before retrying; cancelling it
    there still delivers one failure event (and only one) before the cancellation propagates."""

    async def scenario() -> None:
        call = asyncio.create_task(
            tracking.aimage_edit(
                image=PNG, prompt="p", model="gpt-image-1", api_base=throttled.url, api_key=API_KEY
            )
        )
        while throttled.hits < 1:  # the first attempt was answered: the call is in its backoff
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    with recording() as recorder:
        asyncio.run(scenario())
    assert throttled.hits == 1
    assert [(e.status, e.error_type, e.attempts) for e in recorder.events] == [
        ("failure", "cancelled", 1)
    ]


def test_calls_after_random_seed_in_two_threads_get_distinct_ids_and_one_row_each(
    upstream, tmp_path
):
    """An application that seeds the global generator before every call (two threads, 500
    calls each) still gets 1,000 distinct request ids, and the ledger keeps 1,000 rows."""
    import sqlalchemy as sa

    from integrations.sql import SqlLedger, spend_logs

    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", auto_migrate=True)
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def caller() -> None:
        start.wait()
        for _ in range(500):
            random.seed(1)
            response = tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)
            with lock:
                ids.append(response.request_id)

    tracking.callbacks.append(ledger)
    try:
        threads = [threading.Thread(target=caller) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        tracking.callbacks.remove(ledger)
        assert ledger.flush(30)
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(spend_logs)).scalar_one()
    ledger.shutdown(10)
    assert len(ids) == len(set(ids)) == 1000
    assert rows == 1000
