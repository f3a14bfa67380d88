"""Create the spend_calls view (every call once, quarantined ones included); spend_daily reads it.

A row the database refused for good sits in ``ledger_quarantine`` as JSON text; the call was
billed all the same. ``spend_daily`` and the SQL Grafana dashboard read ``spend_logs`` only, so
such calls were missing from them. ``spend_calls`` holds one row per call, wherever its row is:

* the rows of ``spend_logs``, except an intent's ``incomplete`` row (an estimate) whose call's
  own row is in the quarantine;
* the quarantined calls, read from their JSON in the database, one per request id (its own row
  rather than its intent's, else the oldest), none whose request id ``spend_logs`` holds (a
  replay that stopped before removing the row from the quarantine) unless ``spend_logs`` holds
  only its intent: the rule of ``tracking.integrations.sql.quarantined_calls(over_intents=True)``.

Its ``quarantined`` column is 1 for a call read from the quarantine. A line that is no JSON object
is no call; a value of the wrong JSON type reads as none (a count as 0); a cost that is no finite
amount (``"NaN"``, text) is unpriced (NULL); a time without an offset is UTC. PostgreSQL reads
the lines through three small functions that return NULL instead of failing on a bad value
(``tracking_json_object``, ``tracking_amount``, ``tracking_utc_time``); SQLite through its JSON
functions (SQLite 3.38 or later, or a build with JSON1, with window functions: 3.25 or later).

``spend_daily`` is made again over ``spend_calls``, with a ``quarantined_requests`` column.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The view's columns, frozen here (a migration never changes with the code; the reports name
# them in tracking.integrations.sql._schema.spend_calls).
_TEXT = (
    "request_id",
    "status",
    "call_type",
    "cost_source",
    "model",
    "served_model",
    "provider",
    "end_user",
    "api_key_hash",
    "key_alias",
    "team",
)
_COUNTS = ("images_returned", "output_tokens", "total_tokens")
_COLUMNS = ("start_time", *_TEXT, *_COUNTS, "cost_usd")

_POSTGRES_FUNCTIONS = (
    """
    CREATE FUNCTION tracking_json_object(line text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE doc jsonb;
    BEGIN
        doc := line::jsonb;
        IF jsonb_typeof(doc) = 'object' THEN RETURN doc; END IF;
        RETURN NULL;
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION tracking_amount(value jsonb) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE amount numeric;
    BEGIN
        IF jsonb_typeof(value) NOT IN ('number', 'string') THEN RETURN NULL; END IF;
        amount := btrim(value #>> '{}')::numeric;
        IF amount::text IN ('NaN', 'Infinity', '-Infinity') THEN RETURN NULL; END IF;
        RETURN round(amount, 10);
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION tracking_utc_time(value jsonb) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE AS $$
    DECLARE t text;
    BEGIN
        IF jsonb_typeof(value) <> 'string' THEN RETURN NULL; END IF;
        t := value #>> '{}';
        IF t ~ '[T ][0-9]{2}:[0-9]{2}.*(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN
            RETURN t::timestamptz;
        END IF;
        RETURN t::timestamp AT TIME ZONE 'UTC';
    EXCEPTION WHEN others THEN RETURN NULL;
    END $$
    """,
)
_POSTGRES_FUNCTION_NAMES = (
    "tracking_json_object(text)",
    "tracking_amount(jsonb)",
    "tracking_utc_time(jsonb)",
)


def _postgres_fields() -> tuple[str, dict[str, str]]:
    doc = "tracking_json_object(line)"
    fields = {
        name: f"CASE WHEN jsonb_typeof(doc -> '{name}') = 'string' THEN doc ->> '{name}' END"
        for name in _TEXT
    }
    for name in _COUNTS:
        fields[name] = (
            f"CASE WHEN jsonb_typeof(doc -> '{name}') = 'number' "
            f"AND doc ->> '{name}' ~ '^-?[0-9]{{1,18}}$' THEN (doc ->> '{name}')::bigint "
            "ELSE 0 END"
        )
    fields["cost_usd"] = "tracking_amount(doc -> 'cost_usd')"
    fields["start_time"] = "tracking_utc_time(doc -> 'start_time')"
    return doc, fields


def _sqlite_fields() -> tuple[str, dict[str, str]]:
    doc = "CASE WHEN json_valid(line) AND json_type(line) = 'object' THEN line END"
    fields = {
        name: f"CASE WHEN json_type(doc, '$.{name}') = 'text' "
        f"THEN json_extract(doc, '$.{name}') END"
        for name in _TEXT
    }
    for name in _COUNTS:
        fields[name] = (
            f"CASE WHEN json_type(doc, '$.{name}') = 'integer' "
            f"THEN json_extract(doc, '$.{name}') ELSE 0 END"
        )
    # a number, or text of digits, signs, points and exponents (with a digit): as REAL
    amount = "trim(json_extract(doc, '$.cost_usd'))"
    fields["cost_usd"] = (
        "CASE json_type(doc, '$.cost_usd') "
        "WHEN 'integer' THEN json_extract(doc, '$.cost_usd') "
        "WHEN 'real' THEN json_extract(doc, '$.cost_usd') "
        f"WHEN 'text' THEN CASE WHEN {amount} GLOB '*[0-9]*' "
        f"AND NOT {amount} GLOB '*[^0-9.eE+-]*' THEN CAST({amount} AS REAL) END END"
    )
    # spend_logs' own form: UTC wall time with six fractional digits (text order is time order)
    when = "json_extract(doc, '$.start_time')"
    fields["start_time"] = (
        f"CASE WHEN json_type(doc, '$.start_time') = 'text' "
        f"AND strftime('%Y-%m-%d %H:%M:%S', {when}) IS NOT NULL "
        f"THEN strftime('%Y-%m-%d %H:%M:%S', {when}) || '.' || "
        f"CASE WHEN substr({when}, 20, 1) = '.' AND substr({when}, 21, 6) NOT GLOB '*[^0-9]*' "
        f"AND length(substr({when}, 21, 6)) = 6 THEN substr({when}, 21, 6) ELSE '000000' END END"
    )
    return doc, fields


def _calls_view(dialect: str) -> str:
    doc, fields = _postgres_fields() if dialect == "postgresql" else _sqlite_fields()
    picked = ",\n            ".join(f"{fields[name]} AS {name}" for name in _COLUMNS)
    listed = ", ".join(_COLUMNS)
    logged = ", ".join(f"s.{name}" for name in _COLUMNS)
    kept = ", ".join(f"k.{name}" for name in _COLUMNS)
    key = "COALESCE(request_id, 'quarantine row ' || CAST(id AS TEXT))"
    # PostgreSQL would inline ``parsed`` and parse each line once per field
    once = "MATERIALIZED " if dialect == "postgresql" else ""
    # Every interpolation is a constant of this module: nothing here comes from outside.
    return f"""
        CREATE VIEW spend_calls AS
        WITH parsed AS {once}(
            SELECT id, {doc} AS doc FROM ledger_quarantine
        ), fields AS (
            SELECT id,
            {picked}
            FROM parsed WHERE doc IS NOT NULL
        ), ranked AS (
            SELECT id, {listed}, ROW_NUMBER() OVER (
                PARTITION BY {key}
                ORDER BY CASE WHEN status = 'incomplete' THEN 1 ELSE 0 END, id
            ) AS pick
            FROM fields
        ), kept AS (
            SELECT {listed} FROM ranked WHERE pick = 1
        )
        SELECT {logged}, 0 AS quarantined
        FROM spend_logs AS s
        WHERE NOT (s.status = 'incomplete' AND EXISTS (
            SELECT 1 FROM kept AS k
            WHERE k.request_id = s.request_id AND COALESCE(k.status, '') <> 'incomplete'
        ))
        UNION ALL
        SELECT {kept}, 1 AS quarantined
        FROM kept AS k
        WHERE NOT EXISTS (
            SELECT 1 FROM spend_logs AS s
            WHERE s.request_id = k.request_id
            AND NOT (s.status = 'incomplete' AND COALESCE(k.status, '') <> 'incomplete')
        )
        """  # noqa: S608


_DAY = {
    "postgresql": "CAST(start_time AT TIME ZONE 'UTC' AS DATE)",
    "sqlite": "date(start_time)",
}


def _daily_view(source: str, dialect: str, *, quarantined: bool) -> str:
    day = _DAY[dialect]
    extra = ",\n            SUM(quarantined) AS quarantined_requests" if quarantined else ""
    return f"""
        CREATE VIEW spend_daily AS
        SELECT
            {day} AS day,
            end_user,
            model,
            COUNT(*) AS requests,
            SUM(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) AS failures,
            SUM(images_returned) AS images,
            COALESCE(SUM(cost_usd), 0) AS cost_usd,
            SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_requests{extra}
        FROM {source}
        GROUP BY {day}, end_user, model
        """  # noqa: S608


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for function in _POSTGRES_FUNCTIONS:
            op.execute(function)
    op.execute("DROP VIEW spend_daily")
    op.execute(_calls_view(dialect))
    op.execute(_daily_view("spend_calls", dialect, quarantined=True))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW spend_daily")
    op.execute("DROP VIEW spend_calls")
    op.execute(_daily_view("spend_logs", dialect, quarantined=False))
    if dialect == "postgresql":
        for name in _POSTGRES_FUNCTION_NAMES:
            op.execute(f"DROP FUNCTION {name}")
