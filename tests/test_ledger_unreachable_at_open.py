"""A ledger whose PostgreSQL cannot be reached when it opens keeps its rows in the local outbox
and checks the schema once the database answers; a database that answers and refuses (its
schema, a role, a database that does not exist) and a wrong SQLite path still fail loudly.

The outage is a TCP relay on loopback (``tests/relay.py``) cut before the ledger opens, or a
closed loopback port; the database behind it is the machine's real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import make_png
from tests.ledger_support import make_event
from tests.proxy_support import free_port
from tests.relay import TcpRelay
from tracking import bus
from tracking.integrations.prometheus import PrometheusLogger
from tracking.integrations.sql import SqlLedger, spend_logs, upgrade
from tracking.proxy.lifecycle import check_ledger


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    instance = TcpRelay(postgres_url)
    yield instance
    instance.close()


@pytest.fixture
def sql_callback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """``tracking.success_callback = ["sql"]`` with a fresh registry and this test's outboxes;
    the ledger the first call opens is shut down afterwards."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setattr(bus, "_INSTANCES", {})
    monkeypatch.setattr(bus, "_last_plan", None)  # the plan of ["sql"] holds the last ledger
    monkeypatch.setattr(tracking, "success_callback", ["sql"])
    yield
    for instance in list(bus._INSTANCES.values()):
        if isinstance(instance, SqlLedger):
            instance.shutdown(10)


def _opened_ledger() -> SqlLedger:
    ledger = bus._INSTANCES["sql"]
    assert isinstance(ledger, SqlLedger)
    return ledger


def _outbox_ids(ledger: SqlLedger) -> list[str]:
    assert ledger.outbox_path is not None
    db = sqlite3.connect(ledger.outbox_path)
    try:
        return [json.loads(line)["request_id"] for (line,) in db.execute("SELECT line FROM outbox")]
    finally:
        db.close()


def _target_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(spend_logs.c.request_id))]
    finally:
        engine.dispose()


def _migrate(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def test_a_call_goes_on_while_the_database_is_unreachable_at_first_use_and_ships_once(
    postgres_url, relay, sql_callback, monkeypatch, fake, upstream, caplog
):
    """The process starts while its PostgreSQL is away (restarting, still starting): the
    first call opens the ledger, succeeds, and its row waits in the outbox; readiness says
    ``unreachable``; once the database answers, the schema is checked and the row ships, once
    (a second ledger opening on the same outbox folder ships nothing again)."""
    _migrate(postgres_url)
    relay.cut()
    monkeypatch.setenv("TRACKING_DATABASE_URL", relay.url)
    before = len(fake.requests)
    with caplog.at_level(logging.WARNING, logger="tracking.ledger"):
        response = tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-2", **upstream
        )
    assert len(fake.requests) == before + 1
    assert "cannot open the ledger database" in caplog.text
    assert "kept in the local outbox" in caplog.text
    ledger = _opened_ledger()
    assert not ledger.schema_checked
    assert ledger.writer.flush(10)  # acknowledged in the outbox
    assert _outbox_ids(ledger) == [response.request_id]
    assert ledger.outbox_rows() == 1 and ledger.ledger_stats().outbox_rows == 1
    assert asyncio.run(check_ledger(ledger)) == "unreachable"
    registry = CollectorRegistry()
    PrometheusLogger(registry)
    deadline = time.monotonic() + 30  # the shipper's first attempt, after the row arrived
    while not registry.get_sample_value("tracking_ledger_stuck_seconds"):
        assert time.monotonic() < deadline, "the metrics never showed the rows stuck"
        time.sleep(0.05)
    assert _target_ids(postgres_url) == []

    relay.restore()
    assert ledger.flush(30)
    assert ledger.schema_checked
    assert asyncio.run(check_ledger(ledger)) == "connected"
    assert registry.get_sample_value("tracking_ledger_stuck_seconds") == 0
    ledger.shutdown(10)
    SqlLedger(relay.url).shutdown(10)  # claims whatever was left in the folder: nothing
    assert _target_ids(postgres_url) == [response.request_id]


