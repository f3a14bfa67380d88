"""``SchemaGate``: the schema check of a ledger opened while its PostgreSQL was unreachable.

A ledger checks its database's schema when it opens (:func:`~._migrate.check_schema`). When a
PostgreSQL cannot be reached then (refused, timed out, a name that does not resolve, a server
still starting: :func:`~._engine.connection_failed`), the ledger opens all the same, in front of
its local outbox, and the check waits for the database: the gate runs it before anything is
written to the target (:class:`~._target.SpendLogsInserter` asks it first), and until it passes
every write fails with :class:`SchemaUnchecked`, which the inserter counts as transient. So the
rows wait in the outbox (none is ever quarantined or set aside because of it) and ship once
the database answers with the ledger's schema.

A database that answers with another schema (never migrated, at a revision this version does
not know) keeps them waiting too: the error is logged at ERROR level, once per distinct message,
and the readiness check says ``stuck`` (:meth:`~._shipper.OutboxShipper.stuck_for`). The rows
ship once the database is migrated (or with ``auto_migrate=True``, at once).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ._engine import DatabaseUnreachableError, redact
from ._migrate import check_schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["SchemaGate", "SchemaUnchecked"]

log = logging.getLogger("tracking.ledger")


class SchemaUnchecked(Exception):
    """The target's schema has not been checked yet: nothing may be written to it (transient)."""


class SchemaGate:
    """Runs the schema check deferred at open; see the module docstring."""

    def __init__(self, engine: Engine, auto_migrate: bool | None) -> None:
        self.engine = engine
        self.auto_migrate = auto_migrate
        #: True once the check passed: writes go through without asking again.
        self.checked = False
        self._lock = threading.Lock()
        self._last_refusal: str | None = None

    def ensure(self) -> None:
        """Return once the schema is checked (now or before); else raise ``SchemaUnchecked``."""
        with self._lock:  # one check at a time (the outbox's and the intents' shippers)
            if self.checked:
                return
            try:
                check_schema(self.engine, auto_migrate=self.auto_migrate)
            except DatabaseUnreachableError as exc:  # still away: the shipper logs and retries
                raise SchemaUnchecked(str(exc)) from None
            except Exception as exc:  # it answers, with a schema that is not the ledger's
                if str(exc) != self._last_refusal:
                    self._last_refusal = str(exc)
                    log.error(
                        "ledger: the database %s answers, but its schema is not the ledger's "
                        "(%s); rows wait in the local outbox until it is",
                        redact(self.engine.url),
                        exc,
                    )
                raise SchemaUnchecked(str(exc)) from None
            self.checked = True
        log.warning(
            "ledger: the database %s is reachable and its schema checked; the rows kept in the "
            "local outbox ship now",
            redact(self.engine.url),
        )
