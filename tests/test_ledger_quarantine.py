"""A ledger no single row can stop (issue 18, findings 1, 4 and 11).

A row the database refuses for good (a NUL in text and an end-user id over the B-tree index
limit on PostgreSQL, a token count out of the column's range on both) moves to
``ledger_quarantine`` with the database's error, counted; the rows behind it go through at
once; ``tracking ledger quarantine list|replay`` shows and restores it. A target that refuses
every row for a transient reason keeps them and is reported stuck, and shutdown still keeps its
timeout. The ledger's queue-depth gauge reads 0 once idle.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.ledger_support import (  # noqa: F401
    hostile_user,
    ids_in,
    ledger_url,
    make_event,
    open_ledger,
    quarantine_event,
    refused_rows,
)
from tracking.cli import main
from tracking.events import TokenUsage
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.integrations.sql._quarantine import list_quarantine
from tracking.integrations.sql._schema import quarantine
from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess
from .test_reliability_faults import proxy_config


def test_refused_rows_are_quarantined_and_the_rows_behind_them_go_through(ledger_url):  # noqa: F811
    ledger = open_ledger(ledger_url, mode="durable")
    quarantined: list[int] = []
    ledger.quarantine_hooks.append(quarantined.append)
    dialect = ledger.engine.dialect.name
    refused = refused_rows(dialect)
    try:
        for name, fields in refused:
            ledger.on_end(make_event(request_id=f"bad-{name}", **fields))  # type: ignore[arg-type]
        good = [f"good-{i}" for i in range(5)]
        for request_id in good:
            ledger.on_end(make_event(request_id=request_id))
        assert ledger.flush(10), "the rows behind the refused ones did not reach the database"
        assert set(good) <= ids_in(ledger.engine)
        kept = list_quarantine(ledger.engine)
        assert sorted(r.request_id or "" for r in kept) == sorted(f"bad-{n}" for n, _ in refused)
        assert all(r.error for r in kept)
        assert sum(quarantined) == ledger.quarantined_rows == len(refused)
        if dialect == "postgresql":
            errors = {r.request_id: r.error for r in kept}
            assert "[54000]" in errors["bad-long"]  # program_limit_exceeded: the index entry
            assert "[22003]" in errors["bad-tokens"]
        assert ledger.outbox_rows() == 0 and ledger.stuck_for() == 0.0
    finally:
        ledger.shutdown(10)


def test_quarantine_list_and_replay_with_repair(ledger_url, capsys):  # noqa: F811
    ledger = open_ledger(ledger_url, mode="durable")
    try:
        ledger.on_end(
            make_event(
                request_id="bad-1",
                user="carol\x00" + hostile_user(),
                usage=TokenUsage(10, 323, 0, 2**70, 2**70),
                cost=Decimal("0.1670000000"),
            )
        )
        assert ledger.flush(10)
        (kept,) = list_quarantine(ledger.engine)
        assert kept.request_id == "bad-1"
    finally:
        ledger.shutdown(10)

    assert main(["ledger", "quarantine", "list", "--database-url", ledger_url]) == 0
    out = capsys.readouterr().out
    assert "bad-1" in out and "1 rows in quarantine" in out
    assert (
        main(["ledger", "quarantine", "list", "--format", "json", "--database-url", ledger_url])
        == 0
    )
    (listed,) = json.loads(capsys.readouterr().out)
    assert Decimal(listed["row"]["cost_usd"]) == Decimal("0.167") and listed["error"]

    # As it is, the database refuses it again: it stays, with the new error.
    assert main(["ledger", "quarantine", "replay", "--database-url", ledger_url]) == 1
    assert "refused again" in capsys.readouterr().out
    # An id the quarantine does not hold (a typo) is said, and fails: it exited 0, "replayed 0".
    typo = ["ledger", "quarantine", "replay", "--id", str(kept.id + 99), "--database-url"]
    assert main([*typo, ledger_url]) == 1
    assert f"no quarantined row has id {kept.id + 99}" in capsys.readouterr().out

    assert main(["ledger", "quarantine", "replay", "--repair", "--database-url", ledger_url]) == 0
    assert "replayed 1 rows" in capsys.readouterr().out
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(spend_logs).where(spend_logs.c.request_id == "bad-1")
            ).one()
            left = conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar()
    finally:
        engine.dispose()
    assert Decimal(str(row.cost_usd)).quantize(Decimal("1e-10")) == Decimal("0.1670000000")
    assert row.end_user.startswith("carol") and "\x00" not in row.end_user
    assert len(row.end_user) <= 512 and row.output_tokens is None
    metadata = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
    assert metadata["tracking_repaired_from_quarantine"] is True
    assert left == 0


def test_a_target_refusing_everything_is_reported_stuck_and_shutdown_keeps_its_timeout(
    postgres_url, tmp_path
):
    ledger = SqlLedger(postgres_url, auto_migrate=True, mode="durable", outbox_dir=tmp_path)
    try:
        with ledger.engine.begin() as conn:  # 42P01 undefined table: transient, rows wait
            conn.execute(sa.text("ALTER TABLE spend_logs RENAME TO spend_logs_away"))
        ledger.on_end(make_event(request_id="waits-1"))
        deadline = time.monotonic() + 60
        while ledger.stuck_for() < 0.5:
            assert time.monotonic() < deadline, "the shipper never reported being stuck"
            time.sleep(0.1)
        assert ledger.outbox_rows() == 1 and ledger.quarantined_rows == 0
        started = time.monotonic()
        ledger.shutdown(2)
        assert time.monotonic() - started < 4
    finally:
        ledger.shutdown(1)
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE spend_logs_away RENAME TO spend_logs"))
    ledger.engine.dispose()
    # The row waited in the outbox; the next ledger for the target ships it.
    again = SqlLedger(postgres_url, mode="durable", outbox_dir=tmp_path)
    try:
        assert again.flush(10)
        assert "waits-1" in ids_in(again.engine)
    finally:
        again.shutdown(5)


def _metric(proxy: ProxyProcess, name: str) -> float:
    for line in httpx.get(f"{proxy.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def _edit(proxy: ProxyProcess, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        data={"model": "gpt-image-1", "prompt": "a hat", "quality": "low", **fields},
        files={"image": ("a.png", make_png(16, 16), "image/png")},
        timeout=30,
    )


def test_proxy_on_postgres_a_hostile_user_cannot_stop_the_ledger(
    tmp_path: Path, monkeypatch, postgres_url
):
    monkeypatch.chdir(tmp_path)
    general = {"database_url": postgres_url, "auto_migrate": True, "ledger_stuck_after": 1}
    with FakeOpenAI(api_keys=[API_KEY]) as upstream:
        config = proxy_config(tmp_path, upstream.url, general=general)
        with ProxyProcess(config) as proxy:
            hostile = _edit(proxy, user=hostile_user())
            assert hostile.status_code in (200, 400), hostile.text
            ids = []
            for _ in range(5):
                answer = _edit(proxy, user="dave")
                assert answer.status_code == 200, answer.text
                ids.append(answer.headers["x-tracking-request-id"])
            engine = sa.create_engine(postgres_url)
            try:
                deadline = time.monotonic() + 60
                while not set(ids) <= ids_in(engine):
                    assert time.monotonic() < deadline, "ordinary calls did not reach PostgreSQL"
                    time.sleep(0.1)
                if hostile.status_code == 200:  # the edge let it through: the ledger kept it
                    kept = list_quarantine(engine)
                    assert [r.request_id for r in kept] == [
                        hostile.headers["x-tracking-request-id"]
                    ]
                    assert _metric(proxy, "tracking_ledger_quarantined_total") == 1
            finally:
                engine.dispose()
            time.sleep(1.2)  # past ledger_stuck_after: nothing is stuck, so still ready
            ready = httpx.get(f"{proxy.url}/health/readiness", timeout=10)
            assert ready.status_code == 200, ready.text
            assert _metric(proxy, "tracking_ledger_queue_depth") == 0  # idle: nothing queued
            started = time.monotonic()
            proxy.stop(timeout=20)
            assert time.monotonic() - started < 10


def test_proxy_readiness_reports_a_stuck_shipper(tmp_path: Path, monkeypatch, postgres_url):
    monkeypatch.chdir(tmp_path)
    general = {"database_url": postgres_url, "auto_migrate": True, "ledger_stuck_after": 1}
    with FakeOpenAI(api_keys=[API_KEY]) as upstream:
        config = proxy_config(tmp_path, upstream.url, general=general)
        with ProxyProcess(config) as proxy:
            engine = sa.create_engine(postgres_url)
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text("ALTER TABLE spend_logs RENAME TO spend_logs_away"))
                assert _edit(proxy).status_code == 200  # recorded in the outbox all the same
                deadline = time.monotonic() + 60
                while True:
                    ready = httpx.get(f"{proxy.url}/health/readiness", timeout=10)
                    if ready.status_code == 503:
                        break
                    assert time.monotonic() < deadline, "readiness never reported the shipper"
                    time.sleep(0.3)
                assert ready.json()["database"] == "stuck"
                with engine.begin() as conn:
                    conn.execute(sa.text("ALTER TABLE spend_logs_away RENAME TO spend_logs"))
                deadline = time.monotonic() + 60
                while httpx.get(f"{proxy.url}/health/readiness", timeout=10).status_code != 200:
                    assert time.monotonic() < deadline, "readiness did not recover"
                    time.sleep(0.3)
                with engine.begin() as conn:  # stuck again: SIGTERM must not wait for it
                    conn.execute(sa.text("ALTER TABLE spend_logs RENAME TO spend_logs_away"))
                assert _edit(proxy).status_code == 200
                started = time.monotonic()
                proxy.stop(timeout=30)
                assert time.monotonic() - started < 15, "shutdown waited for a stuck database"
            finally:
                engine.dispose()


def test_the_queue_depth_a_commit_reports_counts_that_commit_as_done(ledger_url):  # noqa: F811
    """The Prometheus gauge is set from a write hook: after the last commit it must read 0."""
    ledger = open_ledger(ledger_url, mode="durable")
    seen: list[int] = []
    ledger.write_hooks.append(lambda seconds, rows: seen.append(ledger.queue_depth()))
    try:
        for _ in range(3):
            ledger.on_end(make_event())
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    assert seen and seen[-1] == 0


def test_a_huge_finite_cost_is_quarantined_as_too_large_not_as_not_finite(ledger_url):  # noqa: F811
    """SQLite's writer read 1E+999996 as a float (inf) and said "must be finite"."""
    ledger = open_ledger(ledger_url, mode="durable")
    try:
        ledger.on_end(make_event(request_id="huge-cost", cost_usd=Decimal("1E+999996")))
        assert ledger.flush(10)
        (kept,) = list_quarantine(ledger.engine)
        assert kept.request_id == "huge-cost" and kept.error
        if ledger.engine.dialect.name == "sqlite":
            assert "below 1e+10" in kept.error and "finite" not in kept.error
    finally:
        ledger.shutdown(10)


