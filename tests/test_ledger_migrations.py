"""The ledger's Alembic migrations: up and down on both dialects, in agreement with the models,
and a clear error for a database at another schema revision."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import tracking
from tracking.integrations.sql import (
    VERSION_TABLE,
    SchemaVersionError,
    SqlLedger,
    create_ledger_engine,
    current_revision,
    downgrade,
    head_revision,
    include_object,
    metadata,
    migrations_path,
    upgrade,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine(ledger_url):
    engine = create_ledger_engine(ledger_url)
    yield engine
    engine.dispose()


def _names(engine) -> tuple[set[str], set[str]]:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return set(inspector.get_table_names()), set(inspector.get_view_names())


def _stamp(engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})


def test_migrations_go_up_and_down(engine):
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables, views = _names(engine)
    assert {"spend_logs", "ledger_quarantine", VERSION_TABLE} <= tables and {
        "spend_daily",
        "spend_calls",
    } <= views
    with engine.connect() as conn:
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("spend_logs")}
    assert indexes >= {
        "ix_spend_logs_end_user_start_time",
        "ix_spend_logs_model_start_time",
        "ix_spend_logs_api_key_hash_start_time",
        "ix_spend_logs_start_time",
    }

    downgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    tables, views = _names(engine)
    assert "spend_logs" in tables and "spend_daily" not in views

    downgrade(engine)
    assert current_revision(engine) is None
    tables, views = _names(engine)
    assert "spend_logs" not in tables and not views

    upgrade(engine)  # and back up again from nothing
    assert current_revision(engine) == head_revision()


def test_models_and_migrations_agree(engine):
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": include_object,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        assert compare_metadata(context, metadata) == []


def test_only_the_ledgers_tables_are_touched(engine):
    host = sa.MetaData()
    sa.Table("customers", host, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("alembic_version", host, sa.Column("version_num", sa.String(32), primary_key=True))
    host.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('host_app_rev_9')"))

    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": include_object,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        # The host's tables are not ours to drop: autogenerate proposes nothing about them.
        assert compare_metadata(context, metadata) == []
    downgrade(engine)
    tables, _ = _names(engine)
    assert {"customers", "alembic_version"} <= tables and "spend_logs" not in tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == (
            "host_app_rev_9"
        )


def test_sqlite_is_migrated_automatically_from_empty_and_from_an_older_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    SqlLedger(url).shutdown()
    engine = create_ledger_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        downgrade(engine, "0001")
        SqlLedger(url).shutdown()
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_postgres_must_be_migrated(postgres_url):
    with pytest.raises(SchemaVersionError, match="no ledger tables yet") as info:
        SqlLedger(postgres_url)
    assert "tracking migrate" in str(info.value)
    assert isinstance(info.value, tracking.ConfigurationError)
    SqlLedger(postgres_url, auto_migrate=True).shutdown()
    SqlLedger(postgres_url).shutdown()  # now at the head: fine without auto_migrate


def test_postgres_at_an_older_revision_is_a_clear_error(postgres_url):
    engine = create_ledger_engine(postgres_url)
    try:
        upgrade(engine, "0001")
        with pytest.raises(
            SchemaVersionError, match=rf"at revision '0001'.*needs revision '{head_revision()}'"
        ):
            SqlLedger(postgres_url)
    finally:
        engine.dispose()


def test_a_newer_schema_is_a_clear_error_on_both_dialects(engine, ledger_url):
    upgrade(engine)
    _stamp(engine, "9999_from_the_future")
    with pytest.raises(SchemaVersionError, match="newer than this version") as info:
        SqlLedger(ledger_url, auto_migrate=True)
    assert "upgrade the package" in str(info.value)


def test_a_spend_logs_table_not_made_by_our_migrations_is_refused(engine, ledger_url):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE spend_logs (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaVersionError, match="did not create"):
        SqlLedger(ledger_url, auto_migrate=True)


def test_migrations_ship_inside_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    force = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force["migrations"] == "tracking/integrations/sql/migrations"
    here = migrations_path()
    assert (here / "env.py").is_file()
    assert sorted(p.name for p in (here / "versions").glob("0*.py")) == [
        "0001_spend_logs.py",
        "0002_spend_daily_view.py",
        "0003_proxy_keys_and_end_users.py",
        "0004_ledger_quarantine.py",
        "0005_proxy_keys_prior_hashes.py",
        "0006_spend_calls_view.py",
        "0007_quarantined_values.py",
        "0008_spend_daily_flags.py",
        "0009_spend_daily_cost_bound.py",
        "0010_end_user_deletions.py",
        "0011_proxy_keys_updated_at.py",
    ]


def test_the_agreement_check_does_see_a_difference(engine):
    upgrade(engine)
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["spend_logs"].append_column(sa.Column("surprise", sa.Integer))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": include_object, "version_table": VERSION_TABLE}
        )
        diff = compare_metadata(context, drifted)
    assert [(op[0], op[3].name) for op in diff] == [("add_column", "surprise")]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_processes_starting_together_on_a_new_database_migrate_it_once(dialect, tmp_path, request):
    """`tracking serve --workers N` on a new database: every process opens the ledger at once;
    one migrates, the others wait for it, none fails."""
    url = (
        f"sqlite:///{tmp_path / 'new.db'}"
        if dialect == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    code = (
        "import sys, time; from tracking.integrations.sql import SqlLedger; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "SqlLedger(url=sys.argv[1], auto_migrate=True).shutdown(5)"
    )
    start_at = str(time.time() + 2.0)  # all four open the ledger at the same moment
    env = {**os.environ, "TRACKING_OUTBOX_DIR": str(tmp_path / "outboxes")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, start_at],
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    engine = sa.create_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_head_revision_constant_is_alembics_head():
    from tracking.integrations.sql._migrate import HEAD_REVISION

    assert head_revision() == HEAD_REVISION  # bump HEAD_REVISION with every new migration


def test_opening_a_current_ledger_does_not_import_alembic(tmp_path):
    """A database already at the head is recognised with one query: no Alembic at start-up."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = (
        "import sys; from tracking.integrations.sql import SqlLedger; "
        "SqlLedger(url=sys.argv[1]).shutdown(5); "
        "print(any(m == 'alembic' or m.startswith('alembic.') for m in sys.modules))"
    )
    first, second = (
        subprocess.run(
            [sys.executable, "-c", code, url], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    )
    assert (first, second) == ("True", "False")  # the first start migrated the new file


def _offline_config(url: str):
    import io

    from alembic.config import Config

    config = Config(output_buffer=io.StringIO())
    config.set_main_option("script_location", str(migrations_path()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url)
    return config


# Offline runs connect to nothing: the URLs only name the dialect whose SQL is written.
OFFLINE_URLS = {
    "sqlite": "sqlite:///offline-never-opened.db",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/offline_never_opened",
}


@pytest.mark.parametrize("dialect", sorted(OFFLINE_URLS))
@pytest.mark.parametrize(
    ("revisions", "check"),
    [
        ("0010:0009", "proxy_end_user_deletions holds no rows"),
        ("0005:0004", "no regenerated key has earlier hashes"),
        ("0004:0003", "ledger_quarantine holds no rows"),
        ("0003:0002", "proxy_end_users holds no rows"),
        ("0001:base", "spend_logs holds no rows"),
    ],
)
def test_an_offline_downgrade_past_a_guard_is_alembics_clear_refusal(dialect, revisions, check):
    """``alembic downgrade ... --sql`` writes SQL without a database: the guards that refuse
    to drop rows queried it and failed with an ``AttributeError`` (a ``TypeError`` for 0005)
    from the query's missing result. Now Alembic's own ``FAILED: ...`` says why, and no
    script that could drop those rows is written."""
    from alembic import command
    from alembic.util import CommandError

    config = _offline_config(OFFLINE_URLS[dialect])
    with pytest.raises(
        CommandError, match=f"offline \\(--sql\\) downgrade cannot check that {check}"
    ):
        command.downgrade(config, revisions, sql=True)
    assert not Path("offline-never-opened.db").exists()  # nothing was opened


@pytest.mark.parametrize("dialect", sorted(OFFLINE_URLS))
def test_offline_upgrades_and_unguarded_downgrades_still_write_their_sql(dialect):
    from alembic import command

    config = _offline_config(OFFLINE_URLS[dialect])
    command.upgrade(config, "head", sql=True)
    command.downgrade(config, "0009:0005", sql=True)
    written = config.output_buffer.getvalue()  # type: ignore[union-attr]
    assert "CREATE TABLE spend_logs" in written
    assert "version_num='0010'" in written and "version_num='0005'" in written
