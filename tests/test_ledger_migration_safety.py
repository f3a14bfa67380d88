"""Migrations that cannot half-happen: a host's table in the ledger's way, a migration failing
halfway, processes naming one SQLite file differently, a downgrade over quarantined rows, and
concurrent ``tracking migrate`` runs each telling the truth (a QA pass of the database's life)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

import tracking.integrations.sql as ledger_sql
from tests.ledger_support import make_event
from tracking.integrations.sql._commands import migrate_command
from tracking.integrations.sql._migrate import _migration_lock
from tracking.integrations.sql._schema import OUR_TABLES


@pytest.fixture
def engine(ledger_url):
    engine = ledger_sql.create_ledger_engine(ledger_url)
    yield engine
    engine.dispose()


def _names(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {*inspector.get_table_names(), *inspector.get_view_names()}


def _host_table(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(sa.text(f"INSERT INTO {name} (id, note) VALUES (1, 'the host''s row')"))


def test_our_tables_are_what_the_migrations_create(engine):
    ledger_sql.upgrade(engine)
    assert _names(engine) == OUR_TABLES


def test_a_host_table_with_one_of_the_ledgers_names_is_refused_and_nothing_created(
    engine, ledger_url
):
    _host_table(engine, "proxy_keys")
    with pytest.raises(
        ledger_sql.SchemaVersionError, match="has proxy_keys that tracking's migrations"
    ):
        ledger_sql.SqlLedger(ledger_url, auto_migrate=True)
    assert _names(engine) == {"proxy_keys"}  # SQLite kept a spend_logs: refused ever after


def test_a_migration_failing_halfway_keeps_nothing_and_runs_once_the_clash_is_gone(
    engine, ledger_url
):
    ledger_sql.upgrade(engine, "0002")
    before = _names(engine)
    _host_table(engine, "proxy_end_users")  # 0003 creates proxy_keys, then fails on this one
    with pytest.raises(ledger_sql.SchemaVersionError, match="nothing of it was kept") as info:
        ledger_sql.SqlLedger(ledger_url, auto_migrate=True)
    assert "proxy_end_users" in str(info.value)
    assert ledger_sql.current_revision(engine) == "0002"
    assert _names(engine) == before | {"proxy_end_users"}  # no proxy_keys left behind
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE proxy_end_users RENAME TO host_end_users"))
    ledger_sql.SqlLedger(ledger_url, auto_migrate=True).shutdown(5)
    assert ledger_sql.current_revision(engine) == ledger_sql.head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM host_end_users")).scalar() == (
            "the host's row"
        )


def test_a_downgrade_that_would_drop_quarantined_rows_is_refused(engine):
    ledger_sql.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ledger_quarantine (request_id, line, error, quarantined_at) "
                "VALUES ('req-1', '{}', 'refused', :at)"
            ),
            {"at": datetime.now(UTC)},
        )
    with pytest.raises(ledger_sql.SchemaVersionError, match=r"holds 1 row\(s\), billed calls"):
        ledger_sql.downgrade(engine, "0003")
    assert (
        ledger_sql.current_revision(engine) == ledger_sql.head_revision()
    )  # nothing of the way down was kept
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_quarantine"))
    ledger_sql.downgrade(engine, "0003")
    assert ledger_sql.current_revision(engine) == "0003" and "ledger_quarantine" not in _names(
        engine
    )


def test_removing_the_ledgers_tables_is_refused_while_spend_logs_holds_rows(engine, ledger_url):
    ledger = ledger_sql.SqlLedger(ledger_url, mode="durable", auto_migrate=True)
    ledger.on_end(make_event(cost=Decimal("0.25")))
    ledger.shutdown(10)
    with pytest.raises(ledger_sql.SchemaVersionError, match=r"spend_logs holds 1 row\(s\)"):
        ledger_sql.downgrade(engine)
    assert ledger_sql.current_revision(engine) == ledger_sql.head_revision()  # all of it kept
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT cost_usd FROM spend_logs")).scalar() == Decimal("0.25")


@pytest.mark.parametrize("spelling", ["symlink", "uri"])
def test_processes_naming_one_sqlite_file_differently_take_turns_to_migrate(tmp_path, spelling):
    real = tmp_path / "ledger.db"
    if spelling == "symlink":
        (tmp_path / "alias.db").symlink_to(real)
        other = f"sqlite:///{tmp_path / 'alias.db'}"
    else:
        other = f"sqlite:///file:{real}?mode=rwc&uri=true"
    holder, contender = sa.create_engine(f"sqlite:///{real}"), sa.create_engine(other)
    acquired = threading.Event()

    def contend() -> None:
        with _migration_lock(contender):
            acquired.set()

    try:
        with _migration_lock(holder):
            thread = threading.Thread(target=contend, daemon=True)
            thread.start()
            # while this lock is held, the other name must not get one: a wrong lock file (or
            # none, for a URI) let both migrate at once
            assert not acquired.wait(0.5)
        assert acquired.wait(30)
        thread.join(30)
    finally:
        holder.dispose()
        contender.dispose()


def _migrate_at(url: str, start_at: float) -> subprocess.Popen[str]:
    code = (
        "import sys, time; from tracking.cli import main; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "sys.exit(main(['migrate', '--database-url', sys.argv[1]]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, url, str(start_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_of_migrate_runs_at_once_only_the_one_that_migrated_says_so(ledger_url):
    start_at = time.time() + 2.0  # all four ask at the same moment
    runs = [_migrate_at(ledger_url, start_at) for _ in range(4)]
    outputs = [run.communicate(timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err for _, err in outputs]
    said = sorted(out.split(": ", 1)[1].strip() for out, _ in outputs)
    head = ledger_sql.head_revision()
    assert (
        said
        == [f"migrated the ledger from empty to revision {head}"]
        + [f"the ledger is already at revision {head}"] * 3
    )


def test_migrate_on_a_current_ledger_says_so(ledger_url):
    ledger_sql.SqlLedger(ledger_url, auto_migrate=True).shutdown(5)
    out = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):
        assert migrate_command(ledger_url, out) == 0
    assert out.getvalue().endswith(
        f"the ledger is already at revision {ledger_sql.head_revision()}\n"
    )


def test_a_downgrade_that_would_drop_keys_budgets_or_prior_hashes_is_refused(engine):
    """The proxy's keys and end users' budgets (0003) and a regenerated key's earlier hashes
    (0005, what its spend is summed over) are not dropped by a downgrade while they hold
    something: every key would stop working, every budget and block vanish, or a regenerated
    key's spend start again from $0. Emptied, the same downgrades go through."""
    ledger_sql.upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO proxy_keys (key_hash, max_budget_usd, created_at, prior_key_hashes) "
                "VALUES ('h-new', 10, :at, :prior)"
            ),
            {"at": now, "prior": '["h-old"]'},
        )
        conn.execute(
            sa.text(
                "INSERT INTO proxy_end_users (end_user_id, budget_usd, blocked, created_at, "
                "updated_at) VALUES ('alice', 2, false, :at, :at)"
            ),
            {"at": now},
        )
    with pytest.raises(ledger_sql.SchemaVersionError, match=r"1 regenerated key\(s\)"):
        ledger_sql.downgrade(engine, "0004")
    assert ledger_sql.current_revision(engine) == ledger_sql.head_revision()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE proxy_keys SET prior_key_hashes = NULL"))
    ledger_sql.downgrade(engine, "0004")
    with pytest.raises(ledger_sql.SchemaVersionError, match=r"proxy_end_users holds 1 row"):
        ledger_sql.downgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM proxy_end_users"))
    with pytest.raises(ledger_sql.SchemaVersionError, match=r"proxy_keys holds 1 row.*virtual"):
        ledger_sql.downgrade(engine, "0002")
    assert "proxy_keys" in _names(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM proxy_keys"))
    ledger_sql.downgrade(engine, "0002")
    assert ledger_sql.current_revision(engine) == "0002"
    assert not {"proxy_keys", "proxy_end_users"} & _names(engine)
