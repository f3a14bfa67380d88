"""``tracking migrate`` and ``tracking spend`` against real SQLite files and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.ledger_support import make_event, open_ledger, quarantine_event
from tracking.cli import main
from tracking.integrations.sql import (
    SpendRow,
    create_ledger_engine,
    current_revision,
    head_revision,
)

DAY = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _fill(url: str) -> None:
    ledger = open_ledger(url)
    try:
        for user, model, cost, start in [
            ("alice", "gpt-image-1", "0.0420000000", DAY),
            ("alice", "gpt-image-1-mini", "0.0110000001", DAY + timedelta(days=1)),
            ("bob", "gpt-image-1", "0.1670000000", DAY + timedelta(days=1)),
            ("bob", "gpt-image-1", "1.0000000009", DAY + timedelta(days=9)),
            (None, "dall-e-2", None, DAY),
        ]:
            ledger.on_end(
                make_event(user=user, model=model, cost=cost and Decimal(cost), start=start)
            )
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_migrate_creates_then_reports_up_to_date(capsys, ledger_url):
    code, out, _ = _run(capsys, "migrate", "--database-url", ledger_url)
    head = head_revision()
    assert code == 0 and f"migrated the ledger from empty to revision {head}" in out
    code, out, _ = _run(capsys, "migrate", "--database-url", ledger_url)
    assert code == 0 and f"already at revision {head}" in out
    engine = create_ledger_engine(ledger_url)
    try:
        assert current_revision(engine) == head
    finally:
        engine.dispose()


def test_migrate_never_prints_the_password(capsys, postgres_url):
    url = postgres_url.replace("postgres@", "postgres:hunter2secret@")  # trust auth ignores it
    code, out, err = _run(capsys, "migrate", "--database-url", url)
    assert code == 0 and "***" in out
    assert "hunter2secret" not in out + err


def test_migrate_uses_the_environment_url(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TRACKING_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert _run(capsys, "migrate")[0] == 0
    assert (tmp_path / "env.db").is_file()


def test_spend_by_user_as_a_readable_table(capsys, ledger_url):
    _fill(ledger_url)
    code, out, _ = _run(capsys, "spend", "--by", "user", "--database-url", ledger_url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "user", "requests", "failures", "images", "cost_usd", "unpriced_requests"
    ]  # fmt: skip
    assert lines[2].split() == ["bob", "2", "0", "2", "1.1670000009", "0"]
    assert lines[3].split() == ["alice", "2", "0", "2", "0.0530000001", "0"]
    assert lines[4].split() == ["(none)", "1", "0", "1", "0.0000000000", "1"]
    assert lines[6].split() == ["total", "5", "0", "5", "1.2200000010", "1"]
    assert lines[7:] == [  # the flag the rows have, said under the table
        "(unpriced_requests: calls with no known price: their cost is not in cost_usd)"
    ]


def test_limit_keeps_the_dearest_groups_and_the_total_covers_them_all(capsys, ledger_url):
    _fill(ledger_url)
    code, out, _ = _run(
        capsys, "spend", "--by", "user", "--limit", "1", "--database-url", ledger_url
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split() == ["bob", "2", "0", "2", "1.1670000009", "0"]
    assert lines[3].startswith("-")
    assert lines[4].split() == ["total", "5", "0", "5", "1.2200000010", "1"]
    assert lines[5] == "(the dearest 1 only; the total covers every user)"
    assert lines[6].startswith("(unpriced_requests: ")  # of the total: a call of no end user
    code, out, _ = _run(
        capsys, "spend", "--by", "day", "--limit", "2", "--format", "json",
        "--database-url", ledger_url,
    )  # fmt: skip
    assert code == 0
    assert [row["day"] for row in json.loads(out)] == ["2026-05-05", "2026-05-13"]  # the latest
    # More groups asked for than there are: all of them, and no note.
    code, out, _ = _run(
        capsys, "spend", "--by", "model", "--limit", "10", "--database-url", ledger_url
    )
    assert code == 0 and "(the" not in out and len(out.splitlines()) == 2 + 3 + 2 + 1


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "1000001"])
def test_limit_takes_a_number_of_groups_and_needs_by(capsys, ledger_url, value):
    with pytest.raises(SystemExit):
        main(["spend", "--by", "user", "--limit", value, "--database-url", ledger_url])
    assert "--limit" in capsys.readouterr().err
    assert main(["spend", "--limit", "3", "--database-url", ledger_url]) != 0
    assert "--limit needs --by" in capsys.readouterr().err


def test_the_table_shows_an_end_user_id_that_is_empty_or_holds_control_characters(capsys, tmp_path):
    # A caller's id with a line break or an escape sequence forged or hid a row of the table,
    # and an empty id printed as a blank.
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        for user in ("a\nbob  9  0  9  9.0  0", "\x1b[2J", ""):
            ledger.on_end(make_event(user=user, cost=Decimal("0.01"), start=DAY))
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    code, out, _ = _run(capsys, "spend", "--by", "user", "--database-url", url)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 + 3 + 2  # the header and its rule, three users, a rule and the total
    assert "\x1b" not in out
    assert {line.split()[0] for line in lines[2:5]} == {"'a\\nbob", "'\\x1b[2J'", "''"}


def test_spend_for_one_user_and_a_date_range_as_json(capsys, ledger_url):
    _fill(ledger_url)
    code, out, _ = _run(
        capsys,
        "spend",
        "--user", "bob",
        "--since", "2026-05-04",
        "--until", "2026-05-05",  # a date: includes the whole of May 5
        "--by", "day",
        "--format", "json",
        "--database-url", ledger_url,
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == [
        {
            "day": "2026-05-05",
            "requests": 1,
            "failures": 0,
            "images": 1,
            "cost_usd": "0.1670000000",
            "unpriced_requests": 0,
        }
    ]


def test_spend_by_model_as_csv(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'csv.db'}"
    _fill(url)
    code, out, _ = _run(capsys, "spend", "--by", "model", "--format", "csv", "--database-url", url)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["model"], r["cost_usd"]) for r in rows] == [
        ("gpt-image-1", "1.2090000009"),
        ("gpt-image-1-mini", "0.0110000001"),
        ("dall-e-2", "0.0000000000"),
    ]


def test_csv_tells_a_call_without_an_end_user_from_an_empty_one(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'users.db'}"
    ledger = open_ledger(url)
    try:
        for user, cost in [(None, "0.01"), ("", "0.02"), ("carol", "0.04")]:
            ledger.on_end(make_event(user=user, cost=Decimal(cost), start=DAY))
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    code, out, _ = _run(capsys, "spend", "--by", "user", "--format", "csv", "--database-url", url)
    assert code == 0
    lines = out.splitlines()
    assert '"",1,0,1,0.0200000000,0' in lines  # the empty end user, quoted
    assert ",1,0,1,0.0100000000,0" in lines  # none at all: an empty field
    assert "carol,1,0,1,0.0400000000,0" in lines
    assert [r[0] for r in csv.reader(io.StringIO(out))][1:] == ["carol", "", ""]  # still CSV


def test_csv_never_hands_a_spreadsheet_a_formula_from_an_end_user(capsys, tmp_path):
    """An end-user id is the caller's text: ``=HYPERLINK(...)`` in a CSV cell is run by the
    spreadsheet that opens the report (OWASP's CSV injection). Such a cell gets a leading
    apostrophe in CSV; JSON keeps the id as stored."""
    url = f"sqlite:///{tmp_path / 'formulas.db'}"
    hostile = ['=HYPERLINK("http://x.test","y")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "plain"]
    ledger = open_ledger(url)
    try:
        for user in hostile:
            ledger.on_end(make_event(user=user, cost=Decimal("0.01"), start=DAY))
        assert ledger.flush(10)
    finally:
        ledger.shutdown(10)
    code, out, _ = _run(capsys, "spend", "--by", "user", "--format", "csv", "--database-url", url)
    assert code == 0
    cells = sorted(r[0] for r in csv.reader(io.StringIO(out)))[:-1]  # without the header
    assert cells == sorted(["'" + u for u in hostile[:-1]] + ["plain"])
    code, out, _ = _run(capsys, "spend", "--by", "user", "--format", "json", "--database-url", url)
    assert code == 0
    assert sorted(r["user"] for r in json.loads(out)) == sorted(hostile)


def test_spend_total_by_default_and_an_iso_time_bound(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'total.db'}"
    _fill(url)
    code, out, _ = _run(
        capsys, "spend", "--since", "2026-05-05T00:00:00+00:00", "--database-url", url
    )
    assert code == 0
    assert out.splitlines()[2].split() == ["total", "3", "0", "3", "1.1780000010", "0"]


@pytest.mark.parametrize("until", ["2026-05-05", "20260505"])
def test_a_date_until_in_either_iso_form_includes_its_whole_day(capsys, ledger_url, until):
    # "20260505" was read as the midnight that starts May 5: bob's spend that day was dropped.
    _fill(ledger_url)
    code, out, _ = _run(
        capsys, "spend", "--user", "bob", "--since", "2026-05-04", "--until", until,
        "--format", "json", "--database-url", ledger_url,
    )  # fmt: skip
    assert code == 0 and json.loads(out)[0]["cost_usd"] == "0.1670000000"


def test_a_url_with_a_driver_sqlalchemy_does_not_know_is_one_line(capsys):
    url = "postgresql+nodriver://postgres@127.0.0.1/none"
    code, _, err = _run(capsys, "spend", "--database-url", url)
    assert code == 1 and "names no driver" in err and err.count("\n") == 1
    code, _, err = _run(
        capsys, "reconcile", "--since", "2026-05-01", "--database-url", url,
        "--admin-key", "sk-admin-0123456789", "--api-base", "http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert code == 2 and "names no driver" in err  # 2: could not read, never 1 (drift)


def test_spend_errors_are_clear_and_never_tracebacks(capsys, tmp_path, postgres_url):
    code, _, err = _run(capsys, "spend", "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 1 and "no ledger at" in err and "Traceback" not in err
    assert not (tmp_path / "none.db").exists()  # reading never creates a database

    code, _, err = _run(capsys, "spend", "--database-url", postgres_url)
    assert code == 1 and "tracking migrate" in err

    with pytest.raises(SystemExit) as exit_info:
        main(["spend", "--since", "last tuesday"])
    assert exit_info.value.code == 2
    assert "is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_the_installed_command_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'proc.db'}"
    _fill(url)
    result = subprocess.run(
        [sys.executable, "-m", "tracking.cli", "spend", "--format", "json", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (total,) = json.loads(result.stdout)
    assert total["scope"] == "total"  # it was null
    assert total["requests"] == 5 and total["cost_usd"] == "1.2200000010"


def test_an_unreachable_database_is_a_clear_error(capsys):
    url = "postgresql://postgres:hunter2secret@127.0.0.1:1/nowhere"
    for command in ("migrate", "spend"):
        code, _, err = _run(capsys, command, "--database-url", url)
        assert code == 1 and "cannot open the ledger database" in err
        assert "hunter2secret" not in err and "Traceback" not in err


def test_out_of_range_and_reversed_windows_are_one_line_errors(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'bounds.db'}"
    _fill(url)
    # The last day there is: "includes that whole day" has no next midnight, so no upper bound.
    code, out, err = _run(capsys, "spend", "--until", "9999-12-31", "--database-url", url)
    assert code == 0 and "Traceback" not in err
    assert out.splitlines()[2].split() == ["total", "5", "0", "5", "1.2200000010", "1"]

    with pytest.raises(SystemExit) as exit_info:
        main(["spend", "--since", "0001-01-01T00:00:00+05:00", "--database-url", url])
    assert exit_info.value.code == 2
    assert "out of range in UTC" in capsys.readouterr().err

    code, _, err = _run(
        capsys, "spend", "--since", "2026-05-09", "--until", "2026-05-01", "--database-url", url
    )
    assert code == 1 and "is after --until" in err and err.count("\n") == 1


def test_a_file_that_is_not_a_database_is_a_clear_error(capsys, tmp_path):
    stray = tmp_path / "notes.db"
    stray.write_text("these are not the rows you are looking for\n" * 100)
    url = f"sqlite:///{stray}"
    for command in ("spend", "migrate"):
        code, _, err = _run(capsys, command, "--database-url", url)
        assert code == 1 and "Traceback" not in err, err
        assert "cannot open the ledger database" in err and "file is not a database" in err
    assert stray.read_text().startswith("these are not")  # left as it was


def test_reading_never_writes_the_schema_into_another_database(capsys, tmp_path):
    import sqlite3

    other = tmp_path / "app.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    before = {path: path.read_bytes() for path in (other, empty)}
    for path in (other, empty):
        url = f"sqlite:///{path}"
        for argv in (["spend"], ["ledger", "quarantine", "list"]):
            code, _, err = _run(capsys, *argv, "--database-url", url)
            assert code == 1 and "no spend_logs table" in err and "Traceback" not in err
    # not a byte changed: the ledger's engine switched them to WAL (an empty file grew to a
    # 4 KB WAL database) before finding they are no ledger
    assert {path: path.read_bytes() for path in (other, empty)} == before
    db = sqlite3.connect(other)
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    db.close()
    assert tables == ["users"]


def test_the_ungrouped_total_is_named_total_in_csv(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'total.db'}"
    _fill(url)
    code, out, _ = _run(capsys, "spend", "--format", "csv", "--database-url", url)
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["scope"] == "total" and row["requests"] == "5"  # the scope's cell was empty


def _flagged_ledger(url: str) -> None:
    """Calls of every flag: alice's priced one and her failed call recorded at an estimate,
    bob's unpriced one, carol's whose row the database refused (the quarantine)."""
    ledger = open_ledger(url, mode="durable")
    try:
        ledger.on_end(make_event(user="alice", cost=Decimal("0.0420000000"), start=DAY))
        ledger.on_end(
            make_event(user="alice", cost=Decimal("0.01"), start=DAY, status="failure",
                       cost_source="estimate")
        )  # fmt: skip
        ledger.on_end(make_event(user="bob", cost=None, model="house-model", start=DAY))
        assert ledger.flush(10)
        quarantine_event(ledger.engine, user="carol", cost=Decimal("0.25"), start=DAY)
    finally:
        ledger.shutdown(10)


NAMES = [
    "requests", "failures", "images", "cost_usd", "unpriced_requests",
    "estimated_requests", "estimated_usd", "quarantined_requests", "quarantined_usd",
]  # fmt: skip


def test_every_format_names_each_figure_alike_and_shows_every_flag(capsys, ledger_url):
    """The CSV and the table said ``unpriced`` and ``quarantined`` where the JSON and Python say
    ``unpriced_requests`` and ``quarantined_requests``, and no report showed the calls recorded
    at an estimate."""
    _flagged_ledger(ledger_url)
    outputs = {}
    for fmt in ("json", "csv", "table"):
        argv = ["spend", "--by", "user", "--format", fmt, "--database-url", ledger_url]
        code, outputs[fmt], err = _run(capsys, *argv)
        assert code == 0, err
    alice = {
        "user": "alice", "requests": 2, "failures": 1, "images": 1, "cost_usd": "0.0520000000",
        "unpriced_requests": 0, "estimated_requests": 1, "estimated_usd": "0.0100000000",
    }  # fmt: skip
    rows = json.loads(outputs["json"])
    assert [r["user"] for r in rows] == ["carol", "alice", "bob"]  # dearest first
    assert rows[1] == alice and list(rows[1]) == list(alice)
    assert rows[0]["quarantined_requests"] == 1 and rows[0]["quarantined_usd"] == "0.2500000000"
    assert rows[2]["unpriced_requests"] == 1 and rows[2]["cost_usd"] == "0.0000000000"
    # the CSV's and the table's columns are the JSON's keys, and SpendRow's fields
    assert [f.name for f in fields(SpendRow)][1:] == [*NAMES[:5], *NAMES[7:], *NAMES[5:7]]
    csv_rows = list(csv.reader(io.StringIO(outputs["csv"])))
    assert csv_rows[0] == ["user", *NAMES]
    lines = outputs["table"].splitlines()
    assert lines[0].split() == ["user", *NAMES]
    for row, csv_row in zip(rows, csv_rows[1:], strict=True):
        # the same figures: a flag a JSON row has none of is 0 in the CSV
        for name, cell in zip(NAMES, csv_row[1:], strict=True):
            assert cell == str(row.get(name, "0.0000000000" if name.endswith("_usd") else 0))
        for name, value in row.items():  # counts are numbers, amounts exact decimal strings
            if name.endswith("_usd"):
                assert isinstance(value, str) and re.fullmatch(r"\d+\.\d{10}", value), value
            elif name != "user":
                assert type(value) is int
    assert csv_rows[2] == ["alice", "2", "1", "1", "0.0520000000", "0", "1", "0.0100000000",
                           "0", "0.0000000000"]  # fmt: skip
    total = ["total", "4", "1", "3", "0.3020000000", "1", "1", "0.0100000000", "1", "0.2500000000"]
    assert lines[2 + 3 + 1].split() == total
    notes = lines[2 + 3 + 2 :]
    assert [note.split(":")[0] for note in notes] == [
        "(unpriced_requests",
        "(estimated_requests",
        "(quarantined_requests",
    ]


def test_an_empty_ledger_is_its_header_and_a_clear_line(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert _run(capsys, "migrate", "--database-url", url)[0] == 0
    header = ["requests", "failures", "images", "cost_usd", "unpriced_requests"]

    def spend(*argv: str) -> str:
        code, out, err = _run(capsys, "spend", *argv, "--database-url", url)
        assert code == 0, err
        return out

    assert spend("--by", "user").splitlines() == [
        "user  " + "  ".join(header),
        "----  " + "  ".join("-" * len(name) for name in header),
        "(no calls in this range)",
    ]
    assert spend("--by", "user", "--format", "csv") == ",".join(["user", *header]) + "\n"
    assert json.loads(spend("--by", "user", "--format", "json")) == []
    zeros = ["total", "0", "0", "0", "0.0000000000", "0"]
    assert list(csv.reader(io.StringIO(spend("--format", "csv")))) == [["scope", *header], zeros]
    total = ["total", 0, 0, 0, "0.0000000000", 0]
    assert json.loads(spend("--format", "json")) == [
        dict(zip(["scope", *header], total, strict=True))
    ]
    lines = spend().splitlines()
    assert lines[0].split() == ["scope", *header]
    assert lines[2].split() == zeros and lines[3] == "(no calls in this range)"
