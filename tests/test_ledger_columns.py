"""``spend_logs`` is defined once (``_columns.COLUMNS``): the SQLAlchemy table, the row of an
event, the SQLite parameters and the outbox's typed columns all follow that one list."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.ledger_support import make_event
from tracking.integrations.sql import _codec, _columns
from tracking.integrations.sql._codec import (
    decode_row,
    encode_values,
    event_sqlite_params,
    sqlite_params,
)
from tracking.integrations.sql._columns import COLUMNS, LedgerColumn, UTCDateTime
from tracking.integrations.sql._schema import (
    COLUMN_NAMES,
    event_to_row,
    event_values,
    plain_json,
    spend_logs,
)

_SQL_TYPE_OF_KIND = {"money": sa.Numeric, "time": UTCDateTime, "json": sa.JSON}


def test_the_table_and_the_encoders_follow_one_column_list():
    names = [column.name for column in COLUMNS]
    assert [c.name for c in spend_logs.columns] == names
    assert list(COLUMN_NAMES) == names == list(_codec.COLUMNS)
    assert list(event_to_row(make_event())) == names
    for column in COLUMNS:
        table_column = spend_logs.c[column.name]
        assert table_column.primary_key == column.primary_key
        assert table_column.nullable == (column.nullable and not column.primary_key)
        if column.kind != "plain":
            assert isinstance(table_column.type, _SQL_TYPE_OF_KIND[column.kind]), column.name
    assert {c.name for c in COLUMNS if c.kind == "money"} == _codec._MONEY
    assert {c.name for c in COLUMNS if c.kind == "time"} == _codec._TIMES
    assert {c.name for c in COLUMNS if c.kind == "json"} == _codec._JSON


@pytest.mark.parametrize("index", range(4))
def test_every_column_travels_through_every_encoder(index):
    from tests.test_ledger_durability import _varied_events

    event = _varied_events()[index]
    row = event_to_row(event)
    assert decode_row(encode_values(event_values(event))) == row  # the outbox line
    assert event_sqlite_params(event) == sqlite_params(row)  # the SQLite parameters
    assert len(event_sqlite_params(event)) == len(COLUMNS)


def test_a_column_added_to_the_list_reaches_the_table_and_both_readers(monkeypatch):
    added = LedgerColumn("first_image_ms", "event.time_to_first_image_ms", sql_type=sa.Float)
    money = LedgerColumn("extra_usd", "event.cost_usd", "money")
    monkeypatch.setattr(_columns, "COLUMNS", (*COLUMNS, added, money))
    event = make_event(time_to_first_image_ms=812.0)

    values = _columns.compile_reader("values", {}, {"plain_json": plain_json})(event)
    params = _columns.compile_reader(
        "params", {"money": "float"}, {"plain_json": plain_json, "float": float}
    )(event)
    table = sa.Table("t", sa.MetaData(), *(c.column() for c in _columns.COLUMNS))

    assert values[-2:] == (812.0, event.cost_usd)
    assert params[-1] == float(event.cost_usd)
    assert table.c.first_image_ms.type.__class__ is sa.Float
    assert _columns.columns_of_kind("money")[-1] == "extra_usd"
