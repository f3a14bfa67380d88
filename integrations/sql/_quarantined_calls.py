"""The calls whose rows sit in ``ledger_quarantine``, read for budgets and spend reports.

A row the database refused for good (see :mod:`._quarantine`) is a call that was billed all
the same: what budgets start from (:func:`~._quarantine.budget_spend`) adds these calls to what
``spend_logs`` holds. The spend reports (``tracking spend``, the proxy's ``/spend/*`` and
``/global/spend*`` routes, ``tracking reconcile``'s ledger side) and the ``spend_daily`` view read
the ``spend_calls`` view instead (migration 0006), which applies the rule below with
``over_intents`` in the database, reading the same JSON fields the same way (a test keeps the
two agreeing), so that no report holds the quarantine in memory.

:func:`quarantined_calls` is the one reading: one call per request id (a call quarantined twice,
or as a dead process's intent and as its own row, counts once, by its own row rather than its
intent's estimate), none whose request id is in ``spend_logs`` already (a replay that stopped
between inserting a row and removing it from the quarantine: the row counts once, there). The
quarantine is expected to be small (rows a database refused); its lines are JSON text, narrowed
in the database with ``LIKE`` on the values looked for and matched exactly here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._queries import COST_BOUND
from ._schema import CALL_COUNT_COLUMNS, CALL_TEXT_COLUMNS, MONEY_SCALE, quarantine, spend_logs

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "QuarantinedCall",
    "choose_calls",
    "field_text",
    "quarantined_calls",
    "quarantined_cost",
]

_GENERATION_CALL_TYPES = ("image_generation", "aimage_generation")
_TEXT_FIELDS = CALL_TEXT_COLUMNS
_COUNT_FIELDS = CALL_COUNT_COLUMNS
#: Request ids looked up in ``spend_logs`` per statement (an ``IN`` every dialect takes).
LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class QuarantinedCall:
    """What the reports read of one quarantined row (a value of the wrong type reads as none)."""

    request_id: str | None
    start_time: datetime | None
    #: None: the row has no price (unpriced), or a cost that is no amount (a row kept as its
    #: text because it could not be encoded, text not written as an amount, over $1e10): reports
    #: count it as unpriced, budgets as 0 (see :func:`_cost`)
    cost_usd: Decimal | None
    status: str | None
    call_type: str | None
    cost_source: str | None
    model: str | None
    served_model: str | None
    provider: str | None
    end_user: str | None
    api_key_hash: str | None
    key_alias: str | None
    team: str | None
    images_returned: int
    output_tokens: int
    total_tokens: int
    #: the call's own row, where ``spend_logs`` holds only its intent's ``incomplete`` estimate
    #: (returned with ``over_intents`` only: see :func:`~._quarantine.budget_spend`)
    replaces_intent: bool = False
    #: kept in a local outbox's ``rejected`` table (or a file set aside): the database and its
    #: quarantine both refused it, billed all the same (see :func:`~._waiting.local_calls`)
    refused_locally: bool = False

    @property
    def operation(self) -> str:
        """``image_edit`` or ``image_generation``, as :mod:`._queries` reads ``call_type``."""
        return "image_generation" if self.call_type in _GENERATION_CALL_TYPES else "image_edit"

    @property
    def day(self) -> date | None:
        """The UTC day the call started on."""
        return None if self.start_time is None else self.start_time.astimezone(UTC).date()

    def text(self, column: str) -> str | None:
        """The value of a text column the reports group by."""
        value = getattr(self, column)
        return value if isinstance(value, str) else None


def quarantined_calls(
    conn: Connection,
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    provider: str | None = None,
    over_intents: bool = False,
) -> list[QuarantinedCall]:
    """The quarantined calls naming one of ``key_hashes``, ``end_user`` and ``provider`` (those
    given) that started from ``since`` (inclusive) to ``until`` (exclusive), oldest row first;
    see the module docstring. With ``over_intents`` a call's own row is returned too where
    ``spend_logs`` holds only its intent's ``incomplete`` row (``replaces_intent``)."""
    if key_hashes is not None and not key_hashes:
        return []
    conditions: list[sa.ColumnElement[bool]] = []
    if key_hashes is not None:
        conditions.append(sa.or_(*(_has_field("api_key_hash", h) for h in key_hashes)))
    if end_user is not None:
        conditions.append(_has_field("end_user", end_user))
    if provider is not None:
        conditions.append(_has_field("provider", provider))
    query = sa.select(quarantine.c.id, quarantine.c.line).where(*conditions)
    chosen = choose_calls(
        conn.execute(query.order_by(quarantine.c.id)),
        key_hashes=key_hashes,
        end_user=end_user,
        provider=provider,
        since=since,
        until=until,
    )
    logged = _in_spend_logs(conn, [c.request_id for c in chosen.values() if c.request_id])
    counted: list[QuarantinedCall] = []
    for call in chosen.values():
        status = logged.get(call.request_id) if call.request_id is not None else None
        if call.request_id not in logged:
            counted.append(call)
        elif over_intents and status == "incomplete" and call.status != "incomplete":
            counted.append(replace(call, replaces_intent=True))
    return counted


