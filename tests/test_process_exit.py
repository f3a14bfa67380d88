"""The end of an SDK process: every row reaches the ledger however the process ends.

``multiprocessing`` children end with ``os._exit`` (no ``atexit``), SIGTERM under Python's
default disposition ends a process without running anything, and a database that cannot take
the rows must not hold the exit for the callbacks' timeout. Each test runs a real process and
counts the rows against the requests the fake upstream received.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import tracking
from tests.accounts_support import wait_for
from tests.conftest import API_KEY, make_png
from tracking.integrations.sql import SqlLedger
from tracking.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
#: Rows wait this long in a background ledger before a commit unless someone waits for them:
#: far longer than any test here lets a process live, so a row reaches the file only if the
#: process's exit writes it.
LINGER = 30.0


def _rows(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT status, cost_source, end_user FROM spend_logs").fetchall()


def _edits(api_base: str, count: int) -> None:
    for number in range(count):
        tracking.image_edit(
            image=make_png(16, 16),
            prompt="a hat",
            model="gpt-image-2",
            quality="low",
            size="1024x1024",
            api_base=api_base,
            api_key=API_KEY,
            user=f"child-{number}",
        )


def _edits_through_a_ledger_of_its_own(url: str, api_base: str, count: int) -> None:
    ledger = SqlLedger(url, mode="background", linger=LINGER)
    tracking.success_callback = [ledger]
    tracking.failure_callback = [ledger]
    _edits(api_base, count)


def _run_children(target: object, args: tuple[object, ...]) -> None:
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: 3.12+ warns
        children = [context.Process(target=target, args=args) for _ in range(3)]
        for child in children:
            child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0


@pytest.fixture
def background_ledger(tmp_path, monkeypatch):
    path = tmp_path / "ledger.db"
    ledger = SqlLedger(f"sqlite:///{path}", auto_migrate=True, mode="background", linger=LINGER)
    monkeypatch.setattr(tracking, "success_callback", [ledger])
    monkeypatch.setattr(tracking, "failure_callback", [ledger])
    yield path
    ledger.shutdown(10)


def test_calls_in_multiprocessing_children_reach_the_parents_background_ledger(
    fake, background_ledger
):
    _run_children(_edits, (fake.url, 4))
    assert len(_rows(background_ledger)) == 12  # 0 when only atexit wrote them


def test_a_ledger_opened_in_a_multiprocessing_child_is_written_when_the_child_ends(
    fake, tmp_path, monkeypatch
):
    path = tmp_path / "ledger.db"
    SqlLedger(f"sqlite:///{path}", auto_migrate=True).shutdown(10)
    monkeypatch.setattr(tracking, "success_callback", [])
    _run_children(_edits_through_a_ledger_of_its_own, (f"sqlite:///{path}", fake.url, 4))
    assert len(_rows(path)) == 12


_SDK_PROCESS = textwrap.dedent(
    """
    import sys
    import tracking
    from tests.conftest import make_png
    from tracking.integrations.sql import SqlLedger

    url, api_base, api_key, mode, linger = sys.argv[1:6]
    ledger = SqlLedger(url, auto_migrate=True, mode=mode, linger=float(linger))
    tracking.success_callback = [ledger]
    tracking.failure_callback = [ledger]
    import tracking.bus  # after the ledger, as an application that configures it late does

    tracking.bus.configure(callback_timeout=float(sys.argv[6]))
    calls, hang = int(sys.argv[7]), sys.argv[8] == "hang"
    for number in range(calls):
        # the last call of a hanging process waits upstream until the process is ended
        hold = {"x-fake-fault": "latency=60"} if hang and number == calls - 1 else {}
        tracking.image_edit(
            image=make_png(16, 16), prompt="a hat", model="gpt-image-2", quality="low",
            size="1024x1024", api_base=api_base, api_key=api_key, user=f"user-{number}",
            extra_headers=hold,
        )
    print("calls made", flush=True)
    """
)


def _sdk_process(url: str, fake: FakeOpenAI, *, mode: str, calls: int, hang: bool, timeout: float):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SDK_PROCESS,
            url,
            fake.url,
            API_KEY,
            mode,
            str(LINGER),
            str(timeout),
            str(calls),
            "hang" if hang else "return",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("mode", ["background", "durable"])
def test_sigterm_ends_an_sdk_process_through_its_exit_which_writes_every_row(tmp_path, mode):
    path = tmp_path / "ledger.db"
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        process = _sdk_process(f"sqlite:///{path}", fake, mode=mode, calls=8, hang=True, timeout=30)
        try:
            wait_for(lambda: fake.hits == 8, timeout=60)  # the eighth is upstream, unanswered
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        finally:
            process.kill()
            _, err = process.communicate()
    assert code == 128 + signal.SIGTERM, err  # an exit, not a kill (-15)
    rows = _rows(path)
    assert len(rows) == 8, err  # seven lingering (background) and the one in flight
    interrupted = [row for row in rows if row[2] == "user-7"]
    assert interrupted == [("failure", "estimate", "user-7")]  # sent, so billed: estimated


def test_an_applications_own_sigterm_handler_is_left_alone(tmp_path):
    """A guard: it passes without the SIGTERM handling too, and fails if it replaced theirs."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from tracking.integrations.sql import SqlLedger

        def mine(signum, frame):
            print("the application's handler", flush=True)

        if sys.argv[2] == "handler":
            signal.signal(signal.SIGTERM, mine)
        else:
            os.environ["TRACKING_HANDLE_SIGTERM"] = "0"
        SqlLedger(sys.argv[1], auto_migrate=True, mode="background").shutdown(5)
        print(signal.getsignal(signal.SIGTERM) in (mine, signal.SIG_DFL), flush=True)
        """
    )
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for how in ("handler", "environment"):
        done = subprocess.run(
            [sys.executable, "-c", script, url, how],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_a_locked_database_holds_the_exit_for_the_ledgers_bound_not_the_callbacks(tmp_path):
    """The callbacks may run 300 s at exit; a ledger whose SQLite file is locked gives up after
    its own bound and keeps the rows for the next start, which writes them."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    SqlLedger(url, auto_migrate=True).shutdown(10)
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with FakeOpenAI(api_keys=[API_KEY]) as fake:
            process = _sdk_process(url, fake, mode="background", calls=3, hang=False, timeout=300)
            try:
                out, err = process.communicate(timeout=90)  # 300 s and more without the bound
            finally:
                process.kill()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert process.returncode == 0 and out.strip() == "calls made", err
    assert _rows(path) == []  # the file was locked throughout
    later = SqlLedger(url, mode="background")  # the next start writes what was kept
    try:
        wait_for(lambda: len(_rows(path)) == 3, timeout=30)
    finally:
        later.shutdown(10)
