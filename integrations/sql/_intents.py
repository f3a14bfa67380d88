"""Intents: a call is written down before it is sent, so a crash leaves a row, never nothing.

With ``SqlLedger(intents=True)`` (the proxy's durable ledger), the ledger's ``on_start`` hook,
which the call path runs before the first request goes upstream, commits the call's *intent*
to a journal: the row the call would leave if the process died before its own row is written,
marked ``status="incomplete"``, ``error_type="incomplete"``, with the most the call could be
expected to cost (``cost_source="estimate"``, see :mod:`tracking.unknown_outcomes`). Once the
call's own row is acknowledged the intent is forgotten (batched with the next intent's commit).

The journal is an outbox file of the process's own (:mod:`integrations.sql._outbox`), locked
while the process lives and committed with ``synchronous=NORMAL``: a commit is a write into the
file's WAL, no fsync, and survives the process's death (kill -9), not a power cut. Its
:class:`~integrations.sql._shipper.OutboxShipper` drains the journals of dead processes: opening
one turns its intents into rows that ship into the target like any other. The target's insert
lets a call's own row replace an ``incomplete`` one with the same request id, and never the
other way round, so the order in which a dead process's rows and intents arrive does not matter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.unknown_outcomes import estimate_unknown_outcomes

from ._codec import encode_row
from ._outbox import open_own_outbox
from ._schema import plain_json
from ._shipper import OutboxShipper, ShipperOwner
from ._target import SpendLogsInserter

if TYPE_CHECKING:
    from tracking.integration import CallStart

__all__ = ["INCOMPLETE", "IntentJournal", "intent_row"]

#: ``status`` and ``error_type`` of a row left by a call whose process died in the middle of it.
INCOMPLETE = "incomplete"
#: Completed calls whose intents are forgotten in one statement at most (then at once).
_FORGET_BATCH = 512


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def intent_row(call: CallStart) -> dict[str, Any]:
    """The ``spend_logs`` row a call leaves if its process dies before the call's own row."""
    request, options = call.request, call.options
    metadata: Any = options.metadata if isinstance(options.metadata, dict) else {}
    tags = metadata.get("tags")
    cost = estimate_unknown_outcomes(request, 1)
    return {
        "request_id": call.request_id,
        "call_type": call.call_type,
        "status": INCOMPLETE,
        "upstream_request_id": None,
        "end_user": request.user,
        "api_key_hash": _str(metadata.get("user_api_key_hash")),
        "key_alias": _str(metadata.get("user_api_key_alias")),
        "team": _str(metadata.get("team")),
        "tags": [str(t) for t in tags] if isinstance(tags, list | tuple) else [],
        "metadata": plain_json(metadata),
        "model": request.model,
        "model_group": request.model,
        "served_model": request.upstream_model,
        "provider": request.provider,
        "deployment_id": None,
        "api_base": call.api_base,
        "n": request.n or 1,
        "images_returned": 0,
        "size": request.size,
        "quality": request.quality,
        "input_text_tokens": None,
        "input_image_tokens": None,
        "cached_input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "cost_usd": cost.usd,
        "cost_per_image_usd": None,
        "cost_source": cost.source,
        "price_ref": cost.price_ref,
        "start_time": call.start_time,
        "end_time": call.start_time,
        "latency_ms": 0.0,
        "attempts": 1,
        "retries": 0,
        "fallback_from": [],
        "error_type": INCOMPLETE,
        "http_status": None,
    }


class IntentJournal(ShipperOwner):
    """This process's intents, and the shipper draining dead processes' journals."""

    def __init__(
        self,
        directory: Path,
        inserter: SpendLogsInserter,
        *,
        replay_hooks: list[Callable[[int], None]],
        quarantine_hooks: list[Callable[[int], None]],
        retry_max: float,
    ) -> None:
        self.directory = directory
        self._inserter = inserter
        self._replay_hooks = replay_hooks
        self._quarantine_hooks = quarantine_hooks
        self._retry_max = retry_max
        self._lock = threading.Lock()
        self._completed: list[str] = []
        self._pid = 0
        self._shipper: OutboxShipper | None = None
        self.shipper()

    def shipper(self) -> OutboxShipper:
        """The journal's shipper (a forked child opens a journal of its own)."""
        if self._shipper is None or self._pid != os.getpid():
            self._lock = threading.Lock()
            self._completed = []
            self._shipper = OutboxShipper(
                open_own_outbox(self.directory, synchronous="NORMAL"),
                self._inserter,
                retry_max=self._retry_max,
                replay_hooks=self._replay_hooks,
                quarantine_hooks=self._quarantine_hooks,
            )
            self._pid = os.getpid()
        return self._shipper

    def record(self, call: CallStart) -> None:
        """Commit the call's intent (before it is sent)."""
        line = encode_row(intent_row(call))
        journal = self.shipper().outbox
        with self._lock:
            completed, self._completed = self._completed, []
            journal.record_intent(call.request_id, line, completed)

    def complete(self, request_id: str) -> None:
        """The call's own row is acknowledged: its intent may go (with the next commit)."""
        with self._lock:
            self._completed.append(request_id)
            if len(self._completed) < _FORGET_BATCH:
                return
            completed, self._completed = self._completed, []
        self.shipper().outbox.forget_intents(completed)

    def close(self, timeout: float | None) -> None:
        """Forget the completed intents, ship what came from dead journals, stop."""
        if self._shipper is None or self._pid != os.getpid():
            return
        with self._lock:
            completed, self._completed = self._completed, []
        self._shipper.outbox.forget_intents(completed)
        self.ship_then_close(self._shipper, timeout)
