"""``tracking serve --workers N`` when its workers die: one death is started again and said;
more than ``TRACKING_WORKER_RESTARTS`` within ``TRACKING_WORKER_RESTARTS_SECONDS`` stop the
proxy, the other workers stopped cleanly, with exit status 1 and one line naming how they died.

Every case runs the real command in a subprocess, two workers on loopback, the workers killed
with real signals (by the test, or by a callback module that kills the worker importing it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sqlite3
import subprocess
import time

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, ledger_env
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config
from tracking.proxy.worker_deaths import DEFAULT_RESTARTS, RESTARTS_ENV, SECONDS_ENV, DeathLimit

#: Long enough that every death of a test falls within it, however loaded the machine is.
_WINDOW = {SECONDS_ENV: "3600"}
#: An upstream never called: the proxy needs a deployment to start.
_NOWHERE = "http://127.0.0.1:9"
_STARTED = "Application startup complete"
_WORKER = re.compile(r"Started server process \[(\d+)\]")


def _wait_for(proxy: ProxyProcess, what: str, found: re.Pattern[str] | str, count: int = 1) -> str:
    """The proxy's log once ``found`` is in it ``count`` times (at most 120 s)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = proxy.log()
        if len(re.findall(found, log)) >= count:
            return log
        assert proxy.process is not None and proxy.process.poll() is None, log
        time.sleep(0.1)
    raise AssertionError(f"{what}: not in the proxy's log in 120 s:\n{proxy.log()}")


def _exit_status(proxy: ProxyProcess) -> int:
    """The proxy's status once it exits by itself (killed, with a failed test, after 120 s)."""
    assert proxy.process is not None
    try:
        return proxy.process.wait(120)
    except subprocess.TimeoutExpired:
        proxy.stop()
        raise AssertionError(f"the proxy did not stop by itself:\n{proxy.log()}") from None


def _last_line(log: str) -> str:
    return log.strip().splitlines()[-1]


def test_one_worker_killed_is_started_again_said_and_the_proxy_keeps_serving(tmp_path):
    """uvicorn logged ``Child process [PID] died``, nothing of how; the death is one line now,
    naming the signal and the worker started in its place, and the proxy serves on."""
    config = write_config(tmp_path / "config.yaml", one_deployment_config(_NOWHERE))
    with ProxyProcess(config, workers=2) as proxy:
        log = _wait_for(proxy, "both workers started", _STARTED, count=2)
        victim = int(_WORKER.findall(log)[0])
        os.kill(victim, signal.SIGKILL)
        said = re.compile(
            rf"WARNING: +tracking\.proxy: worker \[{victim}\] killed by SIGKILL: started again as "
            rf"\[(\d+)\] \(1 of {DEFAULT_RESTARTS} restarts within 60 s\)"
        )
        log = _wait_for(proxy, "the death said", said)
        replacement = said.findall(log)[0]
        log = _wait_for(proxy, "the replacement started", _STARTED, count=3)
        assert f"Started server process [{replacement}]" in log
        with httpx.Client(timeout=30) as client:  # a connection each, for either worker
            for _ in range(4):
                answer = client.get(
                    f"{proxy.url}/health/liveliness", headers={"Connection": "close"}
                )
                assert answer.status_code == 200, answer.text
        assert proxy.process is not None and proxy.process.poll() is None
        assert proxy.stop() == 0, proxy.log()


#: A callback module that kills the worker process importing it, as the kernel's out-of-memory
#: killer would kill a worker at every start; the supervising ``tracking serve``, which imports
#: it to check the config, is no multiprocessing child and lives.
_DIES_IN_WORKERS = """
import multiprocessing
import os
import signal

if multiprocessing.parent_process() is not None:
    os.kill(os.getpid(), signal.SIGKILL)


def handler(kwargs, response, start_time, end_time):
    pass
"""


def test_workers_killed_at_every_start_stop_the_proxy_with_status_1(tmp_path):
    """Each worker was started again, and killed again, forever: the proxy never exited, and a
    supervisor (systemd, Kubernetes) never saw it fail. Past the limit it stops, exit status 1,
    its last line naming how the workers died and the settings that bound it."""
    (tmp_path / "dies_in_workers.py").write_text(_DIES_IN_WORKERS)
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            _NOWHERE, litellm_settings={"callbacks": ["dies_in_workers.handler"]}
        ),
    )
    proxy = ProxyProcess(config, workers=2, env={RESTARTS_ENV: "3", **_WINDOW})
    proxy.launch()
    assert _exit_status(proxy) == 1, proxy.log()
    log = proxy.log()
    last = _last_line(log)
    # Each worker kills itself as it imports the callback; on a very loaded machine uvicorn's
    # 5 s health check may kill one first, still importing: the line counts each cause.
    cause = r"killed (?:by SIGKILL|for not answering uvicorn's health check within 5 s)"
    assert re.fullmatch(
        rf"tracking serve: worker deaths within 3600 s: (\d+) \(\d+ {cause}(?:, \d+ {cause})?; "
        rf"the last, \[\d+\], {cause}\): the proxy stopped instead of starting another "
        rf"\({RESTARTS_ENV}=3 restarts within {SECONDS_ENV}=3600\)",
        last,
    ), log
    # both workers may die at once: the last deaths are then more than one past the limit
    restarted = len(re.findall(rf"{cause}: started again as", log))
    assert restarted <= 3 < int(re.findall(r"\d+", last)[1]), log
    assert "ERROR:     tracking.proxy: workers keep dying: stopping the proxy" in log
    assert "Traceback" not in log and "SIGTERM" not in log