def test_a_refused_row_shipped_again_is_quarantined_and_counted_once(ledger_url):  # noqa: F811
    """A process that dies (or stops at shutdown's deadline) while it moves a batch row by row
    leaves the rows it quarantined in its outbox: the next start quarantined them again, and
    the budgets counted their cost twice."""
    from decimal import Decimal

    from tests.ledger_support import leave_outbox, leftovers_dir
    from tracking.integrations.sql import event_to_row
    from tracking.integrations.sql._codec import encode_row
    from tracking.integrations.sql._quarantine import quarantined_spend

    dialect = "postgresql" if ledger_url.startswith("postgresql") else "sqlite"
    fields = dict(refused_rows(dialect))["tokens"]
    event = make_event(request_id="refused-1", user="dora", cost=Decimal("0.25"), **fields)  # type: ignore[arg-type]
    line = encode_row(event_to_row(event))
    open_ledger(ledger_url).shutdown(10)  # the tables
    folder = leftovers_dir(ledger_url)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # shipped, then shipped again from the outbox it was left in
        leave_outbox(folder, [line])
        ledger = open_ledger(ledger_url)
        try:
            deadline = time.monotonic() + 60
            while ledger.quarantined_rows < 1:
                assert time.monotonic() < deadline, "the left row was not quarantined"
                time.sleep(0.05)
            engine = ledger.engine
            assert [r.request_id for r in list_quarantine(engine)] == ["refused-1"]
            with engine.connect() as conn:
                assert quarantined_spend(conn, end_user="dora") == Decimal("0.25")
        finally:
            ledger.shutdown(10)


