"""Ledger ingest benchmark, one command: ``.venv/bin/python benchmarks/ledger_ingest.py``.

Sustained ingest with durable acknowledgement (target: at least 20,000 events/s into SQLite
and 10,000 events/s into PostgreSQL on a 2-core machine). For each target the same pre-built
events go, in the same run, through:

* baseline: a bare driver ``executemany`` of the same rows (already converted to parameters) in
  batches of 2,000, one commit each (SQLite with the ledger's own pragmas): no event-to-row
  work, no acknowledgement, no outbox;
* durable, asyncio: ``--tasks`` tasks on one loop, each ``await ledger.aon_end(event)`` in turn
  (how the proxy and the async SDK path call it): every event's row is acknowledged before its
  task moves on;
* durable, threads: ``--threads`` threads calling ``ledger.on_end(event)`` (the sync SDK path).

Reported: events/s until the last acknowledgement, events/s until everything is in the target
(for PostgreSQL that includes shipping from the outbox), CPU time of this process per event
(the PostgreSQL server's own CPU is not included), and the ratio to the baseline. PostgreSQL is
the machine's server on 127.0.0.1:5432 (a database is created and dropped); it is skipped, with
a note, when absent.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracking.events import ImageEditEvent, TokenUsage
from tracking.integrations.sql import SqlLedger, event_to_row
from tracking.integrations.sql._codec import COLUMNS, SQLITE_INSERT, sqlite_params
from tracking.integrations.sql._engine import _sqlite_pragmas

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BATCH = 2000


def make_events(count: int) -> list[ImageEditEvent]:
    start = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
    events = []
    for i in range(count):
        cost = Decimal(1000 + i % 977).scaleb(-7)
        t = start + timedelta(milliseconds=i)
        events.append(
            ImageEditEvent(
                request_id=str(uuid.uuid4()),
                call_type="aimage_edit",
                status="success",
                end_user=f"user-{i % 50}",
                model="gpt-image-2",
                model_group="gpt-image-2",
                resolved_model="gpt-image-2",
                provider="openai",
                api_base="api.openai.com",
                n=1,
                images_returned=1,
                size="1024x1024",
                quality="medium",
                usage=TokenUsage(12, 323, 0, 1056, 1391),
                cost_usd=cost,
                cost_per_image_usd=cost,
                cost_source="usage",
                metadata={"team": "bench", "tags": ["a"]},
                tags=("a",),
                start_time=t,
                end_time=t + timedelta(seconds=2),
                latency_ms=2000.0,
                attempts=1,
            )
        )
    return events


@dataclass
class Result:
    name: str
    events: int
    ack_seconds: float
    total_seconds: float
    cpu_seconds: float

    def line(self, baseline: Result | None) -> str:
        rate = self.events / self.total_seconds
        ratio = (
            f"{rate / (baseline.events / baseline.total_seconds):5.2f}x" if baseline else "  -  "
        )
        return (
            f"  {self.name:<34} {self.events / self.ack_seconds:>9,.0f} ack/s "
            f"{rate:>9,.0f} delivered/s {self.cpu_seconds / self.events * 1e6:>7.1f} us CPU/event "
            f"{ratio} of baseline"
        )


def measure(name: str, count: int, work: Callable[[], float]) -> Result:
    """``work`` runs everything and returns the time (from its start) of the last ack."""
    cpu, wall = time.process_time(), time.perf_counter()
    acked_at = work()
    total = time.perf_counter() - wall
    return Result(name, count, acked_at or total, total, time.process_time() - cpu)


def durable_async(ledger: SqlLedger, events: list[ImageEditEvent], tasks: int) -> float:
    async def worker(chunk: list[ImageEditEvent]) -> None:
        for event in chunk:
            await ledger.aon_end(event)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(worker(events[i::tasks]) for i in range(tasks)))
        return time.perf_counter() - started

    acked = asyncio.run(main())
    assert ledger.flush(120), "the ledger did not deliver everything"
    return acked


def durable_threads(ledger: SqlLedger, events: list[ImageEditEvent], threads: int) -> float:
    def worker(chunk: list[ImageEditEvent]) -> None:
        for event in chunk:
            ledger.on_end(event)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(events[i::threads],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    acked = time.perf_counter() - started
    assert ledger.flush(120), "the ledger did not deliver everything"
    return acked


def count_rows(ledger: SqlLedger) -> int:
    import sqlalchemy as sa

    with ledger.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM spend_logs")).scalar_one())


def sqlite_baseline(path: Path, params: list[tuple[object, ...]]) -> float:
    SqlLedger(f"sqlite:///{path}").shutdown()  # the same migrated schema and indexes
    db = sqlite3.connect(path)
    _sqlite_pragmas(db, None)  # the ledger's own settings: WAL, synchronous=FULL, checkpoints
    for i in range(0, len(params), BATCH):
        db.executemany(SQLITE_INSERT, params[i : i + BATCH])
        db.commit()
    db.close()
    return 0.0


def postgres_params(events: list[ImageEditEvent]) -> list[tuple[object, ...]]:
    from psycopg.types.json import Jsonb

    json_columns = {"tags", "metadata", "fallback_from"}
    rows = []
    for event in events:
        row = event_to_row(event)
        rows.append(tuple(Jsonb(row[c]) if c in json_columns else row[c] for c in COLUMNS))
    return rows


def postgres_baseline(dbname: str, rows: list[tuple[object, ...]]) -> float:
    import psycopg

    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    statement = (
        f"INSERT INTO spend_logs ({columns}) VALUES ({', '.join('%s' for _ in COLUMNS)}) "
        "ON CONFLICT (request_id) DO NOTHING"
    )
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}") as conn:
        for i in range(0, len(rows), BATCH):
            with conn.cursor() as cursor:
                cursor.executemany(statement, rows[i : i + BATCH])
            conn.commit()
    return 0.0


RUNNERS = (
    ("durable, asyncio", durable_async, "tasks"),
    ("durable, threads", durable_threads, "threads"),
)


def run_sqlite(args: argparse.Namespace, folder: Path) -> None:
    print(
        f"SQLite (WAL, synchronous=FULL; the ledger file is its own outbox), {args.events:,} events"
    )
    params = [sqlite_params(event_to_row(e)) for e in make_events(args.events)]
    base = measure(
        "baseline: bare executemany",
        args.events,
        lambda: sqlite_baseline(folder / "baseline.db", params),
    )
    print(base.line(None))
    for label, runner, option in RUNNERS:
        width = getattr(args, option)
        events = make_events(args.events)
        ledger = SqlLedger(f"sqlite:///{folder / f'{option}.db'}", mode="durable")
        try:
            result = measure(
                f"{label} ({width} {option})",
                len(events),
                functools.partial(runner, ledger, events, width),
            )
            assert count_rows(ledger) == len(events)
        finally:
            ledger.shutdown(30)
        print(result.line(base))


def run_postgres(args: argparse.Namespace, folder: Path) -> None:
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except Exception as exc:  # benchmark: report and go on
        print(f"PostgreSQL: skipped ({type(exc).__name__}: not reachable on 127.0.0.1:5432)")
        return
    print(
        f"PostgreSQL (local SQLite outbox, shipped by one thread), {args.events:,} events; "
        "the server's CPU is not counted"
    )
    names: list[str] = []
    try:

        def fresh() -> str:
            name = f"tracking_bench_{uuid.uuid4().hex[:10]}"
            admin.execute(f'CREATE DATABASE "{name}"')
            names.append(name)
            SqlLedger(f"postgresql://postgres@127.0.0.1:5432/{name}", auto_migrate=True).shutdown()
            return name

        rows = postgres_params(make_events(args.events))
        base_db = fresh()
        base = measure(
            "baseline: bare executemany", len(rows), lambda: postgres_baseline(base_db, rows)
        )
        print(base.line(None))
        for label, runner, option in RUNNERS:
            width = getattr(args, option)
            events = make_events(args.events)
            ledger = SqlLedger(
                f"postgresql://postgres@127.0.0.1:5432/{fresh()}",
                mode="durable",
                outbox_dir=folder / f"outbox-{option}",
            )
            try:
                result = measure(
                    f"{label} ({width} {option})",
                    len(events),
                    functools.partial(runner, ledger, events, width),
                )
                assert count_rows(ledger) == len(events)
            finally:
                ledger.shutdown(30)
            print(result.line(base))
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=256, help="concurrent asyncio tasks")
    parser.add_argument("--threads", type=int, default=64, help="concurrent threads")
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    print(f"ledger ingest, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        if args.only in (None, "sqlite"):
            run_sqlite(args, folder)
        if args.only in (None, "postgres"):
            run_postgres(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
