"""The SQL spend ledger: ``spend_logs`` on SQLite or PostgreSQL, batched writes, spend queries.

* :class:`SqlLedger` is the ``"sql"`` integration (``tracking.success_callback = ["sql"]``), with
  ``background`` and ``durable`` modes and, in front of PostgreSQL, a local outbox on disk.
* :func:`query_spend` answers "how much did whom spend on what, when", exactly.
* :func:`upgrade` / :func:`downgrade` run the packaged Alembic migrations on an engine.

SQLAlchemy and Alembic are imported here, never by ``import tracking``.
"""

from __future__ import annotations

from ._billing import BilledRow, query_billed
from ._columns import UTCDateTime
from ._commands import migrate_command, read_billed, read_other_hosts, spend_command
from ._engine import (
    DEFAULT_URL,
    DatabaseUnreachableError,
    create_ledger_engine,
    make_sqlite_folder,
    resolve_url,
)
from ._ledger import LedgerMode, ReplayHook, SqlLedger
from ._migrate import (
    SchemaVersionError,
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    migrations_path,
    upgrade,
)
from ._outbox import default_outbox_dir
from ._quarantine import (
    budget_spend,
    quarantine_list_command,
    quarantine_replay_command,
    quarantined_spend,
)
from ._quarantined_calls import (
    LOOKUP_CHUNK,
    QuarantinedCall,
    quarantined_calls,
    quarantined_cost,
)
from ._queries import (
    GroupBy,
    SpendRow,
    cost_order,
    cost_sum,
    flagged_figures,
    flagged_measures,
    query_spend,
    spend_conditions,
    summed_cost,
    unpriced_count,
    utc_day,
)
from ._schema import (
    VERSION_TABLE,
    event_to_row,
    include_object,
    metadata,
    spend_calls,
    spend_logs,
)
from ._waiting import (
    budget_spend_with_outboxes,
    local_calls,
    outbox_folder,
    spend_and_flags_with_outboxes,
    waiting_calls,
)
from ._writer import BatchDestination, LedgerWriter, WriteHook

__all__ = [
    "DEFAULT_URL",
    "LOOKUP_CHUNK",
    "VERSION_TABLE",
    "BatchDestination",
    "BilledRow",
    "DatabaseUnreachableError",
    "GroupBy",
    "LedgerMode",
    "LedgerWriter",
    "QuarantinedCall",
    "ReplayHook",
    "SchemaVersionError",
    "SpendRow",
    "SqlLedger",
    "UTCDateTime",
    "WriteHook",
    "budget_spend",
    "budget_spend_with_outboxes",
    "check_schema",
    "cost_order",
    "cost_sum",
    "create_ledger_engine",
    "current_revision",
    "default_outbox_dir",
    "downgrade",
    "event_to_row",
    "flagged_figures",
    "flagged_measures",
    "head_revision",
    "include_object",
    "local_calls",
    "make_sqlite_folder",
    "metadata",
    "migrate_command",
    "migrations_path",
    "outbox_folder",
    "quarantine_list_command",
    "quarantine_replay_command",
    "quarantined_calls",
    "quarantined_cost",
    "quarantined_spend",
    "query_billed",
    "query_spend",
    "read_billed",
    "read_other_hosts",
    "resolve_url",
    "spend_and_flags_with_outboxes",
    "spend_calls",
    "spend_command",
    "spend_conditions",
    "spend_logs",
    "summed_cost",
    "unpriced_count",
    "upgrade",
    "utc_day",
    "waiting_calls",
]
