"""How a ledger row travels: JSON text in the outbox, parameters for the target's driver.

A row (the dict :func:`~tracking.integrations.sql._schema.event_to_row` makes) is committed to the
local outbox as one line of compact JSON: money as a decimal string (never a float), timestamps as
ISO-8601 with their UTC offset, JSON columns nested as they are. :func:`decode_row` restores the
``Decimal`` and ``datetime`` values, so a row read back is equal to the row written.

Inserts bypass SQLAlchemy's per-row parameter processing, which costs more than the database
itself at ledger rates: :func:`sqlite_params` builds the tuple SQLAlchemy would have bound for
SQLite (money as REAL, UTC wall time as text, JSON as text), so rows written either way are
identical; for PostgreSQL a whole batch of JSON lines is sent as one ``jsonb`` parameter and the
server spreads it over the columns (:data:`POSTGRES_INSERT`), with ``NUMERIC`` and
``timestamptz`` parsed by PostgreSQL itself.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from ._columns import columns_of_kind, compile_reader
from ._schema import COLUMN_NAMES, plain_json

__all__ = [
    "COLUMNS",
    "POSTGRES_INSERT",
    "SQLITE_INSERT",
    "decode_row",
    "encode_plain",
    "encode_row",
    "encode_values",
    "event_sqlite_params",
    "line_of_sqlite_params",
    "line_request_id",
    "postgres_batch",
    "readable_line",
    "sqlite_insert_rows",
    "sqlite_params",
    "sqlite_values",
    "wire_time",
]

COLUMNS = COLUMN_NAMES
_MONEY = frozenset(columns_of_kind("money"))
_TIMES = frozenset(columns_of_kind("time"))
_JSON = frozenset(columns_of_kind("json"))
_TYPED = tuple(c for c in COLUMNS if c in _MONEY or c in _TIMES)
_KINDS = tuple(
    "money" if c in _MONEY else "time" if c in _TIMES else "json" if c in _JSON else ""
    for c in COLUMNS
)

# The statements are built from our own column names, never from data.
_column_list = ", ".join(f'"{c}"' for c in COLUMNS)
#: A row already there is kept (a replay is a no-op), unless it is the ``incomplete`` row a
#: dead process's intent left (tracking.integrations.sql._intents): the call's own row then
#: replaces it.
ON_CONFLICT = (
    "ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f'"{c}" = excluded."{c}"' for c in COLUMNS if c != "request_id")
    + " WHERE spend_logs.status = 'incomplete'"
)
SQLITE_INSERT = (
    f"INSERT INTO spend_logs ({_column_list}) VALUES ({', '.join('?' for _ in COLUMNS)}) "  # noqa: S608
    + ON_CONFLICT
)


@functools.lru_cache(maxsize=64)
def sqlite_insert_rows(rows: int) -> str:
    """:data:`SQLITE_INSERT` for ``rows`` rows in one statement (their parameters in a row)."""
    one = f"({', '.join('?' for _ in COLUMNS)})"
    return (
        f"INSERT INTO spend_logs ({_column_list}) VALUES {', '.join([one] * rows)} "  # noqa: S608
        + ON_CONFLICT
    )


#: One statement per batch: ``%s`` is a JSON array of encoded rows.
POSTGRES_INSERT = (
    f"INSERT INTO spend_logs ({_column_list}) SELECT {_column_list} "  # noqa: S608
    "FROM jsonb_populate_recordset(NULL::spend_logs, %s::jsonb) " + ON_CONFLICT
)


#: The smallest amount NUMERIC(20, 10) holds. A nonzero cost below it (a custom price of a
#: fraction of a nano-dollar) is stored as it, signed, never rounded to a free call.
MONEY_QUANTUM = Decimal("1E-10")
_QUANTUM_FLOAT = 1e-10


def _wire(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"ledger money must be finite, not {value}")
        if value and abs(value) < MONEY_QUANTUM:
            return str(MONEY_QUANTUM.copy_sign(value))
        return str(value)
    if isinstance(value, datetime):
        return wire_time(value)
    return str(value)  # caller metadata is already plain; anything else is kept as text


def one_shot(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, with the C encoder built once instead of at every call.

    The same text (a test holds them equal). No circular-reference check: ledger values are
    fresh copies (``plain_json``) that cannot contain a cycle. Falls back to ``encode`` where
    the C encoder is missing or takes other arguments.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None or getattr(encoder, "indent", None) is not None:  # json: no C then
        return encoder.encode
    try:
        iterencode = make(
            None,  # markers: no circular check
            encoder.default,
            encode_basestring_ascii if encoder.ensure_ascii else encode_basestring,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
    except TypeError:
        return encoder.encode

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_wire, allow_nan=False)
_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), default=str)
_encode_line = one_shot(_ENCODER)
_encode_json = one_shot(_JSON_TEXT)
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_MONEY_AT = tuple(_INDEX[c] for c in COLUMNS if c in _MONEY)
_TIMES_AT = tuple(_INDEX[c] for c in COLUMNS if c in _TIMES)
_JSON_AT = tuple(_INDEX[c] for c in COLUMNS if c in _JSON)


def encode_row(row: Mapping[str, Any]) -> str:
    """The row as one line of JSON; ValueError for a value the ledger cannot store."""
    # Converting the few typed values first keeps the whole encode inside the C encoder.
    plain = dict(row)
    for name in _MONEY | _TIMES:
        value = plain.get(name)
        if value is not None:
            plain[name] = _wire(value)
    return _encode_line(plain)


def readable_line(row: Mapping[str, Any]) -> str:
    """A row :func:`encode_row` refuses (a naive timestamp, a non-finite amount or latency), as
    JSON text for the quarantine: what cannot be encoded is written as its text, for a person to
    see and repair; never for a query to sum. A non-finite float is written as a string
    (``"NaN"``), as caller metadata is: a bare ``NaN`` is no JSON, and the quarantine's readers
    (the ``spend_calls`` view on both dialects) took such a line for no call at all."""
    plain = {
        name: json.dumps(value) if isinstance(value, float) and not math.isfinite(value) else value
        for name, value in row.items()
    }
    return json.dumps(plain, separators=(",", ":"), default=str)


def encode_plain(value: Any) -> str:
    """``value`` (plain JSON, ``Decimal`` and aware ``datetime`` values) as compact JSON text."""
    return _encode_line(value)


#: A UTC minute's text as ``datetime.isoformat`` writes it (``YYYY-MM-DDTHH:MM:``, and with a
#: space for :func:`_sqlite_time`), by the minute's number: formatted once per minute, as
#: ``isoformat`` costs about 13,000 instructions on Python 3.11 and a call writes three
#: timestamps on the proxy's event loop (its intent's start, its row's start and end); the
#: seconds and microseconds are added to it for about 5,000.
_WIRE_MINUTES: dict[int, str] = {}
_SQLITE_MINUTES: dict[int, str] = {}
#: Past this many minutes (rows of other times replayed) a cache starts again.
_MINUTES_KEPT = 256
_SECONDS = tuple(f"{second:02d}" for second in range(60))


def _minute_text(minutes: dict[int, str], value: datetime, separator: str) -> str:
    """``value``'s minute (a UTC ``datetime``) as ``isoformat`` begins it, kept in ``minutes``."""
    key = value.toordinal() * 1440 + value.hour * 60 + value.minute
    text = minutes.get(key)
    if text is None:
        if len(minutes) >= _MINUTES_KEPT:
            minutes.clear()
        text = minutes[key] = value.isoformat(separator)[:17]
    return text


