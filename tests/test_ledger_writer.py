"""The ledger writer's group commit under concurrency: every caller acknowledged, every row once.

Sync callers wait on locks of their own and are woken in a chain (each woken thread wakes the
next; the worker waits for the last before its next batch). These tests make many threads, some
with timeouts, wait at once, through a real SQLite ledger and through a destination that fails
or stalls on the test's command; none asserts a duration.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.ledger_support import make_event
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.integrations.sql._codec import event_sqlite_params, sqlite_values
from tracking.integrations.sql._schema import event_values
from tracking.integrations.sql._writer import LedgerWriter


class FlakyFile:
    """A BatchDestination writing ``(request_id)`` rows to an SQLite file (a primary key, so a
    row written twice would fail). ``fail_next`` transient failures come first; while ``gate``
    is clear, writes wait for it."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE rows (request_id TEXT PRIMARY KEY)")
        self.fail_next = 0
        self.failures = 0
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def prepare(self, row: dict[str, Any]) -> str:
        return str(row["request_id"])

    def write(self, items: Sequence[str]) -> None:
        self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            self.failures += 1
            raise sqlite3.OperationalError("database is locked (injected)")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO rows VALUES (?)", [(i,) for i in items])
        self.db.execute("COMMIT")
        self.batches.append(len(items))

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def request_id(self, item: str) -> str:
        return item

    def ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT request_id FROM rows")]


def _run_threads(count: int, target: Any) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a waiting thread never returned"


def test_many_threads_on_a_durable_sqlite_ledger_all_return_with_every_row_once(tmp_path):
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'l.db'}", auto_migrate=True, mode="durable")
    per_thread, threads = 150, 48
    ids = [[f"t{t}-{i}" for i in range(per_thread)] for t in range(threads)]

    def work(t: int) -> None:
        for request_id in ids[t]:
            ledger.on_end(make_event(request_id=request_id))

    try:
        _run_threads(threads, work)
        with ledger.engine.connect() as conn:
            stored = [r[0] for r in conn.execute(sa.select(spend_logs.c.request_id))]
        assert sorted(stored) == sorted(i for chunk in ids for i in chunk)
        assert ledger.queue_depth() == 0
    finally:
        ledger.shutdown(10)


def test_each_durable_call_finds_its_own_row_committed_when_it_returns(tmp_path):
    path = tmp_path / "l.db"
    ledger = SqlLedger(f"sqlite:///{path}", auto_migrate=True, mode="durable")
    not_there: list[str] = []

    def work(t: int) -> None:
        reader = sqlite3.connect(path)
        try:
            for i in range(40):
                request_id = f"t{t}-{i}"
                ledger.on_end(make_event(request_id=request_id))
                found = reader.execute(
                    "SELECT count(*) FROM spend_logs WHERE request_id = ?", (request_id,)
                ).fetchone()[0]
                if found != 1:
                    not_there.append(request_id)
        finally:
            reader.close()

    try:
        _run_threads(24, work)
        assert not_there == []
    finally:
        ledger.shutdown(10)


def test_a_failing_commit_is_retried_with_its_rows_and_every_waiter_is_woken(tmp_path):
    destination = FlakyFile(tmp_path / "rows.db")
    writer = LedgerWriter(destination, retry_initial=0.001, retry_max=0.01)
    destination.fail_next = 5
    results: list[bool] = []

    def work(t: int) -> None:
        for i in range(60):
            results.append(writer.wait(writer.submit({"request_id": f"t{t}-{i}"})))
            if i == 30 and t == 0:
                destination.fail_next = 3  # fail again in mid-stream

    try:
        _run_threads(32, work)
        assert writer.flush(10)
        assert destination.failures == 8
        assert results == [True] * (32 * 60)
        assert sorted(destination.ids()) == sorted(
            f"t{t}-{i}" for t in range(32) for i in range(60)
        )
        assert sum(destination.batches) == 32 * 60  # each row committed exactly once
    finally:
        writer.close(10)


def test_waiters_that_time_out_amid_the_others_break_no_chain(tmp_path):
    destination = FlakyFile(tmp_path / "rows.db")
    writer = LedgerWriter(destination)
    rng = random.Random(3)
    timeouts = [
        [rng.choice([None, None, 0.0, 0.0005, 0.002]) for _ in range(80)] for _ in range(40)
    ]
    outcomes: list[tuple[float | None, bool]] = []
    stall = threading.Thread(target=_stall_now_and_then, args=(destination, writer))

    def work(t: int) -> None:
        for i, timeout in enumerate(timeouts[t]):
            seq = writer.submit({"request_id": f"t{t}-{i}"})
            done = writer.wait(seq, timeout)
            outcomes.append((timeout, done))

    try:
        stall.start()
        _run_threads(40, work)
        stall.join(30)
        destination.gate.set()
        assert writer.flush(10)
        # every wait without a timeout succeeded; a timed-out one said so (or was acknowledged)
        assert all(done for timeout, done in outcomes if timeout is None)
        assert any(not done for _, done in outcomes)  # the stalls made some time out
        assert len(outcomes) == 40 * 80
        assert len(destination.ids()) == 40 * 80 == len(set(destination.ids()))
    finally:
        destination.gate.set()
        writer.close(10)


def _stall_now_and_then(destination: FlakyFile, writer: LedgerWriter) -> None:
    # Hold the destination shut for a moment a few times while the threads keep waiting.
    for _ in range(5):
        destination.gate.clear()
        threading.Event().wait(0.02)
        destination.gate.set()
        threading.Event().wait(0.02)


