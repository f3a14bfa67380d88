"""An outbox holding only rejected rows is kept, but not claimed again at every start.

A row the target and its quarantine both refuse stays in its outbox's ``rejected`` table: spend
data, never dropped. Before, such an outbox kept its name (``outbox-<pid>.db``) once nothing was
left to ship, so every ledger for the target claimed it again, at every start and every rescan
(30 s), opened it, found nothing to ship, logged "draining 0 rows" and let it go. Now the outbox
is set aside as ``rejected-<pid>.db`` when it closes with only rejected rows: no ledger claims
it, its rows stay in it, and ``tracking ledger quarantine list`` shows them.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.ledger_support import (
    close_quarantine,
    fresh_sqlite_ledger,
    ids_in,
    leave_outbox,
    leftovers_dir,
    make_event,
    outbox_with_rejected_rows,
    refused_line,
    refused_rows,
    row_line,
)
from tracking.integrations.sql import SqlLedger
from tracking.integrations.sql import _outbox as outbox_module
from tracking.integrations.sql._outbox import claim_orphans


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An SQLite ledger file whose ``ledger_quarantine`` refuses every row (a trigger), so a
    row the file refuses ends in an outbox's ``rejected`` table; outboxes in the test's folder."""
    url = fresh_sqlite_ledger(tmp_path, monkeypatch)
    close_quarantine(url)
    return url


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every outbox file opened (claimed, or opened as a process's own), in order."""
    opened: list[Path] = []

    class Counted(outbox_module.Outbox):
        def __init__(self, path: Path, lock_fd: int, **options: str) -> None:
            opened.append(path)
            super().__init__(path, lock_fd, **options)

    monkeypatch.setattr(outbox_module, "Outbox", Counted)
    return opened


def _rejected_in(directory: Path) -> dict[str, list[str]]:
    """The lines in the ``rejected`` table of each SQLite file in ``directory``, by name."""
    kept: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.db")):
        db = sqlite3.connect(path)
        try:
            kept[path.name] = [line for (line,) in db.execute("SELECT line FROM rejected")]
        finally:
            db.close()
    return kept


def test_kept_rows_with_a_refused_one_leave_no_outbox_to_claim_at_the_next_start(
    url: str, claims: list[Path]
) -> None:
    refused = refused_line()
    kept = leave_outbox(leftovers_dir(url), [row_line("good-1"), refused])
    claims.clear()

    first = SqlLedger(url)
    try:
        assert ids_in(first.engine) == {"good-1"} and first.rejected_rows == 1
    finally:
        first.shutdown(10)
    assert claims == [kept]
    assert claim_orphans(leftovers_dir(url)) == []  # nothing left for a start to claim...
    rejected = _rejected_in(leftovers_dir(url))
    assert list(rejected.values()) == [[refused]]  # ...and the refused row kept all the same
    assert next(iter(rejected)).startswith("rejected-")

    second = SqlLedger(url)
    try:
        assert second.rejected_rows == 0 and second.ledger_stats().quarantined_rows == 0
    finally:
        second.shutdown(10)
    assert claims == [kept]  # the second start claimed nothing
    assert _rejected_in(leftovers_dir(url)) == rejected


def test_a_dead_outbox_with_only_rejected_rows_is_claimed_once_and_kept(
    url: str, tmp_path: Path, claims: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The shipper path (an outbox in front of the target), for an outbox a killed process left."""
    directory = tmp_path / "own-outbox"
    lines = [refused_line(), row_line("never-shipped-but-refused")]
    dead = outbox_with_rejected_rows(directory, lines)

    caplog.set_level(logging.INFO, logger="tracking.ledger")
    for _ in range(3):
        ledger = SqlLedger(url, outbox_dir=directory)
        try:
            assert ledger.flush(10) and ledger.outbox_rows() == 0
        finally:
            ledger.shutdown(10)
    assert claims.count(dead) == 1  # claimed by the first start only, then set aside
    assert caplog.text.count("draining 0 rows") <= 1
    assert not dead.exists()
    assert _rejected_in(directory) == {"rejected-999999999.db": lines}


def test_a_set_aside_name_never_replaces_another(url: str, tmp_path: Path) -> None:
    directory = tmp_path / "own-outbox"
    outbox_with_rejected_rows(directory, ["first"])
    SqlLedger(url, outbox_dir=directory).shutdown(10)
    outbox_with_rejected_rows(directory, ["second"])  # the pid used again
    SqlLedger(url, outbox_dir=directory).shutdown(10)
    assert _rejected_in(directory) == {
        "rejected-999999999-1.db": ["second"],
        "rejected-999999999.db": ["first"],
    }


def test_quarantine_list_finds_rows_kept_under_the_ledgers_own_outbox_dir(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows kept under ``SqlLedger(outbox_dir=...)`` were not found by the list command, which
    looked in the default folder only: ``--outbox-dir`` names the ledger's folder."""
    from tracking.cli import main

    directory = tmp_path / "own-outbox"
    outbox_with_rejected_rows(directory, [refused_line()])
    SqlLedger(url, outbox_dir=directory).shutdown(10)
    argv = ["ledger", "quarantine", "list", "--database-url", url]
    assert main(argv) == 0
    assert "refused by the quarantine too" not in capsys.readouterr().out  # not the default's
    assert main([*argv, "--outbox-dir", str(directory)]) == 0
    text = capsys.readouterr().out
    assert "bad-tokens" in text and f"kept in {directory} (table rejected)" in text


def test_quarantine_list_shows_the_rows_kept_locally(url: str) -> None:
    from tracking.integrations.sql import quarantine_list_command

    leave_outbox(leftovers_dir(url), [row_line("good-1"), refused_line()])
    SqlLedger(url).shutdown(10)
    out = io.StringIO()
    assert quarantine_list_command(url, fmt="table", out=out) == 0
    text = out.getvalue()
    assert "the ledger's quarantine is empty" in text
    assert "bad-tokens" in text and "OverflowError" in text
    assert "1 rows refused by the quarantine too, kept in" in text


def test_a_live_row_refused_by_the_file_and_its_quarantine_is_kept_locally_not_dropped(
    url: str,
) -> None:
    """A call's row that the SQLite file refuses and its quarantine refuses too was logged as
    "not recorded" and dropped by the ledger's writer. It is kept in a local ``rejected`` table
    (set aside where the file's leftovers live), and the rows behind it go through."""
    ((name, fields),) = refused_rows("sqlite")
    ledger = SqlLedger(url, mode="durable")
    try:
        ledger.on_end(make_event(request_id=f"bad-{name}", **fields))  # type: ignore[arg-type]
        ledger.on_end(make_event(request_id="good-behind"))
        assert ledger.flush(10)
        assert ids_in(ledger.engine) == {"good-behind"}
        assert ledger.rejected_rows == 1 and ledger.quarantined_rows == 0
    finally:
        ledger.shutdown(10)
    kept = _rejected_in(leftovers_dir(url))
    ((file, lines),) = kept.items()
    assert file.startswith("rejected-")  # set aside: no ledger claims it again
    assert [json.loads(line)["request_id"] for line in lines] == [f"bad-{name}"]
    (row,) = outbox_module.read_rejected(leftovers_dir(url))
    assert "the quarantine is closed" in row.reason  # why it is there, both refusals


def test_quarantine_list_json_with_local_lists_the_rows_kept_locally_too(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format json`` printed the quarantine alone, so a script watching the JSON never saw
    a row the quarantine refused too. ``--with-local`` prints both; the plain list is unchanged."""
    from tracking.cli import main

    directory = tmp_path / "own-outbox"
    outbox_with_rejected_rows(directory, [refused_line()])
    SqlLedger(url, outbox_dir=directory).shutdown(10)
    argv = ["ledger", "quarantine", "list", "--format", "json", "--database-url", url]
    argv += ["--outbox-dir", str(directory)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == []  # the list's readers keep their shape
    assert main([*argv, "--with-local"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["quarantine"] == []
    (kept,) = listed["kept_locally"]
    assert kept["file"] == str(directory / "rejected-999999999.db") and kept["seq"] >= 1
    assert kept["line"] == refused_line() and kept["request_id"] == "bad-tokens"
    assert kept["error"] == "refused" and "rejected_at" in kept