def test_a_closed_port_at_open_keeps_durable_rows_and_intents_in_the_outbox(postgres_url, tmp_path):
    """A PostgreSQL on a port nobody listens on (connection refused) opens a durable ledger
    with intents; its rows are acknowledged locally, none is quarantined or set aside."""
    url = sa.make_url(postgres_url).set(port=free_port()).render_as_string(hide_password=False)
    ledger = SqlLedger(url, mode="durable", intents=True, outbox_dir=tmp_path, retry_max=0.2)
    try:
        event = make_event()
        ledger.on_end(event)  # durable: returns once the row is in the outbox
        assert _outbox_ids(ledger) == [event.request_id]
        assert ledger.quarantined_rows == 0 and ledger.rejected_rows == 0
    finally:
        ledger.shutdown(1)
    assert list(tmp_path.glob("outbox-*.db"))  # kept for the next start, not set aside
    assert not list(tmp_path.glob("rejected-*.db"))


def test_an_unreachable_database_is_the_public_database_unreachable_error(postgres_url):
    """What a command reading the ledger raises for a PostgreSQL nobody listens on is importable
    from ``tracking.integrations.sql``, beside ``SchemaVersionError``, so callers can catch it by
    its class (it was only in a private module): a ``ConfigurationError`` whose ``error_type``
    is ``ledger_unreachable``."""
    import io

    from tracking.integrations import sql

    assert {"DatabaseUnreachableError", "SchemaVersionError"} <= set(sql.__all__)
    url = sa.make_url(postgres_url).set(port=free_port()).render_as_string(hide_password=False)
    with pytest.raises(sql.DatabaseUnreachableError, match="cannot open the ledger") as info:
        sql.migrate_command(url, io.StringIO())
    assert isinstance(info.value, tracking.ConfigurationError)
    assert info.value.error_type == "ledger_unreachable"


def test_a_password_in_the_url_s_query_is_never_shown(postgres_url):
    """libpq takes the password as a query parameter too (``?password=...``, ``sslpassword``):
    ``tracking spend`` and ``tracking migrate`` printed it in their one-line error, where a CI
    log keeps it; the password before the host was hidden, this one was not."""
    import io

    from tracking.integrations import sql

    url = sa.make_url(postgres_url).set(port=free_port(), password=None)
    url = url.update_query_dict({"password": "s3cret-q", "sslpassword": "s3cret-k"})
    text = url.render_as_string(hide_password=False)
    with pytest.raises(sql.DatabaseUnreachableError) as info:
        sql.migrate_command(text, io.StringIO())
    message = str(info.value)
    assert "s3cret" not in message
    assert "password=***" in message and "sslpassword=***" in message


def test_a_database_that_accepts_but_never_answers_is_unreachable_not_a_hang(
    postgres_url, relay, tmp_path, monkeypatch
):
    """A server that takes the connection and says nothing (stopped, a balancer in front of
    nothing): libpq waited without end, and the first call with it. Now the connection times
    out (``CONNECT_TIMEOUT``, 1 s here), the ledger opens in front of its outbox, and the row
    ships once the server answers."""
    from tracking.integrations.sql import _engine

    monkeypatch.setattr(_engine, "CONNECT_TIMEOUT", 1, raising=False)
    _migrate(postgres_url)
    relay.pause()
    opened: list[SqlLedger] = []
    opening = threading.Thread(
        target=lambda: opened.append(
            SqlLedger(relay.url, mode="durable", outbox_dir=tmp_path, retry_max=0.2)
        ),
        daemon=True,
    )
    opening.start()
    opening.join(60)  # a bound for a hang, never met when it works
    assert opened, "opening the ledger hung on a server that does not answer"
    (ledger,) = opened
    try:
        assert not ledger.schema_checked
        event = make_event()
        ledger.on_end(event)
        assert _outbox_ids(ledger) == [event.request_id]
        relay.restore()
        assert ledger.flush(30)
        assert _target_ids(postgres_url) == [event.request_id]
    finally:
        ledger.shutdown(10)