def wire_time(value: datetime) -> str:
    """An aware timestamp as :func:`encode_row` writes it; ValueError for a naive one."""
    if value.tzinfo is not UTC or type(value) is not datetime:
        if value.tzinfo is None:
            raise ValueError("ledger timestamps must be timezone-aware")
        return value.isoformat()
    # value.isoformat(), the minute's text formatted once (_WIRE_MINUTES)
    minute = _WIRE_MINUTES.get(value.toordinal() * 1440 + value.hour * 60 + value.minute)
    if minute is None:
        minute = _minute_text(_WIRE_MINUTES, value, "T")
    if microsecond := value.microsecond:
        return f"{minute}{_SECONDS[value.second]}.{str(microsecond + 1_000_000)[1:]}+00:00"
    return f"{minute}{_SECONDS[value.second]}+00:00"


def encode_values(values: Iterable[Any]) -> str:
    """:func:`encode_row` for a row's values in column order (``event_values``)."""
    row = dict(zip(COLUMNS, values, strict=True))  # a fresh dict: converted in place
    for name in _TYPED:
        value = row[name]
        if value is not None:
            row[name] = _wire(value)
    return _encode_line(row)


def decode_row(text: str) -> dict[str, Any]:
    """The row :func:`encode_row` wrote, with its ``Decimal`` and ``datetime`` values restored."""
    row: dict[str, Any] = json.loads(text)
    for name in _MONEY:
        value = row.get(name)
        if value is not None:
            row[name] = Decimal(value)
    for name in _TIMES:
        value = row.get(name)
        if value is not None:
            row[name] = datetime.fromisoformat(value)
    return row


