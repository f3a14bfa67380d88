"""No acknowledged row is lost or doubled: database outages, locked files, the outbox's rules.

PostgreSQL outages are made with a TCP relay on loopback that the test controls (never by
touching the machine's shared server); SQLite locks by another process holding the file's write
lock. The SIGKILL-and-restart test lives in ``test_ledger_durability_crash.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import make_png
from tests.ledger_support import leave_outbox, make_event
from tests.loop_ticks import loop_ticks
from tests.relay import TcpRelay
from tracking.integrations.sql import SqlLedger, spend_logs


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    instance = TcpRelay(postgres_url)
    yield instance
    instance.close()


def _target_ids(url: str) -> list[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(spend_logs.c.request_id))]
    finally:
        engine.dispose()


def _outbox_ids(path: Path) -> set[str]:
    import json

    db = sqlite3.connect(path)
    try:
        return {json.loads(line)["request_id"] for (line,) in db.execute("SELECT line FROM outbox")}
    finally:
        db.close()


class Load:
    """Threads making durable ledger calls until stopped; records what was acknowledged."""

    def __init__(self, ledger: SqlLedger, threads: int = 4) -> None:
        self.ledger = ledger
        self.acked: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            event = make_event()
            started = time.monotonic()
            self.ledger.on_end(event)  # durable: returns once acknowledged
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.acked.append(event.request_id)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def _prometheus(monkeypatch):
    from prometheus_client import CollectorRegistry

    from tracking.integrations.prometheus import PrometheusLogger

    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "callbacks", [logger])
    tracking.register()
    return registry


def test_postgres_down_for_seconds_under_load_nothing_lost_nothing_doubled(
    postgres_url, relay, tmp_path, monkeypatch
):
    registry = _prometheus(monkeypatch)
    SqlLedger(postgres_url, auto_migrate=True).shutdown(10)
    replayed_before = registry.get_sample_value("tracking_ledger_replayed_total") or 0
    ledger = SqlLedger(relay.url, mode="durable", outbox_dir=tmp_path / "outbox", retry_max=0.5)
    replayed: list[int] = []
    ledger.replay_hooks.append(replayed.append)
    load = Load(ledger)
    try:
        time.sleep(0.5)
        relay.cut()
        during_outage = len(load.acked)
        highest_outbox, highest_queue = 0, 0
        # The outage lasts 5 s, and on until 200 calls were acknowledged meanwhile and their
        # rows waited in the outbox (a loaded machine made fewer in 5 s); 60 s is a bound for
        # "never", after which the assertions below say which did not happen.
        outage_started = time.monotonic()
        while (outage := time.monotonic() - outage_started) < 60 and (
            outage < 5 or len(load.acked) - during_outage <= 200 or highest_outbox <= 200
        ):
            highest_outbox = max(highest_outbox, ledger.outbox_rows())
            highest_queue = max(highest_queue, ledger.queue_depth())
            time.sleep(0.05)
        acked_in_outage = len(load.acked) - during_outage
        relay.restore()
        time.sleep(0.5)
    finally:
        load.stop()
    try:
        assert acked_in_outage > 200  # calls kept succeeding while the database was away...
        # ...without waiting for it (a generous bound, longer on a machine slow enough to have
        # made the outage longer)
        assert load.slowest < max(3, outage / 2)
        assert highest_outbox > 200  # the rows waited on disk...
        assert highest_queue < 500  # ...not in memory
        assert ledger.flush(30)
        assert ledger.outbox_rows() == 0
        ids = _target_ids(postgres_url)
        assert len(ids) == len(set(ids))  # nothing doubled
        assert set(ids) == set(load.acked)  # nothing lost
        assert sum(replayed) >= acked_in_outage
        assert ledger.replayed_rows == sum(replayed)
    finally:
        ledger.shutdown(10)
    replayed_total = registry.get_sample_value("tracking_ledger_replayed_total")
    assert replayed_total == replayed_before + sum(replayed)
    assert registry.get_sample_value("tracking_ledger_outbox_rows") == 0
    assert registry.get_sample_value("tracking_ledger_write_seconds_count") > 0
    assert not list((tmp_path / "outbox").glob("*.db"))  # drained and shut down: files removed


def test_a_locked_sqlite_target_delays_rows_but_loses_and_doubles_none(tmp_path):
    target = tmp_path / "ledger.db"
    SqlLedger(f"sqlite:///{target}").shutdown(10)
    ledger = SqlLedger(f"sqlite:///{target}", mode="durable", outbox_dir=tmp_path / "outbox")
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(target)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    load = None
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        load = Load(ledger)
        # Locked for 4 s, and on until 200 calls were acknowledged and 100 of their rows waited
        # in the outbox (a loaded machine made fewer in 4 s); 60 s is a bound for "never".
        locked_at = time.monotonic()
        while (locked := time.monotonic() - locked_at) < 60 and (
            locked < 4 or len(load.acked) <= 200 or ledger.outbox_rows() <= 100
        ):
            time.sleep(0.05)
        acked_while_locked = len(load.acked)
        outbox_while_locked = ledger.outbox_rows()
    finally:
        assert locker.stdin is not None
        locker.stdin.close()  # the other process lets go
        locker.wait(10)
        locker.stdout.close()  # type: ignore[union-attr]
        if load is not None:
            load.stop()
    try:
        assert acked_while_locked > 200 and outbox_while_locked > 100
        # a call waiting for the lock would take about as long as it was held
        assert load.slowest < max(3, locked / 2)
        assert ledger.flush(30)
        db = sqlite3.connect(target)
        ids = [r[0] for r in db.execute("SELECT request_id FROM spend_logs")]
        db.close()
        assert len(ids) == len(set(ids)) and set(ids) == set(load.acked)
    finally:
        ledger.shutdown(10)


def test_a_durable_sync_call_returns_with_its_row_in_the_outbox_while_the_db_is_down(
    postgres_url, relay, tmp_path, monkeypatch, upstream
):
    SqlLedger(postgres_url, auto_migrate=True).shutdown(10)
    ledger = SqlLedger(relay.url, mode="durable", outbox_dir=tmp_path, retry_max=0.2)
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    try:
        relay.cut()
        response = tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-1", **upstream
        )
        assert response.request_id in _outbox_ids(ledger.outbox_path)  # type: ignore[arg-type]

        async def acall() -> str:
            result = await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", **upstream
            )
            return result.request_id

        async_id = asyncio.run(acall())
        assert async_id in _outbox_ids(ledger.outbox_path)  # type: ignore[arg-type]
        assert not ledger.flush(0.5)  # not yet in the target...
        relay.restore()
        assert ledger.flush(20)  # ...until it is back
        assert set(_target_ids(postgres_url)) == {response.request_id, async_id}
    finally:
        ledger.shutdown(10)


def test_a_durable_async_call_waits_for_its_row_without_blocking_the_loop(
    tmp_path, monkeypatch, upstream
):
    path = tmp_path / "slow.db"
    ledger = SqlLedger(f"sqlite:///{path}", mode="durable")
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # the ledger's commit must wait: a slow write

        async def main() -> tuple[str, int, list[str]]:
            def unlock() -> None:
                blocker.execute("ROLLBACK")

            async with loop_ticks() as ticks:
                asyncio.get_running_loop().call_later(1.0, unlock)
                response = await tracking.aimage_edit(
                    image=make_png(), prompt="p", model="gpt-image-1", **upstream
                )
                seen = [r[0] for r in blocker.execute("SELECT request_id FROM spend_logs")]
            return response.request_id, ticks.count, seen

        request_id, ticks, seen = asyncio.run(main())
        assert ticks >= 20  # the loop kept running other tasks while the call awaited its row
        assert seen == [request_id]  # and the call returned only once the row was committed
    finally:
        blocker.close()
        ledger.shutdown(10)


def test_background_mode_returns_before_acknowledgement_and_flush_delivers(tmp_path):
    path = tmp_path / "bg.db"
    ledger = SqlLedger(f"sqlite:///{path}")  # background is the default
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        events = [make_event() for _ in range(50)]
        for event in events:
            ledger.on_end(event)  # returns at once although nothing can be committed
        assert ledger.queue_depth() == 50
        blocker.execute("ROLLBACK")
        assert ledger.flush(10)
        assert len(ledger.spend()) == 1 and ledger.spend()[0].requests == 50
    finally:
        blocker.close()
        ledger.shutdown(10)


def test_each_ledger_has_its_own_outbox_and_a_live_ones_is_never_claimed(postgres_url, tmp_path):
    first = SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path)
    second = SqlLedger(postgres_url, outbox_dir=tmp_path)
    try:
        assert first.outbox_path != second.outbox_path
        assert first.outbox_path is not None and second.outbox_path is not None
        assert first.outbox_path.parent == second.outbox_path.parent == tmp_path
        first.on_end(make_event(request_id="one"))
        second.on_end(make_event(request_id="two"))
        assert first.flush(10) and second.flush(10)
        assert sorted(_target_ids(postgres_url)) == ["one", "two"]
    finally:
        first.shutdown(10)
        second.shutdown(10)
    assert list(tmp_path.iterdir()) == []  # both drained: their files are gone


def test_rows_left_in_an_outbox_by_a_previous_run_are_shipped_at_start(postgres_url, tmp_path):
    from tracking.integrations.sql._codec import encode_row
    from tracking.integrations.sql._schema import event_to_row

    SqlLedger(postgres_url, auto_migrate=True).shutdown(10)
    events = [make_event() for _ in range(30)]
    # A process that acknowledged rows and died before shipping them: its outbox, unlocked.
    lines = [encode_row(event_to_row(e)) for e in events]
    lines.append(lines[0])  # shipped twice: must count once
    stale_path = leave_outbox(tmp_path, lines)
    # Under another pid's name: the new ledger's own outbox would take this pid's.
    stale_path.rename(tmp_path / "outbox-999999999.db")
    stale_path.with_suffix(".lock").rename(tmp_path / "outbox-999999999.lock")

    ledger = SqlLedger(postgres_url, outbox_dir=tmp_path)
    try:
        assert ledger.flush(20)
        ids = _target_ids(postgres_url)
        assert sorted(ids) == sorted(e.request_id for e in events)
        assert ledger.replayed_rows == 31
        assert not (tmp_path / "outbox-999999999.db").exists()
    finally:
        ledger.shutdown(10)


def test_a_row_the_target_refuses_is_quarantined_in_the_target(postgres_url, tmp_path, caplog):
    from tracking.integrations.sql import event_to_row
    from tracking.integrations.sql._quarantine import list_quarantine

    ledger = SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path)
    try:
        bad = event_to_row(make_event(request_id="refused-row"))
        bad["model"] = None  # NOT NULL in the target
        good = make_event()
        ledger.writer.submit_many([bad, event_to_row(good)])
        assert ledger.flush(10)
        assert _target_ids(postgres_url) == [good.request_id]
        assert ledger.quarantined_rows == 1 and ledger.rejected_rows == 0
        assert "refused-row" in caplog.text
        (kept,) = list_quarantine(ledger.engine)
        assert kept.request_id == "refused-row" and "[23502]" in kept.error  # not_null_violation
        path = ledger.outbox_path
    finally:
        ledger.shutdown(10)
    assert path is not None and not path.exists()  # nothing is left behind in the outbox


def _varied_events():
    from datetime import UTC, datetime, timedelta, timezone
    from decimal import Decimal

    return [
        make_event(),
        make_event(start=datetime(2026, 1, 1, tzinfo=UTC), cost=None),  # no microseconds
        make_event(
            start=datetime(2026, 3, 15, 17, 0, 0, 5, tzinfo=timezone(timedelta(hours=9))),
            cost=Decimal("0.0123456789"),
            metadata={"price": Decimal("1.5"), "nested": {"x": [1, "ü"]}},
            tags=("a", 'quote"d'),
            fallback_from=("dall-e-2",),
        ),
        make_event(status="failure", cost=Decimal("2"), usage=None, end_user=None),
    ]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_the_fast_insert_path_stores_exactly_what_sqlalchemy_would(dialect, request, tmp_path):
    """Rows written through the raw-driver path equal rows inserted by SQLAlchemy Core."""
    from tracking.integrations.sql import event_to_row

    if dialect == "sqlite":
        urls = [f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'core.db'}"]
    else:
        first = request.getfixturevalue("postgres_url")
        urls = [first, first]
    events = _varied_events()
    fast = SqlLedger(urls[0], auto_migrate=True, outbox_dir=tmp_path / "outbox")
    core = SqlLedger(urls[1], auto_migrate=True, outbox_dir=tmp_path / "outbox")
    try:
        for event in events:
            fast.on_end(event)
        assert fast.flush(10)
        table = spend_logs
        if dialect == "postgres":  # same database: a twin table for the Core inserts
            table = spend_logs.to_metadata(sa.MetaData(), name="spend_logs_core")
            table.indexes.clear()  # index names are per schema: the twin needs none
            table.create(core.engine)
        with core.engine.begin() as conn:
            conn.execute(table.insert(), [event_to_row(e) for e in events])
        with fast.engine.connect() as conn:
            if dialect == "sqlite":  # compare storage classes too: REAL, TEXT, INTEGER, NULL
                select = "SELECT *, typeof(cost_usd), typeof(start_time), typeof(tags) FROM "
                got = conn.exec_driver_sql(select + "spend_logs ORDER BY request_id").all()
                with core.engine.connect() as other:
                    want = other.exec_driver_sql(select + "spend_logs ORDER BY request_id").all()
            else:
                got = conn.execute(sa.select(spend_logs).order_by("request_id")).all()
                want = conn.execute(sa.select(table).order_by("request_id")).all()
        assert got == want and len(got) == len(events)
    finally:
        fast.shutdown(10)
        core.shutdown(10)


def test_outbox_lines_round_trip_every_value():
    from tracking.integrations.sql import event_to_row
    from tracking.integrations.sql._codec import decode_row, encode_row, encode_values
    from tracking.integrations.sql._schema import event_values

    for event in _varied_events():
        row = event_to_row(event)
        assert decode_row(encode_row(row)) == row
        assert encode_values(event_values(event)) == encode_row(row)


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_a_row_that_cannot_be_encoded_is_quarantined_as_text_not_dropped(
    request, tmp_path, monkeypatch, caplog, target
):
    """A hand-made event with a naive timestamp or a non-finite amount cannot be encoded. It
    was logged, counted in ``rejected_rows`` and dropped; now its text goes to the quarantine
    with why (the list command shows it), and the rows behind it are written."""
    from datetime import datetime
    from decimal import Decimal

    from tracking.integrations.sql._codec import line_request_id
    from tracking.integrations.sql._engine import outbox_target
    from tracking.integrations.sql._outbox import default_outbox_dir, read_rejected
    from tracking.integrations.sql._quarantine import list_quarantine

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = (
        request.getfixturevalue("postgres_url")
        if target == "postgres"
        else f"sqlite:///{tmp_path / 'naive.db'}"
    )
    ledger = SqlLedger(url, auto_migrate=True, mode="durable")
    try:
        ledger.on_end(make_event(request_id="naive-one", start=datetime(2026, 1, 1)))
        ledger.on_end(make_event(request_id="nan-cost", cost=Decimal("NaN")))
        ledger.on_end(make_event(request_id="fine"))
        assert ledger.flush(10)
        (spent,) = ledger.spend()
        if target == "sqlite":  # the file's own quarantine table, which reports count, marked
            assert (spent.requests, spent.quarantined_requests, spent.unpriced_requests) == (
                3,
                2,
                1,
            )
        else:  # kept locally: in no report
            assert spent.requests == 1
        if target == "sqlite":
            assert ledger.quarantined_rows == 2 and ledger.rejected_rows == 0
            kept = {row.request_id: (row.line, row.error) for row in list_quarantine(ledger.engine)}
        else:  # its outbox's rejected table: the values would not go into PostgreSQL
            assert ledger.rejected_rows == 2 and ledger.quarantined_rows == 0
    finally:
        ledger.shutdown(10)
    if target == "postgres":
        rejected = read_rejected(default_outbox_dir(outbox_target(ledger.engine.url)))
        kept = {line_request_id(row.line): (row.line, row.reason) for row in rejected}
    assert set(kept) == {"naive-one", "nan-cost"}
    assert "timezone-aware" in kept["naive-one"][1]
    assert "finite" in kept["nan-cost"][1]
    assert "2026-01-01 00:00:00" in kept["naive-one"][0]  # the values, as text
    assert "naive-one" in caplog.text


def test_a_missing_table_keeps_rows_in_the_outbox_until_it_is_back(postgres_url, tmp_path):
    ledger = SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path, retry_max=0.2)
    try:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE spend_logs RENAME TO spend_logs_away")
        event = make_event()
        ledger.on_end(event)
        assert not ledger.flush(1)  # not a refused row: kept and retried, never rejected
        assert ledger.outbox_rows() == 1 and ledger.rejected_rows == 0
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE spend_logs_away RENAME TO spend_logs")
        assert ledger.flush(10)
        assert _target_ids(postgres_url) == [event.request_id]
    finally:
        ledger.shutdown(10)


def test_exit_with_the_database_down_is_quick_and_the_next_start_delivers(
    postgres_url, relay, tmp_path
):
    SqlLedger(postgres_url, auto_migrate=True).shutdown(10)
    script = (
        "import sys, tracking\n"
        "from tests.ledger_support import make_event\n"
        "from tracking.integrations.sql import SqlLedger\n"
        "ledger = SqlLedger(sys.argv[1], outbox_dir=sys.argv[2])\n"
        "tracking.callbacks = [ledger]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()  # the database goes away now\n"
        "for i in range(100):\n"
        "    ledger.on_end(make_event(request_id=f'at-exit-{i}'))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, relay.url, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    relay.cut()
    started = time.monotonic()
    _, stderr = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, stderr
    assert time.monotonic() - started < 20  # ships for at most 5 s, then leaves it on disk
    assert "wait in" in stderr  # and says where the rows wait
    ledger = SqlLedger(postgres_url, outbox_dir=tmp_path)  # the next start
    try:
        assert ledger.flush(20)
        assert sorted(_target_ids(postgres_url)) == sorted(f"at-exit-{i}" for i in range(100))
    finally:
        ledger.shutdown(10)
