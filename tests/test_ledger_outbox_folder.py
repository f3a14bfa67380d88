"""The folder of a ledger's local outboxes and intents is its database file's, not its URL's text.

``sqlite:///./tracking.db`` (the default) is another file in each working directory. The folder
was named after the URL's text, so two applications in two folders shared one (the user's state
folder): a call in flight when one was killed became a row in the other's ledger, and none in its
own. Now an SQLite file's folder is named after its absolute path: each file's rows stay its own,
and the same file named two ways shares one folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.testing import FakeOpenAI

from .conftest import API_KEY

#: A process on the default ledger (``./tracking.db`` in its working directory), with intents,
#: that makes one slow call and says so; the test kills it while the call is in flight.
_CALLER = """
import sys

import tracking
from tracking.integrations.sql import SqlLedger

ledger = SqlLedger(mode="durable", intents=True)
tracking.success_callback = [ledger]
tracking.failure_callback = [ledger]
tracking.image_edit(
    model="gpt-image-1", image=bytes.fromhex(sys.argv[3]), prompt="a hat", user="alice",
    quality="low", api_base=sys.argv[1], api_key=sys.argv[2],
)
"""


def _users(database: Path) -> list[tuple[str | None, str]]:
    if not database.exists():
        return []
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            query = sa.select(spend_logs.c.end_user, spend_logs.c.status)
            return [(r.end_user, r.status) for r in conn.execute(query)]
    finally:
        engine.dispose()


def _recover(url: str) -> None:
    ledger = SqlLedger(url, mode="durable", intents=True, auto_migrate=True)
    try:
        assert ledger.flush(20)
    finally:
        ledger.shutdown(10)


def test_a_call_killed_in_one_folder_is_never_recorded_in_another_folders_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import make_png

    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "state"))  # shared, as ~/.local
    monkeypatch.delenv("TRACKING_DATABASE_URL", raising=False)
    first, second = tmp_path / "app-a", tmp_path / "app-b"
    first.mkdir()
    second.mkdir()
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=5;always"]) as upstream:
        caller = subprocess.Popen(
            [sys.executable, "-c", _CALLER, upstream.url, API_KEY, make_png(16, 16).hex()],
            cwd=first,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        try:
            deadline = time.monotonic() + 30
            while upstream.hits < 1:  # the call is in flight upstream
                assert caller.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            caller.kill()
            caller.wait(10)
    monkeypatch.chdir(second)
    _recover("sqlite:///./tracking.db")  # another application, on its own ./tracking.db
    assert _users(second / "tracking.db") == []
    _recover(f"sqlite:///{first / 'tracking.db'}")  # the killed one's file, named absolutely
    assert _users(first / "tracking.db") == [("alice", "incomplete")]