def line_request_id(line: str) -> str:
    """The request id of an encoded row, for messages; never raises."""
    try:
        return str(json.loads(line).get("request_id"))
    except (ValueError, AttributeError):
        return "(unreadable)"


def line_of_sqlite_params(params: Sequence[Any]) -> str:
    """The outbox line of a row given as :func:`sqlite_params` made it (to quarantine it)."""
    row = dict(zip(COLUMNS, params, strict=True))
    for name in _MONEY:
        value = row[name]
        if isinstance(value, float):
            row[name] = Decimal(repr(value))
    for name in _TIMES:
        value = row[name]
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value).replace(tzinfo=UTC)
    for name in _JSON:
        value = row[name]
        if isinstance(value, str):
            row[name] = json.loads(value)
    try:
        return encode_row(row)
    except ValueError:
        # A value no line holds as it is (a hand-made event's NaN latency, which SQLite stored
        # as NULL and so refused): kept as its text, never dropped (until 2026-12-06 the
        # quarantine could not take the row, and it was logged "not recorded").
        return readable_line(row)


def _sqlite_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # SQLAlchemy's SQLite DATETIME format: microseconds always, so text order is time order;
    # the UTC wall time, i.e. without the "+00:00" a UTC value's isoformat ends with.
    if type(value) is not datetime:
        return value.isoformat(" ", "microseconds")[:-6]
    # that text, the minute's part formatted once (_SQLITE_MINUTES)
    minute = _SQLITE_MINUTES.get(value.toordinal() * 1440 + value.hour * 60 + value.minute)
    if minute is None:
        minute = _minute_text(_SQLITE_MINUTES, value, " ")
    return f"{minute}{_SECONDS[value.second]}.{str(value.microsecond + 1_000_000)[1:]}"


def _json_text(value: Any) -> str:
    if not value:  # the common empty cases, without a trip through the encoder
        return "null" if value is None else "[]" if isinstance(value, list) else _encode_json(value)
    return _encode_json(value)


