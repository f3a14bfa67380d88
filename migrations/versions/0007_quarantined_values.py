"""Read a quarantined call's cost and start time alike everywhere: each only when written as one.

``spend_calls`` (migration 0006) reads a quarantined call's ``cost_usd`` from its JSON. A cost
kept as text that is no amount must be unpriced (NULL), as PostgreSQL's view and the Python
reader (:mod:`tracking.integrations.sql._quarantined_calls`, what budgets start from) take it. On
SQLite the view cast any text of digits, points, signs and exponents to REAL, and SQLite's CAST
reads the longest start that is a number: ``"1e"`` read as $1, ``"1.2.3"`` as $1.2, ``"1e5e"``
as $100,000, ``"-"`` as $0. The three readers now take the same text as an amount, whole:

    white space, [+-], digits with at most one point (at least one digit), then
    optionally e or E, [+-] and digits, white space        (white space: space \\t \\n \\r \\f \\v)

SQLite: ``spend_calls`` is made again (and ``spend_daily`` over it) with that test before the
cast. PostgreSQL: ``tracking_amount`` tests the text the same way, where it relied on
``numeric``'s own reading before, which takes what the others do not (``"Infinity"``, and after
PostgreSQL 16 ``"1_000"`` and ``"0x1F"``); a text amount past what ``numeric`` reads (an exponent
beyond 16383 digits either way) is 0 when the exponent is negative (far below the ledger's last
place, as the others round it) and unpriced otherwise. It also reads a line holding a NUL or a
lone UTF-16 surrogate (escaped, ``\\u0000``, ``\\ud800``), which ``jsonb`` refuses whole: such a
call was no call in PostgreSQL's reports while budgets and SQLite counted it; its text now reads
with U+FFFD in their place, as ``spend_logs`` stores such text on PostgreSQL.

A start time is likewise a time only when written in ISO 8601 as the ledger writes it (below:
``_TIME_PATTERN``): PostgreSQL's ``tracking_utc_time`` read ``"now"`` (a call on a new day each
day), ``"infinity"`` (every report by day failed: a date past year 10,000) and ``"May 4 2026"``;
SQLite's view read ``"now"`` and Julian days, and gave ``"2026-02-30"`` back, which failed
reading the view; the Python reader took ``"20260504T120000Z"`` and ISO week dates.

The views of 0006 are otherwise unchanged: this migration takes them from 0006's own module (a
migration is frozen once released, so that one never changes), replacing only SQLite's cost
and time expressions, and the way down puts 0006's back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _revision_0006() -> ModuleType:
    """Migration 0006's module, read from its file beside this one (frozen like this one)."""
    path = Path(__file__).with_name("0006_spend_calls_view.py")
    spec = importlib.util.spec_from_file_location("tracking_ledger_migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The white space an amount may have around it, on every reader.
_SPACE_SQLITE = "' ' || char(9, 10, 11, 12, 13)"
_AMOUNT_PATTERN = (
    r"^[ \t\n\r\f\v]*([+-]?([0-9]+[.]?[0-9]*|[.][0-9]+))([eE]([+-]?[0-9]+))?[ \t\n\r\f\v]*$"
)


def _unsigned(text: str) -> str:
    return f"(CASE WHEN substr({text}, 1, 1) IN ('+', '-') THEN substr({text}, 2) ELSE {text} END)"


def _sqlite_cost() -> str:
    """``cost_usd`` of a quarantined line (``doc``) on SQLite: a JSON number as it is, text only
    when it is written as an amount (the module docstring), else NULL."""
    amount = f"trim(json_extract(doc, '$.cost_usd'), {_SPACE_SQLITE})"
    # Where the exponent starts: with both an e and an E the sum points past both, and the
    # mantissa (holding one) is refused.
    at = f"(instr({amount}, 'e') + instr({amount}, 'E'))"
    before = f"(CASE WHEN {at} > 0 THEN substr({amount}, 1, {at} - 1) ELSE {amount} END)"
    mantissa = _unsigned(before)
    exponent = _unsigned(f"(CASE WHEN {at} > 0 THEN substr({amount}, {at} + 1) ELSE '0' END)")
    written = (
        f"{mantissa} GLOB '*[0-9]*' AND NOT {mantissa} GLOB '*[^0-9.]*' "
        f"AND NOT {mantissa} GLOB '*.*.*' "
        f"AND {exponent} GLOB '[0-9]*' AND NOT {exponent} GLOB '*[^0-9]*'"
    )
    return (
        "CASE json_type(doc, '$.cost_usd') "
        "WHEN 'integer' THEN json_extract(doc, '$.cost_usd') "
        "WHEN 'real' THEN json_extract(doc, '$.cost_usd') "
        f"WHEN 'text' THEN CASE WHEN {written} THEN CAST({amount} AS REAL) END END"
    )


_POSTGRES_AMOUNT = f"""
    CREATE OR REPLACE FUNCTION tracking_amount(value jsonb) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE
        amount numeric;
        written text[];
    BEGIN
        IF jsonb_typeof(value) = 'number' THEN
            RETURN round((value #>> '{{}}')::numeric, 10);
        END IF;
        IF jsonb_typeof(value) <> 'string' THEN RETURN NULL; END IF;
        written := regexp_match(value #>> '{{}}', '{_AMOUNT_PATTERN}');
        IF written IS NULL THEN RETURN NULL; END IF;
        BEGIN
            amount := (written[1] || COALESCE('e' || written[4], ''))::numeric;
        EXCEPTION WHEN others THEN
            -- past what numeric reads: far below the last place (0), or huge (unpriced)
            IF written[4] LIKE '-%' THEN RETURN 0; END IF;
            RETURN NULL;
        END;
        RETURN round(amount, 10);
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """

# A NUL, or a lone UTF-16 surrogate, escaped after an even run of backslashes (each pair an
# escaped backslash): jsonb takes neither, so each is read as U+FFFD (a high surrogate followed
# by a low one is a character past U+FFFF, kept), as tracking.integrations.sql._codec writes
# such text into spend_logs on PostgreSQL.
_ESCAPED = r"(?<!\\)((\\\\)*)"
_HIGH = r"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW = r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_POSTGRES_JSON_OBJECT = rf"""
    CREATE OR REPLACE FUNCTION tracking_json_object(line text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE doc jsonb;
    BEGIN
        BEGIN
            doc := line::jsonb;
        EXCEPTION WHEN others THEN
            line := regexp_replace(line, '{_ESCAPED}\\u0000', '\1\\ufffd', 'g');
            line := regexp_replace(line, '{_ESCAPED}{_HIGH}(?!{_LOW})', '\1\\ufffd', 'g');
            line := regexp_replace(line, '{_ESCAPED}(?<!{_HIGH}){_LOW}', '\1\\ufffd', 'g');
            doc := line::jsonb;
        END;
        IF jsonb_typeof(doc) = 'object' THEN RETURN doc; END IF;
        RETURN NULL;
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """


# A quarantined call's start_time is a time only when written as one, ISO 8601 as the ledger
# writes it (a date alone is its UTC midnight): PostgreSQL read "now", "today", "epoch" and
# "infinity" (which failed every report by day: a date past year 10,000), "May 4 2026" and
# "2026-05-04T12:00:00 PST" (the zone ignored); SQLite read "now" and Julian day numbers, and
# an impossible date ("2026-02-30") as another one; both read a call "now" on each day anew.
_TIME_PATTERN = (
    r"^[12][0-9]{3}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"([.][0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
_POSTGRES_TIME = f"""
    CREATE OR REPLACE FUNCTION tracking_utc_time(value jsonb) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE t text;
    BEGIN
        IF jsonb_typeof(value) <> 'string' THEN RETURN NULL; END IF;
        t := value #>> '{{}}';
        IF t !~ '{_TIME_PATTERN}' THEN RETURN NULL; END IF;
        IF substr(t, 20) ~ '[Z+-]' THEN RETURN t::timestamptz; END IF;  -- with its offset
        RETURN t::timestamp AT TIME ZONE 'UTC';
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """


def _sqlite_time() -> str:
    """``start_time`` of a quarantined line on SQLite: text written as a time (above), as
    ``spend_logs`` holds one (UTC wall time, six fractional digits: text order is time order),
    else NULL."""
    when = "json_extract(doc, '$.start_time')"
    offset = (
        f"(CASE WHEN {when} GLOB '*Z' THEN 'Z' "
        f"WHEN {when} GLOB '*[+-][0-2][0-9]:[0-5][0-9]' AND substr({when}, -5, 2) <= '23' "
        f"THEN substr({when}, -6) ELSE '' END)"
    )
    fraction = f"substr({when}, 20, length({when}) - 19 - length({offset}))"
    day = "'[12][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'"
    clock = "'[T ][0-2][0-9]:[0-5][0-9]:[0-5][0-9]'"
    written = (
        f"json_type(doc, '$.start_time') = 'text' "
        f"AND date(julianday(substr({when}, 1, 10))) IS substr({when}, 1, 10) "
        f"AND ({when} GLOB {day} OR (substr({when}, 1, 19) GLOB {day} || {clock} "
        f"AND substr({when}, 12, 2) <= '23' "
        f"AND ({fraction} = '' OR ({fraction} GLOB '.[0-9]*' AND length({fraction}) <= 7 "
        f"AND NOT substr({fraction}, 2) GLOB '*[^0-9]*'))))"
    )
    return (
        f"CASE WHEN {written} THEN strftime('%Y-%m-%d %H:%M:%S', "
        f"substr({when}, 1, 19) || {offset}) || '.' || "
        f"substr(substr({fraction}, 2) || '000000', 1, 6) END"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for function in (_POSTGRES_AMOUNT, _POSTGRES_JSON_OBJECT, _POSTGRES_TIME):
            op.execute(function)
        return
    before = _revision_0006()
    view = before._calls_view(dialect)
    fields = before._sqlite_fields()[1]
    for name, now in (("cost_usd", _sqlite_cost()), ("start_time", _sqlite_time())):
        assert view.count(fields[name]) == 1, "0006's SQLite view is not as this one knows it"
        view = view.replace(fields[name], now)
    op.execute("DROP VIEW spend_daily")
    op.execute("DROP VIEW spend_calls")
    op.execute(view)
    op.execute(before._daily_view("spend_calls", dialect, quarantined=True))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    before = _revision_0006()
    if dialect == "postgresql":
        for function in before._POSTGRES_FUNCTIONS:  # 0006's three, as they were
            op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
        return
    op.execute("DROP VIEW spend_daily")
    op.execute("DROP VIEW spend_calls")
    op.execute(before._calls_view(dialect))
    op.execute(before._daily_view("spend_calls", dialect, quarantined=True))
