"""A writer killed with SIGKILL mid-stream, then restarted: every acknowledged row exactly once.

The child process makes durable ledger calls from several threads and prints each request id
once its call has returned (acknowledged). The parent kills it without warning, starts a new
process for the same target (which drains the dead one's outbox), and compares.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.relay import TcpRelay
from tracking.integrations.sql import SqlLedger, spend_logs

ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import sys, threading
    from tests.ledger_support import make_event
    from tracking.integrations.sql import SqlLedger

    url, outbox, prefix, count = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
    ledger = SqlLedger(url, mode="durable", outbox_dir=outbox)
    out = threading.Lock()

    def run(thread):
        i = 0
        while count == 0 or i < count:
            request_id = f"{prefix}-{thread}-{i}"
            ledger.on_end(make_event(request_id=request_id))  # returns once acknowledged
            with out:
                sys.stdout.write(request_id + "\\n")
                sys.stdout.flush()
            i += 1

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.flush(30), "not everything reached the target"
    ledger.shutdown(10)
    print("done", flush=True)
    """
)


def _writer(url: str, outbox: Path | None, prefix: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(outbox or ""), prefix, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_sigkill_mid_stream_then_restart_keeps_every_acknowledged_row_once(
    dialect, request, tmp_path
):
    relay = None
    if dialect == "sqlite":
        url, outbox = f"sqlite:///{tmp_path / 'ledger.db'}", None
        child_url = url
    else:
        # Through a relay the test cuts halfway, so the dead process surely leaves acknowledged
        # rows in its outbox that only the restarted one can deliver.
        url, outbox = request.getfixturevalue("postgres_url"), tmp_path / "outbox"
        relay = TcpRelay(url)
        child_url = relay.url
    SqlLedger(url, auto_migrate=True).shutdown(10)

    try:
        child = _writer(child_url, outbox, "killed", 0)
        assert child.stdout is not None
        acknowledged: list[str] = []
        deadline = time.monotonic() + 30
        while len(acknowledged) < 600 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line.endswith("\n"):
                break  # the writer died on its own: the assertions below say so
            acknowledged.append(line.rstrip("\n"))
            if relay is not None and len(acknowledged) == 300:
                relay.cut()
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: calls in flight, batches half-shipped
        rest = child.stdout.read()
        child.wait(10)
        child.stdout.close()
    finally:
        if relay is not None:
            relay.close()
    assert child.returncode == -signal.SIGKILL
    # Only whole lines count: a line cut by the kill was not fully reported.
    acknowledged += [line for line in rest.split("\n")[:-1] if line]
    assert len(acknowledged) >= 600
    if outbox is not None:
        (left,) = outbox.glob("outbox-*.db")  # the dead process left its outbox behind...
        db = sqlite3.connect(left)
        try:
            (waiting,) = db.execute("SELECT count(*) FROM outbox").fetchone()
        finally:
            db.close()
        assert waiting >= 200  # ...holding the rows it acknowledged while the database was away

    restarted = _writer(url, outbox, "restarted", 25)
    out, _ = restarted.communicate(timeout=60)
    assert restarted.returncode == 0 and out.endswith("done\n")
    after_restart = out.split("\n")[:-2]

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(spend_logs.c.request_id))]
    finally:
        engine.dispose()
    assert len(ids) == len(set(ids))  # nothing doubled
    assert set(acknowledged) <= set(ids)  # nothing acknowledged lost
    assert set(after_restart) <= set(ids) and len(after_restart) == 100
    # Rows beyond the acknowledged ones were calls cut short by the kill, at most one per thread.
    assert len(set(ids) - set(acknowledged) - set(after_restart)) <= 4
    if outbox is not None:
        assert not list(outbox.glob("outbox-*.db"))  # the orphan was drained and removed
