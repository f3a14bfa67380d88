"""Caller metadata holding NaN or an infinity (``metadata={"score": float("nan")}``) is not
JSON: the outbox's encoder (PostgreSQL ledgers, and any ledger given ``outbox_dir=``) refused the
row, and the writer logged it as "cannot be stored" and dropped it, so the call's spend was
never recorded. Such values are kept as text (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), as
other values JSON has no form for are, and the row is written on every path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.ledger_support import ids_in, make_event, open_ledger
from tracking.integration import CallStart
from tracking.integrations.sql import spend_logs
from tracking.integrations.sql._intents import intent_line, intent_line_row

METADATA = {
    "score": math.nan,
    "ceiling": math.inf,
    "nested": {"floor": -math.inf, "ok": 1.5},
    "values": [1, math.nan],
}
AS_TEXT = {
    "score": "NaN",
    "ceiling": "Infinity",
    "nested": {"floor": "-Infinity", "ok": 1.5},
    "values": [1, "NaN"],
}


@pytest.mark.parametrize("target", ["sqlite", "sqlite-with-outbox", "postgres"])
def test_a_row_whose_metadata_holds_nan_or_infinity_is_written_not_dropped(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    """The SQLite file written directly, the same through an outbox, and PostgreSQL (always
    through its outbox)."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    if target == "postgres":
        ledger_url: str = request.getfixturevalue("postgres_url")
    else:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    options = {"outbox_dir": tmp_path / "own-outbox"} if target == "sqlite-with-outbox" else {}
    ledger = open_ledger(ledger_url, mode="durable", **options)
    try:
        ledger.on_end(make_event(request_id="nan-1", metadata=METADATA))
        ledger.on_end(make_event(request_id="plain-1"))
        assert ledger.flush(10)
        assert ids_in(ledger.engine) == {"nan-1", "plain-1"}
        assert ledger.rejected_rows == 0 and ledger.quarantined_rows == 0
        with ledger.engine.connect() as conn:
            stored = conn.execute(
                sa.select(spend_logs.c.metadata).where(spend_logs.c.request_id == "nan-1")
            ).scalar_one()
    finally:
        ledger.shutdown(10)
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored == AS_TEXT


def test_an_intent_whose_metadata_holds_nan_is_written_and_read_back() -> None:
    """The intent written before the call is sent: refused, it left no row for a crash."""
    from datetime import UTC, datetime

    from tests.conftest import make_png
    from tracking.request import parse_call

    request, options = parse_call(
        model="gpt-image-2", prompt="a hat", image=make_png(), api_key="sk-x", metadata=METADATA
    )
    call = CallStart("req-nan", "image_edit", request, options, "h", datetime.now(UTC))
    assert intent_line_row(intent_line(call))["metadata"] == AS_TEXT
