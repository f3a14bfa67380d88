"""Alembic environment of the spend ledger.

Run through :func:`tracking.integrations.sql.upgrade` (or ``tracking migrate``), which passes an
open connection in ``config.attributes["connection"]``; a ``sqlalchemy.url`` main option works too.
The ledger keeps its own version table and looks only at its own tables, so it can share a
database with the host application; SQLite runs in batch mode (copy-and-move ALTERs).
"""

from __future__ import annotations

from alembic import context

from tracking.integrations.sql._engine import create_ledger_engine
from tracking.integrations.sql._schema import VERSION_TABLE, include_object, metadata

config = context.config


def _configure(connection: object | None = None, url: str | None = None) -> None:
    dialect_name = (
        connection.dialect.name  # type: ignore[attr-defined]
        if connection is not None
        else (url or "").split(":", 1)[0].split("+", 1)[0]
    )
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        url=url,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=dialect_name == "sqlite",
        compare_type=True,
        literal_binds=connection is None,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_ledger_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
