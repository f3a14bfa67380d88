"""Helpers for the ledger tests: hand-built events with exact costs, rows a database refuses,
outboxes left behind, and a ledger per dialect."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tracking.events import ImageEditEvent, TokenUsage
from tracking.integrations.sql import SqlLedger, event_to_row, spend_logs
from tracking.integrations.sql._codec import encode_row
from tracking.integrations.sql._engine import outbox_target, resolve_url
from tracking.integrations.sql._outbox import default_outbox_dir, open_own_outbox

BASE_TIME = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def make_event(
    *,
    request_id: str | None = None,
    user: str | None = "alice",
    model: str = "gpt-image-1",
    cost: Decimal | None = Decimal("0.0420000000"),
    start: datetime = BASE_TIME,
    status: str = "success",
    images: int = 1,
    **extra: Any,
) -> ImageEditEvent:
    fields: dict[str, Any] = {
        "request_id": request_id or str(uuid.uuid4()),
        "call_type": "image_edit",
        "status": status,
        "end_user": user,
        "model": model,
        "model_group": model,
        "resolved_model": model,
        "provider": "openai",
        "api_base": "api.example.test",
        "n": images,
        "images_returned": images if status == "success" else 0,
        "size": "1024x1024",
        "quality": "medium",
        "usage": TokenUsage(10, 323, 0, 1056, 1389),
        "cost_usd": cost,
        "cost_per_image_usd": (cost / images) if cost is not None and images else None,
        "cost_source": "table" if cost is not None else "unpriced",
        "start_time": start,
        "end_time": start + timedelta(seconds=2),
        "latency_ms": 2000.0,
        "attempts": 1,
        "error_type": None if status == "success" else "server_error",
        "http_status": 200 if status == "success" else 500,
    }
    fields.update(extra)
    return ImageEditEvent(**fields)


def quarantine_event(engine: sa.engine.Engine, **fields: Any) -> str:
    """Put the row of an event with ``fields`` (``make_event``'s) straight into
    ``ledger_quarantine``, as the writer does with a row the database refused; returns its
    request id (``refused-<uuid>`` unless ``request_id`` is given)."""
    from tracking.integrations.sql._target import SpendLogsInserter

    request_id = fields.pop("request_id", None) or f"refused-{uuid.uuid4()}"
    line = encode_row(event_to_row(make_event(request_id=request_id, **fields)))
    SpendLogsInserter(engine).quarantine([(request_id, line, "DataError [22P05]: refused")])
    return str(request_id)


def hostile_user(length: int = 3000) -> str:
    """Random text that does not compress: over PostgreSQL's 2,704-byte B-tree entry limit."""
    rng = random.Random(18)
    return "".join(chr(rng.randint(0x100, 0x7FF)) for _ in range(length))


def refused_rows(dialect: str) -> list[tuple[str, dict[str, object]]]:
    """``(name, make_event fields)`` of rows the dialect's ``spend_logs`` refuses for good."""
    huge_tokens = TokenUsage(10, 323, 0, 2**70, 2**70)  # out of range for SQLite and PostgreSQL
    rows: list[tuple[str, dict[str, object]]] = [("tokens", {"usage": huge_tokens})]
    if dialect == "postgresql":  # SQLite stores it (a NUL PostgreSQL is given as U+FFFD)
        rows += [("long", {"user": hostile_user()})]
    return rows


def row_line(request_id: str, **fields: object) -> str:
    """The outbox line of an event's row (``make_event`` fields)."""
    return encode_row(event_to_row(make_event(request_id=request_id, **fields)))  # type: ignore[arg-type]


def refused_line(dialect: str = "sqlite") -> str:
    """The outbox line of a row the dialect refuses for good (a token count out of range)."""
    name, fields = refused_rows(dialect)[0]
    return row_line(f"bad-{name}", **fields)


def fresh_sqlite_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of an SQLite ledger file with its tables; outboxes in the test's own folder."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    return url


def leftovers_dir(url: str) -> Path:
    """Where an SQLite ledger keeps the rows its file could not take (and those it refused)."""
    return default_outbox_dir(outbox_target(resolve_url(url)))


def run_sql(url: str, *statements: str) -> None:
    """Run ``statements`` on the database at ``url``, in one transaction."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def postgres_refusal(table: str, sqlstate: str, message: str) -> tuple[str, str]:
    """The statements making PostgreSQL's ``table`` refuse every insert with ``message`` and
    ``sqlstate``: a trigger ``refuse_<table>`` (``DROP TRIGGER refuse_<table> ON <table>``)."""
    name = f"refuse_{table}"
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}'; END $$",
        f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
    )


def close_quarantine(url: str) -> None:
    """Make the database's ``ledger_quarantine`` refuse every row for good (a trigger; on
    PostgreSQL a check violation, SQLSTATE class 23)."""
    if resolve_url(url).get_backend_name() == "sqlite":
        run_sql(
            url,
            "CREATE TRIGGER no_quarantine BEFORE INSERT ON ledger_quarantine "
            "BEGIN SELECT RAISE(ABORT, 'the quarantine is closed'); END",
        )
    else:
        run_sql(url, *postgres_refusal("ledger_quarantine", "23514", "the quarantine is closed"))


def ids_in(engine: sa.Engine) -> set[str]:
    """The request ids in ``spend_logs``."""
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(spend_logs.c.request_id))}


def leave_outbox(directory: Path, lines: Sequence[str]) -> Path:
    """An outbox holding ``lines`` that its process left in ``directory``, unlocked, as a
    process leaves it at shutdown or death: the next ledger claims it. Returns its path."""
    outbox = open_own_outbox(directory)
    try:
        outbox.append(lines)
    finally:
        outbox.close()  # rows pending: the files stay
    return outbox.path


def outbox_with_rejected_rows(
    directory: Path, lines: Sequence[str], name: str = "outbox-999999999.db"
) -> Path:
    """What a process killed after its last row was rejected leaves (or, named
    ``rejected-...``, an outbox set aside): a file with nothing to ship and ``lines`` in its
    ``rejected`` table, unlocked. Returns its path."""
    from tracking.integrations.sql._outbox import _SCHEMA

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            db.execute(statement)
        db.executemany(
            "INSERT INTO rejected (line, reason, rejected_at) VALUES (?, 'refused', NULL)",
            [(line,) for line in lines],
        )
    finally:
        db.close()
    return path


def intent_line_of(request_id: str, *, user: str = "zoe", key_hash: str = "k") -> str:
    """The intent a proxy writes before sending a call (``gpt-image-2``, low quality) for
    ``user`` with the key of hash ``key_hash``, as its intent log holds it."""
    from tests.conftest import make_png
    from tracking.integration import CallStart
    from tracking.integrations.sql._intents import intent_line
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-2",
        prompt="a hat",
        image=make_png(16, 16),
        api_key="sk-x",
        user=user,
        quality="low",
        metadata={"user_api_key_hash": key_hash},
    )
    call = CallStart(request_id, "aimage_edit", request, options, "h", datetime.now(UTC))
    return intent_line(call)


def open_ledger(url: str, **options: Any) -> SqlLedger:
    return SqlLedger(url, auto_migrate=True, **options)


def record_events(url: str, *events: ImageEditEvent) -> None:
    """Write ``events`` into the ledger at ``url`` (migrated if new) and wait until they are
    stored."""
    ledger = open_ledger(url, mode="durable")
    try:
        for event in events:
            ledger.on_end(event)
        assert ledger.flush(30)
    finally:
        ledger.shutdown(10)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> str:
    """A fresh, empty database of each dialect: an SQLite file, then a PostgreSQL database.

    Outboxes (PostgreSQL's) go to the test's own folder, never the user's state directory.
    """
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[SqlLedger]:
    instance = open_ledger(ledger_url)
    yield instance
    instance.shutdown(10)