def test_a_call_quarantined_as_its_intent_and_as_its_own_row_counts_once(ledger_url):  # noqa: F811
    """A process killed after a call's row was acknowledged but before its intent was marked
    done leaves both; where both are refused (an end-user id PostgreSQL cannot index), the
    budgets counted the call twice: its estimate and its cost."""
    from decimal import Decimal

    from tracking.integrations.sql import event_to_row
    from tracking.integrations.sql._codec import encode_row
    from tracking.integrations.sql._quarantine import quarantined_spend
    from tracking.integrations.sql._target import SpendLogsInserter

    ledger = open_ledger(ledger_url)
    try:
        own = make_event(request_id="both-1", user="erin", cost=Decimal("0.30"))
        intent = make_event(
            request_id="both-1",
            user="erin",
            cost=Decimal("0.50"),
            status="incomplete",
            cost_source="estimate",
        )
        SpendLogsInserter(ledger.engine).quarantine(
            [("both-1", encode_row(event_to_row(e)), "refused") for e in (intent, own)]
        )
        assert len(list_quarantine(ledger.engine)) == 2  # both kept, as they were refused
        with ledger.engine.connect() as conn:
            assert quarantined_spend(conn, end_user="erin") == Decimal("0.30")
    finally:
        ledger.shutdown(10)


