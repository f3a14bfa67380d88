"""The SQL ledger writes each event as one row, exactly and idempotently, on both dialects."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import make_png
from tests.ledger_support import BASE_TIME, make_event, open_ledger
from tracking.integrations.sql import SqlLedger, query_spend, spend_logs


def _rows(ledger: SqlLedger) -> list[sa.Row]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(sa.select(spend_logs).order_by(spend_logs.c.start_time)))


def _random_cost(rng: random.Random) -> Decimal:
    # Ten decimal places, up to $1.99: the kind of figure token pricing produces.
    return Decimal(rng.randrange(0, 2 * 10**10)).scaleb(-10)


def test_an_event_becomes_one_row_with_every_field(ledger):
    start = datetime(2026, 3, 14, 23, 59, 59, 999999, tzinfo=UTC)
    event = make_event(
        user="user-7",
        cost=Decimal("0.0123456789"),
        start=start,
        team="red",
        key_alias="ci",
        api_key_hash="h" * 64,
        tags=("a", "b"),
        metadata={"team": "red", "tags": ["a", "b"], "price": Decimal("1.5"), "nested": {"x": 1}},
        upstream_request_id="req_up_1",
        fallback_from=("dall-e-2",),
        price_ref="gpt-image-1@2025-04-23",
    )
    ledger.on_end(event)
    assert ledger.flush(10)
    (row,) = _rows(ledger)
    assert row.request_id == event.request_id
    assert row.status == "success" and row.call_type == "image_edit"
    assert row.end_user == "user-7" and row.team == "red" and row.key_alias == "ci"
    assert row.api_key_hash == "h" * 64
    assert row.model == "gpt-image-1" and row.served_model == "gpt-image-1"
    assert row.provider == "openai" and row.api_base == "api.example.test"
    assert row.cost_usd == Decimal("0.0123456789")
    assert row.cost_per_image_usd == Decimal("0.0123456789")
    assert row.cost_source == "table" and row.price_ref == "gpt-image-1@2025-04-23"
    assert row.start_time == start and row.start_time.tzinfo is not None
    assert row.start_time.utcoffset() == timedelta(0)
    assert row.end_time == start + timedelta(seconds=2)
    assert row.tags == ["a", "b"]
    assert row.metadata == {"team": "red", "tags": ["a", "b"], "price": "1.5", "nested": {"x": 1}}
    assert row.fallback_from == ["dall-e-2"]
    assert (row.input_text_tokens, row.input_image_tokens, row.output_tokens) == (10, 323, 1056)
    assert (row.total_tokens, row.cached_input_tokens) == (1389, 0)
    assert (row.n, row.images_returned, row.attempts, row.retries) == (1, 1, 1, 0)
    assert row.http_status == 200 and row.error_type is None


def test_a_non_utc_timestamp_is_stored_as_the_same_instant(ledger):
    tokyo = datetime(2026, 3, 15, 17, 0, tzinfo=timezone(timedelta(hours=9)))
    ledger.on_end(make_event(start=tokyo))
    assert ledger.flush(10)
    (row,) = _rows(ledger)
    assert row.start_time == datetime(2026, 3, 15, 8, 0, tzinfo=UTC)


def test_exact_sums_after_thousands_of_events_from_threads(ledger):
    rng = random.Random(5)
    events = [
        make_event(
            user=f"user-{rng.randrange(25)}",
            model=rng.choice(["gpt-image-1", "gpt-image-1-mini", "dall-e-2"]),
            cost=_random_cost(rng),
            start=BASE_TIME + timedelta(minutes=rng.randrange(3 * 24 * 60)),
        )
        for _ in range(4000)
    ]
    chunks = [events[i::8] for i in range(8)]
    barrier = threading.Barrier(len(chunks))

    def produce(chunk):
        barrier.wait()
        for event in chunk:
            ledger.on_end(event)

    threads = [threading.Thread(target=produce, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.flush(30)
    assert ledger.queue_depth() == 0

    expected_total = sum((e.cost_usd for e in events), Decimal(0))
    (total,) = ledger.spend()
    assert total.requests == 4000
    assert total.cost_usd == expected_total

    by_user: dict[str, Decimal] = defaultdict(Decimal)
    by_model: dict[str, Decimal] = defaultdict(Decimal)
    by_day: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        by_user[e.end_user] += e.cost_usd
        by_model[e.model] += e.cost_usd
        by_day[e.start_time.date().isoformat()] += e.cost_usd
    assert {r.key: r.cost_usd for r in ledger.spend(by="user")} == by_user
    assert {r.key: r.cost_usd for r in ledger.spend(by="model")} == by_model
    days = ledger.spend(by="day")
    assert [r.key for r in days] == sorted(by_day)
    assert {r.key: r.cost_usd for r in days} == by_day
    costs = [r.cost_usd for r in ledger.spend(by="user")]
    assert costs == sorted(costs, reverse=True)  # most expensive first


def test_exact_sums_after_thousands_of_events_from_asyncio_tasks(ledger):
    rng = random.Random(6)
    events = [make_event(user=f"u{i % 7}", cost=_random_cost(rng)) for i in range(3000)]

    async def one(event):
        await asyncio.sleep(0)
        ledger.on_end(event)

    async def main():
        await asyncio.gather(*(one(e) for e in events))
        return await asyncio.to_thread(ledger.flush, 30)

    assert asyncio.run(main())
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        expected[e.end_user] += e.cost_usd
    assert {r.key: r.cost_usd for r in ledger.spend(by="user")} == expected
    assert ledger.spend()[0].requests == 3000


def test_the_same_events_written_twice_give_the_same_totals(ledger, ledger_url):
    rng = random.Random(7)
    events = [make_event(user=f"u{i % 3}", cost=_random_cost(rng)) for i in range(500)]
    for event in events:
        ledger.on_end(event)
    assert ledger.flush(10)
    first = ledger.spend(by="user")

    for event in events:  # replayed through the same writer, duplicates inside one batch too
        ledger.on_end(event)
        ledger.on_end(event)
    assert ledger.flush(10)
    again = open_ledger(ledger_url)  # and through another process's writer
    try:
        for event in reversed(events):
            again.on_end(event)
        assert again.flush(10)
    finally:
        again.shutdown(10)
    assert ledger.spend(by="user") == first
    assert len(_rows(ledger)) == 500


def test_unpriced_and_failed_calls_are_counted_but_cost_nothing(ledger):
    ledger.on_end(make_event(cost=Decimal("0.25")))
    ledger.on_end(make_event(cost=None))
    ledger.on_end(make_event(cost=None, status="failure"))
    assert ledger.flush(10)
    (total,) = ledger.spend()
    assert total.requests == 3 and total.failures == 1 and total.unpriced_requests == 2
    assert total.images == 2
    assert total.cost_usd == Decimal("0.25")


def test_spend_filters_by_user_and_half_open_time_range(ledger):
    day = datetime(2026, 4, 1, tzinfo=UTC)
    for offset, user, cost in [
        (timedelta(hours=-1), "a", "1"),  # the day before
        (timedelta(0), "a", "2"),  # exactly at since: included
        (timedelta(hours=23, minutes=59), "a", "3"),
        (timedelta(hours=24), "a", "4"),  # exactly at until: excluded
        (timedelta(hours=5), "b", "5"),
    ]:
        ledger.on_end(make_event(user=user, cost=Decimal(cost), start=day + offset))
    assert ledger.flush(10)
    (row,) = ledger.spend(user="a", since=date(2026, 4, 1), until=date(2026, 4, 2))
    assert row.cost_usd == Decimal(5) and row.requests == 2
    (row,) = ledger.spend(since=day + timedelta(hours=4), until=day + timedelta(hours=6))
    assert row.cost_usd == Decimal(5)
    assert [r.key for r in ledger.spend(by="day")] == ["2026-03-31", "2026-04-01", "2026-04-02"]
    assert ledger.spend(user="nobody")[0].requests == 0


def test_spend_refuses_naive_times_and_unknown_groupings(ledger):
    with pytest.raises(tracking.ValidationError, match="timezone-aware"):
        ledger.spend(since=datetime(2026, 1, 1))  # naive: refused
    with pytest.raises(tracking.ValidationError, match="model, day, user"):
        ledger.spend(by="team")


def test_queue_depth_and_write_hooks_feed_the_metrics(ledger):
    seen: list[tuple[float, int]] = []
    ledger.write_hooks.append(lambda seconds, rows: seen.append((seconds, rows)))
    for _ in range(300):
        ledger.on_end(make_event())
    assert ledger.flush(10)
    assert ledger.queue_depth() == 0
    assert sum(rows for _, rows in seen) == 300
    assert all(seconds >= 0 for seconds, _ in seen)


def test_durable_mode_returns_only_once_the_row_is_committed(ledger_url):
    ledger = open_ledger(ledger_url, mode="durable")
    try:
        event = make_event()
        ledger.on_end(event)
        assert ledger.queue_depth() == 0
        if ledger.outbox_path is None:  # SQLite: the ledger is its own outbox
            assert [r.request_id for r in _rows(ledger)] == [event.request_id]
        else:  # committed to the local outbox (tests/test_ledger_durability.py goes further)
            # The outbox first: the shipper inserts a row into the target, then deletes it from
            # the outbox, so a row gone from the outbox is in the target (the other order raced).
            in_outbox = ledger.outbox_rows()
            shipped = [r.request_id for r in _rows(ledger)]
            assert in_outbox == 1 or shipped == [event.request_id]
    finally:
        ledger.shutdown(10)


def test_a_row_the_database_refuses_does_not_block_the_others(ledger, caplog):
    from tracking.integrations.sql import event_to_row

    good = [make_event() for _ in range(5)]
    bad = event_to_row(make_event())
    bad["model"] = None  # NOT NULL: the database refuses it, every time
    ledger.writer.submit_many([event_to_row(good[0]), bad, *(event_to_row(e) for e in good[1:])])
    assert ledger.flush(10)
    assert {r.request_id for r in _rows(ledger)} == {e.request_id for e in good}
    assert ledger.quarantined_rows == 1 and ledger.rejected_rows == 0  # kept, not lost
    assert bad["request_id"] in caplog.text


def test_an_invalid_mode_or_url_is_a_clear_error(tmp_path):
    with pytest.raises(tracking.ConfigurationError, match="'background' or 'durable'"):
        SqlLedger(f"sqlite:///{tmp_path / 'x.db'}", mode="eventually")  # type: ignore[arg-type]
    with pytest.raises(tracking.ConfigurationError, match="SQLite and PostgreSQL"):
        SqlLedger("mysql://u:hunter2@db/x")
    with pytest.raises(tracking.ConfigurationError, match="not a valid") as info:
        SqlLedger("::not a url hunter2::")
    assert "hunter2" not in str(info.value)
    with pytest.raises(tracking.ConfigurationError, match="in-memory"):
        SqlLedger("sqlite://")


# -- real calls through the fake upstream ---------------------------------------------------


@pytest.fixture
def sql_by_name(monkeypatch, tmp_path):
    """``"sql"`` registered by name, with TRACKING_DATABASE_URL pointing at a fresh file."""
    from tracking import bus

    monkeypatch.setenv("TRACKING_DATABASE_URL", f"sqlite:///{tmp_path / 'by-name.db'}")
    monkeypatch.setattr(bus, "_INSTANCES", {})
    monkeypatch.setattr(tracking, "success_callback", ["sql"])
    monkeypatch.setattr(tracking, "failure_callback", ["sql"])
    yield bus
    for instance in bus._INSTANCES.values():
        instance.shutdown(10)


def test_registered_by_name_every_real_call_becomes_a_row(sql_by_name, upstream):
    ok = tracking.image_edit(
        image=make_png(), prompt="a hat", model="gpt-image-1", user="alice", **upstream
    )
    ok_async = asyncio.run(
        tracking.aimage_edit(
            image=make_png(), prompt="p", model="gpt-image-1", user="bob", **upstream
        )
    )
    with pytest.raises(tracking.AuthenticationError):
        tracking.image_edit(
            image=make_png(),
            prompt="p",
            model="gpt-image-1",
            user="eve",
            api_base=upstream["api_base"],
            api_key="sk-wrong-key-0000",
        )
    with pytest.raises(tracking.ValidationError):
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", n=99, **upstream)

    ledger = sql_by_name._INSTANCES["sql"]
    assert isinstance(ledger, SqlLedger)
    assert ledger.flush(10)
    rows = {r.request_id: r for r in _rows(ledger)}
    assert len(rows) == 4
    assert rows[ok.request_id].status == "success" and rows[ok.request_id].end_user == "alice"
    assert rows[ok.request_id].images_returned == 1
    assert rows[ok.request_id].output_tokens == ok.usage.output_tokens
    assert rows[ok_async.request_id].call_type == "aimage_edit"
    failures = sorted((r.error_type, r.http_status) for r in rows.values() if r.status == "failure")
    assert failures == [("authentication_error", 401), ("validation_error", 400)]
    assert all("sk-wrong" not in repr(tuple(r)) for r in rows.values())


def test_an_instance_records_concurrent_real_calls_in_postgres(monkeypatch, postgres_url, upstream):
    ledger = SqlLedger(postgres_url, auto_migrate=True)
    monkeypatch.setattr(tracking, "success_callback", [ledger])
    monkeypatch.setattr(tracking, "failure_callback", [ledger])
    ids: list[str] = []
    try:

        def call(i: int) -> None:
            response = tracking.image_edit(
                image=make_png(), prompt="p", model="gpt-image-1", user=f"t{i % 3}", **upstream
            )
            ids.append(response.request_id)

        async def acall(i: int) -> str:
            response = await tracking.aimage_edit(
                image=make_png(), prompt="p", model="gpt-image-1", user=f"a{i % 3}", **upstream
            )
            return response.request_id

        async def many() -> list[str]:
            return list(await asyncio.gather(*(acall(i) for i in range(20))))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        ids.extend(asyncio.run(many()))
        for thread in threads:
            thread.join()
        assert ledger.flush(10)
        assert {r.request_id for r in _rows(ledger)} == set(ids)
        assert len(ids) == 40
        by_user = {r.key: r.requests for r in query_spend(ledger.engine, by="user")}
        assert by_user == {
            f"{p}{i}": 7 if i == 0 else 7 if i == 1 else 6 for p in "ta" for i in range(3)
        }
    finally:
        ledger.shutdown(10)


def test_rows_wait_out_a_locked_sqlite_file_and_arrive_once(tmp_path):
    import sqlite3

    path = tmp_path / "locked.db"
    ledger = open_ledger(f"sqlite:///{path}")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        events = [make_event() for _ in range(200)]
        for event in events:
            ledger.on_end(event)
        assert not ledger.flush(0.3)  # nothing can be committed yet...
        assert ledger.queue_depth() == 200  # ...and nothing is dropped
        blocker.execute("ROLLBACK")
        assert ledger.flush(10)
        assert sorted(r.request_id for r in _rows(ledger)) == sorted(e.request_id for e in events)
    finally:
        blocker.close()
        ledger.shutdown(10)


def test_interpreter_exit_delivers_what_was_queued(tmp_path):
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path / 'exit.db'}"
    script = textwrap.dedent(
        f"""
        from tests.ledger_support import make_event
        from tracking.integrations.sql import SqlLedger
        ledger = SqlLedger({url!r})
        for i in range(2000):
            ledger.on_end(make_event(request_id=f"exit-{{i}}"))
        # no flush: the process just ends
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    reader = open_ledger(url)
    try:
        assert reader.spend()[0].requests == 2000
    finally:
        reader.shutdown(10)


