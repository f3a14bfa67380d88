"""Workers sharing the machine's counters file (``--workers N`` without Redis): a worker killed
mid-call stops holding its budget soon after its death, never a live one, however slow.

Each worker holds a lock of its own beside the file while it lives (the kernel lets go of it
when the process ends, ``kill -9`` included); another worker that finds it free has known the
owner dead since, and releases its holds once it has for ``TRACKING_DEAD_WORKER_HOLD_SECONDS``.
Until 2026-12-07 a dead worker's holds stayed counted until they had been an hour in the file,
and in a counter still in use until it was idle for an hour.

The first tests run a real process holding a reservation in the file and judge the others'
view by a clock of their own (no waiting on time: the process is alive, stopped, or killed and
reaped, each for certain). The last ones run two real proxies sharing one file, one killed
mid-call, as ``tracking serve --workers 2``'s workers do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, ledger_env, spend_rows, wait_for
from tests.proxy_support import ProxyProcess
from tests.test_proxy_budget_dead_worker_proxies import admitted_again, one_call_held
from tests.test_proxy_budget_redis_inflight import HeldFake, slow_fake  # noqa: F401 - a fixture
from tracking.proxy.machine_counters import COUNTERS_FILE_ENV, DEAD_HOLD_ENV, MachineCounters
from tracking.proxy.shared_counters import to_units
from tracking.proxy.worker_locks import lock_path

NAME = "key:k:total"
#: How long the other workers keep a dead worker's holds in the first tests (their default).
GRACE = 40.0

#: A worker of its own: reserves 300 units on NAME under request id "r-dead", says so, and
#: waits (the test kills it).
_WORKER = """
import asyncio, sys
from tracking.proxy.machine_counters import MachineCounters

class Hold:
    request_id = "r-dead"

async def main():
    counters = MachineCounters(sys.argv[1])
    hold = Hold()
    assert await counters.reserve("key:k:total", 300, 1000, 100, hold) == 400
    print(counters.worker, flush=True)
    sys.stdin.read()  # until killed

asyncio.run(main())
"""


@dataclass
class Other:
    """Another worker's view of the file, on a clock the test moves."""

    counters: MachineCounters
    now: list[float]

    def calls(self) -> frozenset[str]:
        return asyncio.run(self.counters.calls_in_flight(NAME))

    def counter(self) -> int | None:
        """The counter as a reservation of nothing finds it (None: missing, to seed)."""
        return asyncio.run(self.counters.reserve(NAME, 0, 10_000, None))

    def later(self, seconds: float) -> None:
        self.now[0] += seconds