def test_threads_and_asyncio_tasks_waiting_on_one_writer_all_get_their_rows(tmp_path):
    destination = FlakyFile(tmp_path / "rows.db")
    writer = LedgerWriter(destination)

    async def tasks() -> None:
        async def one(k: int) -> None:
            for i in range(50):
                await writer.wait_async(writer.submit({"request_id": f"a{k}-{i}"}))

        await asyncio.gather(*(one(k) for k in range(50)))

    results: list[bool] = []

    def work(t: int) -> None:
        if t == 0:
            asyncio.run(tasks())
            return
        for i in range(100):
            results.append(writer.wait(writer.submit({"request_id": f"t{t}-{i}"})))

    try:
        _run_threads(17, work)
        assert writer.queue_depth() == 0 and results == [True] * 1600
        expected = {f"a{k}-{i}" for k in range(50) for i in range(50)}
        expected |= {f"t{t}-{i}" for t in range(1, 17) for i in range(100)}
        assert sorted(destination.ids()) == sorted(expected)
    finally:
        writer.close(10)


@pytest.mark.parametrize("index", range(4))
def test_the_sqlite_hot_path_makes_the_parameters_of_the_general_one(index):
    from tests.test_ledger_durability import _varied_events

    event = _varied_events()[index]
    assert event_sqlite_params(event) == sqlite_values(event_values(event))


def test_the_sqlite_hot_path_refuses_a_naive_timestamp():
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone-aware"):
        event_sqlite_params(make_event(start=datetime(2026, 1, 1)))


def test_the_prebuilt_json_encoders_write_the_text_json_writes():
    import json
    from datetime import UTC, datetime
    from decimal import Decimal

    from tracking.integrations.sql._codec import _ENCODER, _JSON_TEXT, one_shot

    values = [
        {"team": "red", "tags": ["a", 'quote"d', "ü€"], "n": 1, "f": 0.1, "none": None},
        ("a", "b"),
        [],
        "plain",
        {"price": Decimal("1.50"), "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)},
        {"nested": {"x": [1, 2.5, True, False, {"y": []}]}},
    ]
    for encoder in (_ENCODER, _JSON_TEXT):
        fast = one_shot(encoder)
        for value in values:
            assert fast(value) == encoder.encode(value)
    with pytest.raises(ValueError, match="not JSON compliant"):
        one_shot(_ENCODER)({"x": float("nan")})  # money and lines never carry NaN
    assert one_shot(json.JSONEncoder(indent=2))({"a": 1}) == '{\n  "a": 1\n}'


@pytest.mark.parametrize("rows", [2, 17, 48, 49, 120])
def test_batches_in_one_statement_or_row_by_row_store_the_same_rows(tmp_path, rows):
    """Small batches go in one INSERT, bigger ones through executemany (or, in background mode,
    statements of 48 rows): the same rows every way, and a request id twice in one batch is
    stored once."""
    from tracking.integrations.sql._target import ONE_STATEMENT_ROWS, SpendLogsInserter

    events = [make_event(user=f"user-{i}", cost=Decimal(i) / 1000) for i in range(rows)]
    events.append(events[0])  # replayed within its own batch
    stored = {}
    for name, limit, callers_run_on in (
        ("one statement", ONE_STATEMENT_ROWS, False),
        ("row by row", 0, False),
        ("statements of 48 rows", ONE_STATEMENT_ROWS, True),  # background mode
    ):
        ledger = SqlLedger(url=f"sqlite:///{tmp_path / name}.db", mode="durable")
        inserter = SpendLogsInserter(ledger.engine, callers_run_on=callers_run_on)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("tracking.integrations.sql._target.ONE_STATEMENT_ROWS", limit)
            inserter.insert_prepared([event_sqlite_params(e) for e in events])
        with ledger.engine.connect() as connection:
            stored[name] = connection.execute(
                sa.select(spend_logs).order_by(spend_logs.c.request_id)
            ).all()
        ledger.shutdown()
    assert len(stored["one statement"]) == rows
    assert stored["one statement"] == stored["row by row"] == stored["statements of 48 rows"]


def test_a_background_ledger_gathers_rows_and_flush_commits_them_at_once(tmp_path):
    """Background mode lingers (an hour here) so a stream of rows becomes one commit; flush cuts
    the wait short, and every row is in the ledger when it returns."""
    ledger = SqlLedger(url=f"sqlite:///{tmp_path / 'bg.db'}", mode="background", linger=3600.0)
    commits: list[int] = []
    ledger.write_hooks.append(lambda seconds, rows: commits.append(rows))
    events = [make_event() for _ in range(30)]
    for event in events:
        ledger.on_end(event)
    assert ledger.flush(30)
    assert commits == [30]
    with ledger.engine.connect() as connection:
        stored = connection.execute(sa.select(spend_logs.c.request_id)).scalars().all()
    assert sorted(stored) == sorted(e.request_id for e in events)
    ledger.on_end(make_event())  # lingering again: shutdown delivers it too
    ledger.shutdown(30)
    assert commits == [30, 1]


def test_a_durable_ledger_never_lingers(tmp_path):
    ledger = SqlLedger(url=f"sqlite:///{tmp_path / 'd.db'}", mode="durable")
    assert ledger.writer.linger == 0
    assert not ledger.writer.destination.inserter.callers_run_on  # type: ignore[attr-defined]
    background = SqlLedger(url=f"sqlite:///{tmp_path / 'b.db'}", mode="background")
    assert background.writer.linger > 0
    assert background.writer.destination.inserter.callers_run_on  # type: ignore[attr-defined]
    background.shutdown()
    ledger.on_end(make_event())  # returns with its row committed
    assert ledger.queue_depth() == 0
    ledger.shutdown()