def test_a_kept_line_that_is_no_row_is_listed_and_left_never_a_traceback(ledger_url, capsys):  # noqa: F811
    """A quarantined line that is not the JSON of a row (the database's text damaged or edited
    by hand: the reports count it as no call) is listed as it is, and a replay with --repair
    leaves it, said, while the rows beside it are replayed: ``list --format json`` and
    ``replay --repair`` raised a traceback (the replay stopped before the good rows)."""
    engine = sa.create_engine(ledger_url)
    try:
        open_ledger(ledger_url).shutdown(10)
        inserter_rows = [
            (None, "not json {", "refused"),
            ("nan", '{"cost_usd": NaN}', "refused"),
            ("text", '{"request_id": "text", "cost_usd": "ten", "start_time": "soon"}', "x"),
        ]
        with engine.begin() as conn:
            for request_id, line, error in inserter_rows:
                conn.execute(
                    quarantine.insert().values(
                        request_id=request_id, line=line, error=error, quarantined_at=sa.func.now()
                    )
                )
        good = quarantine_event(engine, request_id="good-1", cost=Decimal("0.25"))
    finally:
        engine.dispose()

    listing = ["ledger", "quarantine", "list", "--format", "json", "--database-url", ledger_url]
    assert main(listing) == 0
    listed = json.loads(capsys.readouterr().out)  # strict JSON: no NaN in it
    by_id = {item["request_id"]: item for item in listed}
    assert by_id[None]["row"] is None and by_id[None]["line"] == "not json {"
    assert by_id["nan"]["row"] is None and by_id["nan"]["line"] == '{"cost_usd": NaN}'
    assert by_id[good]["row"]["request_id"] == good and "line" not in by_id[good]

    replay = ["ledger", "quarantine", "replay", "--repair", "--database-url", ledger_url]
    assert main(replay) == 1  # three rows stay: said, and the status says so
    out = capsys.readouterr().out
    assert "replayed 1 rows" in out and out.count("refused again") == 3, out
    engine = sa.create_engine(ledger_url)
    try:
        assert good in ids_in(engine)
        assert {r.request_id for r in list_quarantine(engine)} == {None, "nan", "text"}
    finally:
        engine.dispose()


def test_replaying_rows_by_id_reads_those_rows_only(ledger_url, capsys):  # noqa: F811
    """``replay --id N`` reads row N from the quarantine, not the whole quarantine to pick it
    (a large quarantine was loaded into memory for one row)."""
    engine = sa.create_engine(ledger_url)
    try:
        open_ledger(ledger_url).shutdown(10)
        kept = [quarantine_event(engine, request_id=f"kept-{n}") for n in range(3)]
        ids = {r.request_id: r.id for r in list_quarantine(engine)}
    finally:
        engine.dispose()
    reads: list[str] = []

    @sa.event.listens_for(sa.Engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if (
            statement.lstrip().upper().startswith("SELECT")
            and "FROM ledger_quarantine" in statement
        ):
            reads.append(statement)

    try:
        replay = ["ledger", "quarantine", "replay", "--id", str(ids[kept[1]])]
        assert main([*replay, "--database-url", ledger_url]) == 0, capsys.readouterr()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert reads and all(" IN " in statement for statement in reads), reads
    engine = sa.create_engine(ledger_url)
    try:
        assert {r.request_id for r in list_quarantine(engine)} == {kept[0], kept[2]}
        assert kept[1] in ids_in(engine)
    finally:
        engine.dispose()