@pytest.fixture
def holding(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Other]]:
    """A real process holding 300 units on NAME in the file, its worker id, and another
    worker's view."""
    path = str(tmp_path / "counters.db")
    now = [time.time()]
    other = Other(MachineCounters(path, clock=lambda: now[0], dead_hold_seconds=GRACE), now)
    with subprocess.Popen(
        [sys.executable, "-c", _WORKER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ) as process:
        try:
            assert process.stdout is not None
            worker = process.stdout.readline().strip()  # its hold is in the file
            assert worker, "the worker process failed"
            yield process, worker, other
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(30)
            asyncio.run(other.counters.aclose())


def test_a_killed_workers_holds_are_released_once_it_has_been_known_dead(holding, caplog):
    process, worker, other = holding
    path = other.counters.path
    assert other.calls() == {"r-dead"} and other.counter() == 400
    process.kill()
    process.wait(30)  # dead, its lock let go by the kernel
    with caplog.at_level(logging.WARNING, "tracking.proxy"):
        other.later(1)
        assert other.calls() == {"r-dead"}  # found dead now: kept while its intents are claimed
        other.later(GRACE - 2)
        assert other.calls() == {"r-dead"} and other.counter() == 400
        other.later(2)  # known dead for the grace: an hour before
        assert other.calls() == frozenset()
        assert other.counter() is None  # starts again from the ledger
    assert "released the budget holds of 1 dead worker(s)" in caplog.text
    assert not os.path.exists(lock_path(path, worker))


def test_a_live_worker_keeps_its_holds_however_long_and_however_stopped(holding):
    process, _, other = holding
    other.later(1)
    assert other.calls() == {"r-dead"}
    other.later(20 * GRACE)  # alive: its lock is held
    assert other.calls() == {"r-dead"} and other.counter() == 400
    process.send_signal(signal.SIGSTOP)  # stopped (a loop held up, a debugger): still alive
    try:
        other.later(20 * GRACE)
        assert other.calls() == {"r-dead"} and other.counter() == 400
    finally:
        process.send_signal(signal.SIGCONT)


def test_a_missing_lock_file_never_makes_a_worker_dead(holding):
    """A lock file removed by hand (or a worker of a version without one) says nothing: its
    holds stay, as before, until they have been an hour in the file."""
    process, worker, other = holding
    os.unlink(lock_path(other.counters.path, worker))
    process.kill()
    process.wait(30)
    other.later(1)
    assert other.calls() == {"r-dead"}
    other.later(20 * GRACE)
    assert other.calls() == {"r-dead"}


def test_a_worker_that_stops_cleanly_removes_its_lock(tmp_path: Path):
    path = str(tmp_path / "counters.db")
    counters = MachineCounters(path)
    assert os.path.exists(lock_path(path, counters.worker))
    asyncio.run(counters.aclose())
    assert not os.path.exists(lock_path(path, counters.worker))


#: A short grace, so the test waits seconds (the default is 40 s).
SHORT_GRACE = 2


@pytest.fixture
def two_workers(
    slow_fake: HeldFake,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, ProxyProcess, HeldFake, Path]]:
    """Two proxies sharing one counters file, as ``--workers 2``'s workers do."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, slow_fake.url, url, general={"ledger_mode": "background"})
    counters_file = tmp_path / "counters.db"
    env = {
        **ledger_env(url),
        COUNTERS_FILE_ENV: str(counters_file),
        DEAD_HOLD_ENV: str(SHORT_GRACE),
    }
    with ProxyProcess(config, env=env) as first, ProxyProcess(config, env=env) as second:
        yield first, second, slow_fake, counters_file


def _counter(counters_file: Path, key_hash: str) -> int | None:
    import sqlite3

    db = sqlite3.connect(counters_file, timeout=30)
    try:
        query = "SELECT units FROM money WHERE name = ?"
        row = db.execute(query, (f"key:{key_hash}:total",)).fetchone()
    finally:
        db.close()
    return None if row is None else int(row[0])


def test_a_killed_workers_hold_is_released_and_the_budget_counts_exactly(two_workers):
    first, second, fake, counters_file = two_workers
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
        made, killed = one_call_held(client, first, fake, pool)
        assert edit(client, second.url, made["key"]).status_code == 429  # the budget is held
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        # Admitted again once the killed worker has been known dead for the grace (2 s;
        # before, an hour).
        answers = admitted_again(client, second, made["key"])
        fake.release()
        with pytest.raises(httpx.TransportError):
            killed.result()
        assert set(answers[:-1]) <= {429}, answers
        # The killed call left no row (background ledger): the counter is what the ledger says.
        key_hash = made["key_hash"]
        wait_for(lambda: spend_rows(client, second.url, api_key_hash=key_hash)["total"] == 1)
        [row] = spend_rows(client, second.url, api_key_hash=key_hash)["data"]
        assert _counter(counters_file, key_hash) == to_units(Decimal(row["cost_usd"]))
    assert "released the budget holds of 1 dead worker(s)" in second.log()
    assert "Traceback" not in second.log()


def test_a_worker_whose_call_is_slow_keeps_its_hold(two_workers):
    first, second, fake, _ = two_workers
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(1) as pool:
        made, slow = one_call_held(client, first, fake, pool)
        # Four graces go by while the call is at the upstream; the other worker refuses the
        # key's calls throughout (the slow worker's lock is held).
        answers: list[int] = []
        until = time.monotonic() + 4 * SHORT_GRACE
        while time.monotonic() < until:
            answers.append(edit(client, second.url, made["key"]).status_code)
            time.sleep(0.2)
        fake.release()
        assert slow.result().status_code == 200
        assert set(answers) == {429}, answers
    assert "released the budget holds" not in second.log() + first.log()