def test_a_forked_child_writes_through_its_own_connections(ledger):
    import os
    import warnings

    ledger.on_end(make_event(request_id="parent-before-fork"))
    assert ledger.flush(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: 3.12+ warns
        pid = os.fork()
    if pid == 0:  # the child: its queue starts empty, its worker and pool are its own
        code = 1
        try:
            ledger.on_end(make_event(request_id="child"))
            code = 0 if ledger.flush(10) and ledger.queue_depth() == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.on_end(make_event(request_id="parent-after-fork"))
    assert ledger.flush(10)
    assert {r.request_id for r in _rows(ledger)} == {
        "parent-before-fork",
        "child",
        "parent-after-fork",
    }


def test_a_ledger_database_unreachable_at_first_use_lets_the_call_go_on(
    monkeypatch, fake, upstream, tmp_path
):
    """The ``"sql"`` integration opens its database (and checks the schema) at the process's
    first call: a PostgreSQL that cannot be reached then (a closed port: refused) no longer
    fails the call (until 2026-12-05 it raised ``ConfigurationError``, and a database still
    starting took the application down): the ledger opens in front of its local outbox, the
    call is sent, and its row waits there for the database. A database that answers with the
    wrong schema still fails the call (test_ledger_unreachable_at_open.py)."""
    from tests.proxy_support import free_port
    from tracking import bus

    monkeypatch.setenv("TRACKING_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path))
    monkeypatch.setattr(bus, "_INSTANCES", {})
    monkeypatch.setattr(bus, "_last_plan", None)
    monkeypatch.setattr(tracking, "success_callback", ["sql"])
    before = len(fake.requests)
    tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-2", **upstream)
    assert len(fake.requests) == before + 1
    ledger = bus._INSTANCES["sql"]
    assert isinstance(ledger, SqlLedger)
    try:
        assert ledger.writer.flush(10)
        assert ledger.outbox_rows() == 1
    finally:
        ledger.shutdown(0.5)
    assert list(tmp_path.glob("*/outbox-*.db"))  # kept for the next start