def choose_calls(
    rows: Iterable[tuple[object, str]],
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    provider: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chosen_rows: dict[object, object] | None = None,
) -> dict[object, QuarantinedCall]:
    """The calls ``(row id, line)`` rows record that match the filters (as
    :func:`quarantined_calls` takes them), one per request id (a row without one by its row id):
    the call's own row where its intent's ``incomplete`` row is there too. ``chosen_rows``,
    when given, is filled with the row id of each call chosen, by the same key."""
    since, until = _aware(since), _aware(until)
    chosen: dict[object, QuarantinedCall] = {}
    for row_id, line in rows:
        call = _read(line)
        if call is None:
            continue
        if key_hashes is not None and call.api_key_hash not in key_hashes:
            continue
        if (end_user is not None and call.end_user != end_user) or (
            provider is not None and call.provider != provider
        ):
            continue
        if since is not None or until is not None:
            if call.start_time is None:
                continue
            if (since is not None and call.start_time < since) or (
                until is not None and call.start_time >= until
            ):
                continue
        key = call.request_id if call.request_id is not None else ("row", row_id)
        kept = chosen.get(key)
        if kept is None or (kept.status == "incomplete" and call.status != "incomplete"):
            chosen[key] = call
            if chosen_rows is not None:
                chosen_rows[key] = row_id
    return chosen


def field_text(name: str, value: str) -> str:
    """How a line holds ``"name":value`` as the encoder writes it (to narrow a search by)."""
    return f'"{name}":{json.dumps(value)}'


def _has_field(name: str, value: str) -> sa.ColumnElement[bool]:
    """A line that may hold ``value`` as its field ``name`` (a narrowing, matched again): the
    value's JSON text, escaped or as UTF-8, wherever it is. Not ``"name":value`` as the ledger's
    encoder writes it: a line corrected by hand, or by a tool that writes JSON otherwise (spaces
    after the colons, UTF-8), is the same call, which the reports count (until 2026-12-06 the
    budgets missed it)."""
    spellings = {json.dumps(value), json.dumps(value, ensure_ascii=False)}
    return sa.or_(*(quarantine.c.line.contains(text, autoescape=True) for text in spellings))


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _in_spend_logs(conn: Connection, request_ids: Sequence[str]) -> dict[str, str | None]:
    """The request ids of ``request_ids`` that ``spend_logs`` holds, with their row's status."""
    found: dict[str, str | None] = {}
    for start in range(0, len(request_ids), LOOKUP_CHUNK):
        chunk = list(request_ids[start : start + LOOKUP_CHUNK])
        query = sa.select(spend_logs.c.request_id, spend_logs.c.status)
        for request_id, status in conn.execute(query.where(spend_logs.c.request_id.in_(chunk))):
            found[str(request_id)] = status
    return found


def _read(line: str) -> QuarantinedCall | None:
    """The call a line records, or None for a line that is no row (not a JSON object)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    fields: dict[str, Any] = {name: _text(row, name) for name in _TEXT_FIELDS}
    fields.update((name, _count(row, name)) for name in _COUNT_FIELDS)
    return QuarantinedCall(
        start_time=_time(row.get("start_time")), cost_usd=_cost(row.get("cost_usd")), **fields
    )


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) else None


def _count(row: Mapping[str, Any], name: str) -> int:
    value = row.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: A start time is a time only when written as one, ISO 8601 as the ledger writes it (a date
#: alone is its UTC midnight, a time without an offset UTC): migration 0007 reads it so on both
#: dialects, where PostgreSQL read ``"now"``, ``"infinity"`` or ``"May 4 2026"`` and SQLite
#: ``"now"`` or a Julian day; this reader took ``"20260504T120000Z"`` and ISO week dates.
TIME_TEXT = re.compile(
    r"[12][0-9]{3}-[0-9]{2}-[0-9]{2}(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or TIME_TEXT.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # a day the month has not
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


#: A cost kept as text is an amount only when it is written as one, whole: a sign, digits with
#: at most one point, an exponent with digits, white space around (migration 0007 reads it so on
#: both dialects). ``"1e"``, ``"1.2.3"``, ``"1_000"``, ``"0x1F"`` or other digits than ASCII's are
#: no amount (SQLite's CAST read the start of ``"1e"`` as 1; Python reads ``"1_000"`` as 1000).
AMOUNT_TEXT = re.compile(
    r"[ \t\n\r\f\v]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?[ \t\n\r\f\v]*"
)
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_ZERO = Decimal(0).quantize(_QUANTUM)
_SPACE = " \t\n\r\f\v"


def _cost(value: Any) -> Decimal | None:
    """The row's cost, rounded to the ledger's 10 places as the databases round it; None
    (unpriced) when it has none, or none that is an amount: ``NaN``, text not written as an
    amount (:data:`AMOUNT_TEXT`), or a size no ledger column holds (over $1e10: no call of ours
    costs that, and counted it would pass every budget at once and for good, see
    docs/ledger.md). The ``spend_calls`` view reads a cost alike on both dialects."""
    if isinstance(value, str):
        written = AMOUNT_TEXT.fullmatch(value)
        if written is None:
            return None
        exponent, text = written.group(1) or "", value.strip(_SPACE)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        exponent, text = "", str(value)
    else:
        return None
    try:
        cost = Decimal(text)
    except InvalidOperation:  # an exponent past Decimal's: far below the last place, or huge
        return _ZERO if exponent.startswith("-") else None
    if not cost.is_finite() or cost.copy_abs() > COST_BOUND + 1:
        return None
    cost = cost.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    return cost if cost.copy_abs() <= COST_BOUND else None


def quarantined_cost(calls: Iterable[QuarantinedCall]) -> Decimal:
    """What the calls cost together (unpriced ones count nothing)."""
    return sum((c.cost_usd for c in calls if c.cost_usd is not None), Decimal(0))