def sqlite_params(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parameters of :data:`SQLITE_INSERT` for one row, as SQLAlchemy would bind them."""
    return sqlite_values(map(row.get, COLUMNS))


def sqlite_values(values: Iterable[Any]) -> tuple[Any, ...]:
    """:func:`sqlite_params` for a row's values in column order (``event_values``)."""
    params: list[Any] = list(values)
    for i in _MONEY_AT:
        params[i] = _sqlite_money(params[i])
    for i in _TIMES_AT:
        if params[i] is not None:
            params[i] = _sqlite_time(params[i])
    for i in _JSON_AT:  # None is stored as JSON null, as SQLAlchemy does
        params[i] = _json_text(params[i])
    return tuple(params)


#: The size a ``NUMERIC(20, 10)`` cost stays below.
_MONEY_LIMIT = 1e10
#: The exponent of ``NUMERIC(20, 10)``'s last digit (``MONEY_QUANTUM``).
_MONEY_EXPONENT = MONEY_QUANTUM.as_tuple().exponent


def _sqlite_money(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)  # a huge finite Decimal becomes inf: "below", not "finite", below
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(number)
    if not finite:  # SQLite would store NaN as NULL: unpriced, silently
        raise ValueError(f"ledger money must be finite, not {value}")
    if abs(number) >= _MONEY_LIMIT:  # what NUMERIC(20,10) refuses on PostgreSQL, refused alike
        raise ValueError(f"ledger money must be below {_MONEY_LIMIT:.0e} in size, not {value}")
    if number and abs(number) < _QUANTUM_FLOAT:  # as on PostgreSQL: never rounded to 0
        return math.copysign(_QUANTUM_FLOAT, number)
    if isinstance(value, Decimal) and value.as_tuple().exponent < _MONEY_EXPONENT:  # type: ignore[operator]
        # Rounded to NUMERIC(20, 10)'s scale as PostgreSQL rounds (half away from zero) before
        # it becomes a float: the float of the unrounded amount could round the other way in
        # the ledger's exact sums, which then disagreed with PostgreSQL's (until 2026-12-05).
        return float(value.quantize(MONEY_QUANTUM, ROUND_HALF_UP))
    return number


#: ``sqlite_values(event_values(event))`` in one step: the SQLite ledger's hot path, made from
#: the same column definitions. ValueError for a naive timestamp.
event_sqlite_params = compile_reader(
    "event_sqlite_params",
    {"money": "_sqlite_money", "time": "_sqlite_time", "json": "_json_text"},
    {
        "plain_json": plain_json,
        "_sqlite_money": _sqlite_money,
        "_sqlite_time": _sqlite_time,
        "_json_text": _json_text,
    },
)


#: A NUL as the JSON encoder escapes it, after an even run of backslashes (each pair is an
#: escaped backslash: the six characters of a caller's literal backslash-u0000 are left alone).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


#: A UTF-16 surrogate as the JSON encoder escapes it, after an even run of backslashes: a
#: high one followed by a low one (a character past U+FFFF, kept) or a lone one (replaced).
_SURROGATE_ESCAPE = re.compile(
    r"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _lone_surrogate_replaced(match: re.Match[str]) -> str:
    escape = match.group(2)
    return match.group(0) if len(escape) == 12 else match.group(1) + "\\ufffd"


def postgres_batch(lines: Iterable[str]) -> str:
    """The JSON array parameter of :data:`POSTGRES_INSERT` for encoded rows.

    PostgreSQL stores no NUL character in ``text`` or ``jsonb`` (SQLSTATE 22P05), and its JSON
    takes no lone UTF-16 surrogate (22P02; Python holds one where text was decoded with
    ``surrogateescape``, such as a file name in the caller's metadata): each is written as
    U+FFFD (the replacement character), so the row, and the money it records, goes into
    ``spend_logs`` instead of the quarantine, which no report counts. The outbox line keeps
    them as they were.
    """
    batch = "[" + ",".join(lines) + "]"
    if "\\u0000" in batch:
        batch = _NUL_ESCAPE.sub(r"\1\\ufffd", batch)
    if "\\ud" in batch or "\\uD" in batch:
        batch = _SURROGATE_ESCAPE.sub(_lone_surrogate_replaced, batch)
    return batch
