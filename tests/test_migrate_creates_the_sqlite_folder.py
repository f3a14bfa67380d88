"""``tracking migrate`` creates an SQLite ledger's missing folder, as the proxy's start does.

Before, ``tracking migrate --database-url sqlite:///data/ledger/tracking.db`` on a machine where
``data/ledger`` did not exist failed ("cannot open the ledger database"), while ``tracking serve``
with the same URL created the folder: both now call one helper
(``tracking.integrations.sql.make_sqlite_folder``), which says what it created.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import sqlalchemy as sa

from tests.proxy_support import tracking_command
from tracking.integrations.sql import head_revision


def _migrate(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tracking_command(), "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_migrate_creates_the_missing_folder_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "ledger"
    url = f"sqlite:///{folder / 'tracking.db'}"
    first = _migrate(url, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"created the folder {folder} for tracking.db (it did not exist)" in first.stdout
    assert f"to revision {head_revision()}" in first.stdout
    engine = sa.create_engine(url)
    try:
        assert "spend_logs" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    again = _migrate(url, tmp_path)  # the folder is there now: nothing created, nothing said
    assert again.returncode == 0, again.stderr
    assert "created the folder" not in again.stdout
    assert "already at revision" in again.stdout


def test_a_relative_url_is_created_from_the_working_folder(tmp_path: Path) -> None:
    done = _migrate("sqlite:///./state/tracking.db", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "tracking.db").is_file()
