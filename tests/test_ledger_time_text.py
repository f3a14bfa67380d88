"""The ledger's timestamps as text: the outbox's and intents' ISO-8601 (``wire_time``) and
SQLite's UTC wall time (``sqlite_values``) are ``datetime.isoformat``'s own text, though a
UTC minute's part is formatted once and kept (the proxy writes three timestamps a call)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tracking.integrations.sql._codec import COLUMNS, sqlite_values, wire_time


class _Stamp(datetime):
    """A datetime subclass that writes itself otherwise: never taken for a plain one."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return "stamp:" + super().isoformat(sep, timespec)


def _instants() -> list[datetime]:
    chosen = random.Random(20261207)
    instants = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 12, 7, 9, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 9, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 7, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    for _ in range(2_000):
        seconds = chosen.uniform(0, 4_000_000_000)
        instant = datetime.fromtimestamp(seconds, UTC)
        instants.append(instant.replace(microsecond=chosen.choice([0, 1, 999_999, 500_000])))
        instants.append(instant)
    return instants


def _sqlite_text(value: datetime) -> str:
    """A time column's SQLite parameter, as the row's encoder writes it."""
    index = COLUMNS.index("start_time")
    values: list[object] = [None] * len(COLUMNS)
    values[index] = value
    return str(sqlite_values(values)[index])


@pytest.mark.parametrize("offset", [None, timedelta(hours=5, minutes=30), timedelta(hours=-8)])
def test_times_are_written_as_isoformat_writes_them(offset):
    for instant in _instants():
        if offset is not None and not 1 < instant.year < 9999:
            continue  # no local time there: the date would leave datetime's range
        value = instant if offset is None else instant.astimezone(timezone(offset))
        assert wire_time(value) == value.isoformat()
        # SQLAlchemy's SQLite DATETIME: the UTC wall time, microseconds always
        assert _sqlite_text(value) == instant.isoformat(" ", "microseconds")[:-6]
        assert wire_time(value) == value.isoformat()  # a minute already kept


def test_a_datetime_subclass_writes_itself():
    stamp = _Stamp(2026, 12, 7, 9, 1, 2, 345_678, tzinfo=UTC)
    assert wire_time(stamp) == "stamp:2026-12-07T09:01:02.345678+00:00"
    assert _sqlite_text(stamp) == "stamp:2026-12-07 09:01:02.345678"


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        wire_time(datetime(2026, 12, 7, 9, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        _sqlite_text(datetime(2026, 12, 7, 9, 1, 2))