def test_a_database_that_answers_with_another_schema_later_keeps_the_rows_until_migrated(
    postgres_url, relay, tmp_path, caplog
):
    """Unreachable at open, then reachable but never migrated: the rows stay in the outbox (an
    ERROR names the schema), none is quarantined; once migrated, they ship."""
    relay.cut()
    ledger = SqlLedger(relay.url, outbox_dir=tmp_path, retry_max=0.2)
    try:
        event = make_event()
        ledger.on_end(event)
        assert ledger.writer.flush(10)
        with caplog.at_level(logging.ERROR, logger="tracking.ledger"):
            relay.restore()
            deadline = time.monotonic() + 30  # the gate's verdict, after the shipper's backoff
            while "is not the ledger's" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "has no ledger tables yet" in caplog.text
        assert _outbox_ids(ledger) == [event.request_id]
        assert ledger.quarantined_rows == 0 and ledger.rejected_rows == 0
        _migrate(postgres_url)
        assert ledger.flush(30)
        assert _target_ids(postgres_url) == [event.request_id]
    finally:
        ledger.shutdown(10)


def test_a_database_never_migrated_still_fails_the_first_call_before_sending(
    postgres_url, sql_callback, monkeypatch, fake, upstream
):
    """Reachable, but not the ledger's schema: a configuration mistake, refused at once."""
    monkeypatch.setenv("TRACKING_DATABASE_URL", postgres_url)
    before = len(fake.requests)
    with pytest.raises(tracking.ConfigurationError, match="tracking migrate") as info:
        tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-2", **upstream)
    assert info.value.error_type != "ledger_unreachable"
    assert len(fake.requests) == before


@pytest.mark.parametrize("wrong", ["role", "database"])
def test_a_database_that_refuses_the_connection_is_a_configuration_error(
    postgres_url, tmp_path, wrong
):
    """A role or a database that does not exist: the server answered, so no outbox mode."""
    url = sa.make_url(postgres_url)
    url = url.set(username="no_such_role") if wrong == "role" else url.set(database="no_such_db")
    with pytest.raises(tracking.ConfigurationError, match="does not exist") as info:
        SqlLedger(url.render_as_string(hide_password=False), outbox_dir=tmp_path)
    assert info.value.error_type != "ledger_unreachable"
    assert not list(tmp_path.glob("outbox-*"))