def test_past_the_limit_the_other_workers_stop_cleanly_their_calls_in_the_ledger(fake, tmp_path):
    """With no restart allowed, one worker killed stops the proxy: the other worker stops as at
    a SIGTERM (its application shut down, its ledger rows written), and the status is 1."""
    database = tmp_path / "ledger.db"
    url = f"sqlite:///{database}"
    config = accounts_config(tmp_path, fake.url, url)
    env = {**ledger_env(url), RESTARTS_ENV: "0", **_WINDOW}
    proxy = ProxyProcess(config, workers=2, env=env).start()
    try:
        log = _wait_for(proxy, "both workers started", _STARTED, count=2)
        victim, survivor = (int(pid) for pid in _WORKER.findall(log)[:2])
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
            statuses = [edit(client, proxy.url, MASTER_KEY).status_code for _ in range(4)]
        assert statuses == [200] * 4
        os.kill(victim, signal.SIGKILL)
        assert _exit_status(proxy) == 1, proxy.log()
    finally:
        proxy.stop()
    log = proxy.log()
    assert _last_line(log) == (
        f"tracking serve: worker deaths within 3600 s: 1 (1 killed by SIGKILL; the last, "
        f"[{victim}], killed by SIGKILL): the proxy stopped instead of starting another "
        f"({RESTARTS_ENV}=0 restarts within {SECONDS_ENV}=3600)"
    )
    assert f"Finished server process [{survivor}]" in log
    assert "Application shutdown complete" in log and "Traceback" not in log
    with sqlite3.connect(database) as ledger:
        (rows,) = ledger.execute("SELECT count(*) FROM spend_logs").fetchone()
    assert rows == 4


@pytest.mark.parametrize("raw", ["-1", "five", "2.5"])
def test_a_restart_count_that_is_no_whole_number_is_said_and_the_default_used(
    raw, monkeypatch, caplog
):
    monkeypatch.setenv(RESTARTS_ENV, raw)
    monkeypatch.setenv(SECONDS_ENV, "90")
    with caplog.at_level(logging.WARNING, logger="tracking.proxy"):
        limit = DeathLimit.from_environment()
    assert (limit.restarts, limit.seconds) == (DEFAULT_RESTARTS, 90.0)
    assert f"{RESTARTS_ENV}={raw!r} is not a whole number >= 0; using 5" in caplog.text


def test_the_limit_counts_the_deaths_within_its_window_only():
    now = [1000.0]
    limit = DeathLimit(2, 60, clock=lambda: now[0])
    limit.count(limit.death(10, -9))
    now[0] += 30
    limit.count(limit.death(11, -11))
    assert not limit.allows([limit.death(12, 1)])
    assert limit.verdict([limit.death(12, 1)]).message.startswith(
        "worker deaths within 60 s: 3 (1 killed by SIGKILL, 1 killed by SIGSEGV, "
        "1 exited with status 1; the last, [12], exited with status 1)"
    )
    now[0] += 31  # the first is older than the window now
    assert limit.allows([limit.death(12, 1)]) and limit.counted() == 1


def test_a_worker_that_stops_answering_is_said_to_be_killed_for_it(tmp_path):
    """A worker that stopped answering uvicorn's health check (here: stopped with SIGSTOP) is
    killed by the supervisor with SIGKILL and started again. Its line said "killed by SIGKILL",
    as for a worker the kernel's out-of-memory killer ended; it says what happened now, and the
    proxy serves on."""
    config = write_config(tmp_path / "config.yaml", one_deployment_config(_NOWHERE))
    with ProxyProcess(config, workers=2) as proxy:
        log = _wait_for(proxy, "both workers started", _STARTED, count=2)
        victim = int(_WORKER.findall(log)[0])
        os.kill(victim, signal.SIGSTOP)
        try:
            said = re.compile(
                rf"WARNING: +tracking\.proxy: worker \[{victim}\] killed for not answering "
                rf"uvicorn's health check within 5 s: started again as \[(\d+)\] "
                rf"\(1 of {DEFAULT_RESTARTS} restarts within 60 s\)"
            )
            log = _wait_for(proxy, "the death said", said)
        finally:
            with contextlib.suppress(ProcessLookupError):  # never left stopped, whatever failed
                os.kill(victim, signal.SIGCONT)
        assert f"worker [{victim}] killed by SIGKILL" not in log
        replacement = said.findall(log)[0]
        started = re.escape(f"Started server process [{replacement}]")
        _wait_for(proxy, "the replacement started", started)
        answer = httpx.get(f"{proxy.url}/health/liveliness", timeout=30)
        assert answer.status_code == 200, answer.text
        assert proxy.stop() == 0, proxy.log()


def test_the_verdict_tells_unanswered_health_checks_from_kills_from_outside():
    limit = DeathLimit(1, 60)
    limit.count(limit.death(10, -9, unanswered=5))
    assert limit.verdict([limit.death(11, -9)]).message.startswith(
        "worker deaths within 60 s: 2 (1 killed for not answering uvicorn's health check "
        "within 5 s, 1 killed by SIGKILL; the last, [11], killed by SIGKILL)"
    )