def test_an_sqlite_file_that_cannot_be_created_is_a_configuration_error(tmp_path):
    """SQLite has no outage to wait out: a folder that cannot hold the file is a mistake."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(tracking.ConfigurationError, match="cannot open the ledger") as info:
        SqlLedger(f"sqlite:///{not_a_folder / 'ledger.db'}")
    assert info.value.error_type != "ledger_unreachable"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', True),
        ("connection timeout expired", True),
        ("failed to resolve host 'db': [Errno -2] Name or service not known", True),
        ("FATAL:  the database system is starting up", True),
        ("FATAL:  sorry, too many clients already", True),
        ('FATAL:  password authentication failed for user "app"', False),
        ("fe_sendauth: no password supplied", False),
        ('FATAL:  role "app" does not exist', False),
        ("received invalid response to SSL negotiation: H", False),
    ],
)
def test_which_connection_failures_count_as_unreachable(message, expected):
    from tracking.integrations.sql._engine import connection_failed

    assert connection_failed(Exception(message)) is expected


def test_a_proxy_started_while_its_database_is_away_serves_and_ships_later(
    postgres_url, relay, tmp_path, fake
):
    """``tracking serve`` (re)started during a PostgreSQL outage: it starts, serves the call
    (its row kept in the outbox), readiness says ``unreachable``, a management request is a 503
    to try again (not a 500 "misconfigured"); the row ships once the database is back."""
    import httpx

    from tests.proxy_support import ProxyProcess, one_deployment_config, write_config

    _migrate(postgres_url)
    relay.cut()
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            fake.url,
            model_name="gpt-image-2",
            general_settings={"database_url": relay.url, "master_key": "sk-master-ledger2"},
        ),
    )
    env = {"TRACKING_OUTBOX_DIR": str(tmp_path / "outbox")}
    master = {"Authorization": "Bearer sk-master-ledger2"}
    with ProxyProcess(config, env=env) as proxy:
        answer = httpx.post(
            f"{proxy.url}/v1/images/edits",
            files={"image": ("a.png", make_png(), "image/png")},
            data={"model": "gpt-image-2", "prompt": "p"},
            headers=master,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        request_id = answer.headers["x-request-id"]
        ready = httpx.get(f"{proxy.url}/health/readiness", timeout=30)
        assert ready.status_code == 503 and ready.json()["database"] == "unreachable"
        keys = httpx.get(f"{proxy.url}/key/list", headers=master, timeout=30)
        assert keys.status_code == 503, keys.text
        assert keys.json()["error"]["code"] == "store_unavailable"
        assert _target_ids(postgres_url) == []
        relay.restore()
        deadline = time.monotonic() + 30
        while _target_ids(postgres_url) != [request_id] and time.monotonic() < deadline:
            time.sleep(0.1)
    assert _target_ids(postgres_url) == [request_id]


def _gauge_until_positive(registry: CollectorRegistry, what: str) -> float:
    deadline = time.monotonic() + 30  # a bound for "never", not a timing assertion
    while not (value := registry.get_sample_value("tracking_ledger_stuck_seconds")):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def test_a_database_that_stops_answering_mid_attempt_shows_the_rows_stuck(
    postgres_url, relay, tmp_path
):
    """The database took the connection and stopped answering (paused, not down): the
    shipper's attempt never ends, so no attempt ever failed. The rows waiting behind it are
    stuck all the same: the gauge counts from when the shipper took them up (it stayed 0 until
    an attempt failed, here never), and drops to 0 once they ship."""
    _migrate(postgres_url)
    registry = CollectorRegistry()
    PrometheusLogger(registry)
    ledger = SqlLedger(relay.url, outbox_dir=tmp_path, retry_max=0.2)
    try:
        assert ledger.schema_checked
        relay.pause()
        event = make_event()
        ledger.on_end(event)
        assert ledger.writer.flush(10)  # acknowledged in the outbox, its shipping hangs
        _gauge_until_positive(registry, "the rows behind a hung attempt were never shown stuck")
        assert ledger.outbox_rows() == 1 and _target_ids(postgres_url) == []
        relay.restore()
        assert ledger.flush(30)
        assert registry.get_sample_value("tracking_ledger_stuck_seconds") == 0
        assert _target_ids(postgres_url) == [event.request_id]
    finally:
        relay.restore()
        ledger.shutdown(10)


def test_a_ledger_that_never_reached_its_database_reports_its_rows_stuck(postgres_url, tmp_path):
    """A PostgreSQL on a closed loopback port from the first moment: the ledger opens in front
    of its outbox, never writes a row to the database, and the gauge the Prometheus integration
    exports shows its waiting rows stuck (not only ``integration="sql"`` errors)."""
    url = sa.make_url(postgres_url).set(port=free_port()).render_as_string(hide_password=False)
    registry = CollectorRegistry()
    PrometheusLogger(registry)
    sql_errors = {"integration": "sql"}
    errors_before = registry.get_sample_value("tracking_integration_errors_total", sql_errors)
    ledger = SqlLedger(url, mode="durable", intents=True, outbox_dir=tmp_path, retry_max=0.2)
    try:
        assert not ledger.schema_checked
        assert registry.get_sample_value("tracking_ledger_stuck_seconds") == 0  # nothing waits
        ledger.on_end(make_event())
        first = _gauge_until_positive(registry, "the rows of a ledger never started weren't stuck")
        second = _gauge_until_positive(registry, "the stuck time went back to 0")
        assert second >= first  # still counting from the same moment
        assert registry.get_sample_value("tracking_ledger_outbox_rows") == 1
        errors = registry.get_sample_value("tracking_integration_errors_total", sql_errors)
        assert errors == errors_before  # the gauge says it, not an error count
    finally:
        ledger.shutdown(1)
