"""``tracking serve``'s start: faults found only as a process starts, a busy port, a name with
several addresses, a master key LiteLLM would refuse, and the SQLite ledger's missing folder.

Every case runs the real command in a subprocess (in its own session, so a supervisor that does
not stop is killed with its workers), on loopback, with a real SQLite file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import wait_for
from tests.proxy_support import (
    MASTER_KEY,
    free_port,
    localhost_at_both_command,
    require_ipv6_loopback,
    tracking_command,
)
from tests.services import unavailable
from tracking.config import load_config
from tracking.errors import ConfigurationError
from tracking.proxy import app as proxy_app

_LOOPBACK = ("--host", "127.0.0.1", "--port", "0")
_DEPLOYMENT = (
    "model_list:\n"
    "  - model_name: gpt-image-2\n"
    "    litellm_params: {model: gpt-image-2, api_key: sk-x, api_base: 'http://127.0.0.1:9'}\n"
)


def _serve(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    tracking: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tracking serve ARGS`` until it exits by itself (killed, with its workers, after 60 s);
    ``tracking`` is the command run, by default the installed one."""
    command = [*(tracking or tracking_command()), "serve", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"tracking serve did not exit by itself:\n{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@contextlib.contextmanager
def _started(
    tmp_path: Path, *args: str, until: str = "", tracking: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``tracking serve ARGS``, its output read until a line holding ``until`` (or, before
    that, the app's start or failure); yields the process and the lines read, and stops the
    proxy, with its workers, at the end. ``tracking`` is as :func:`_serve`'s."""
    process = subprocess.Popen(
        [*(tracking or tracking_command()), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    assert process.stdout is not None
    markers = tuple(filter(None, (until, "Application startup complete", "startup failed")))
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if any(marker in line for marker in markers):
                break
        yield process, lines
    finally:
        with contextlib.suppress(ProcessLookupError):  # stopped already
            os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=60)


# -- 1. a fault found only as a process starts ----------------------------------------------


def _ledger_is_a_folder(tmp: Path) -> tuple[str, dict[str, str]]:
    (tmp / "ledger-folder").mkdir()
    return f"general_settings: {{database_url: 'sqlite:///{tmp}/ledger-folder'}}\n", {}


def _ledger_is_no_database(tmp: Path) -> tuple[str, dict[str, str]]:
    (tmp / "notes.db").write_text("these are notes, not an SQLite database\n" * 100)
    return f"general_settings: {{database_url: 'sqlite:///{tmp}/notes.db'}}\n", {}


def _outbox_under_a_file(tmp: Path) -> tuple[str, dict[str, str]]:
    (tmp / "a-file").write_text("")
    ledger = f"general_settings: {{database_url: 'sqlite:///{tmp}/ledger.db'}}\n"
    return ledger, {"TRACKING_OUTBOX_DIR": str(tmp / "a-file" / "outboxes")}


_RUN_TIME_FAULTS: dict[str, tuple[Callable[[Path], tuple[str, dict[str, str]]], int, str]] = {
    "ledger-is-a-folder": (_ledger_is_a_folder, 2, "cannot open the ledger database"),
    "ledger-is-no-database": (_ledger_is_no_database, 2, "cannot open the ledger database"),
    "outbox-under-a-file": (
        _outbox_under_a_file,
        1,
        "the proxy could not start: NotADirectoryError",
    ),
}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("fault", sorted(_RUN_TIME_FAULTS))
def test_a_fault_found_as_a_process_starts_stops_the_proxy_with_one_line(tmp_path, fault, workers):
    """The config passes every check made before a port is bound, and each process still fails
    at its start. With ``--workers 2`` uvicorn's supervisor then exited 0 (or, in older uvicorn,
    started the workers again and again); with one process it exited 3, uvicorn's own status.
    The supervisor now stops every worker and exits with the fault's status (2 for a fault of
    the configuration, 1 otherwise), its last line the fault's, and no traceback."""
    make, status, expected = _RUN_TIME_FAULTS[fault]
    extra, env = make(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + extra)

    done = _serve(
        tmp_path,
        *("--config", str(config), "--host", "127.0.0.1", "--port", "0"),
        *("--workers", workers),
        env=env,
    )

    assert done.returncode == status, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tracking serve: ") and expected in last, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # the proxy stops itself: no line says a signal came (uvicorn's supervisor logged
    # "Received SIGTERM, exiting." when the fault watcher sent the process SIGTERM)
    assert "SIGTERM" not in done.stderr, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_callback_module_that_raises_as_it_is_imported_is_a_config_fault(tmp_path, workers):
    """Its RuntimeError ended ``tracking serve`` in a traceback, before any port was bound."""
    (tmp_path / "bad_callbacks.py").write_text('raise RuntimeError("handler needs SLACK_URL")\n')
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + "litellm_settings: {callbacks: [bad_callbacks.handler]}\n")
    done = _serve(tmp_path, "--config", str(config), *_LOOPBACK, "--workers", workers)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "tracking serve: callback 'bad_callbacks.handler': importing 'bad_callbacks' failed: "
        "RuntimeError: handler needs SLACK_URL"
    ]


def test_a_worker_whose_app_cannot_be_built_reports_its_fault(tmp_path, monkeypatch):
    """A worker builds its app from the config file again: a file gone or changed since the
    supervisor read it raised from uvicorn's app loading, a traceback in each worker, which the
    supervisor started again and again. The worker now reports the fault where the supervisor
    looks, and ends with uvicorn's start-failure status."""
    from tracking.proxy.start_faults import FAULTS_ENV, FaultWatch

    watch = FaultWatch()
    try:
        monkeypatch.setenv(FAULTS_ENV, str(watch.folder))
        monkeypatch.setenv(proxy_app.CONFIG_ENV, str(tmp_path / "gone.yaml"))
        with pytest.raises(SystemExit) as ended:
            proxy_app.app_from_environment()
        assert ended.value.code == 3
        fault = watch.first()
        assert fault is not None and fault.status == 2
        assert "gone.yaml" in fault.message and "not found" in fault.message
    finally:
        watch.close()


#: A callback module whose handler, looked up as the server starts (in the app's lifespan, where
#: an event loop runs), exits the process as a library giving up would (``sys.exit``), or exits
#: it at once with uvicorn's start-failure status and no word of why (``os._exit(3)``).
#: ``tracking serve`` checking the config looks it up with no loop running, and is given it.
_EXITS_AT_START = """
import asyncio
import os
import sys


def _handler(kwargs, response, start_time, end_time):
    pass


def __getattr__(name):
    if name != "handler":
        raise AttributeError(name)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # tracking serve checking the config
        return _handler
    if os.environ.get("EXIT_HOW") == "os-exit-3":  # no word of why, no lifespan
        os._exit(3)
    sys.exit("licence server unreachable")
"""

_UNREPORTED = (
    "with uvicorn's start-failure status 3 and no fault of the proxy's "
    "(uvicorn's log above says why)"
)


def _exits_at_start(tmp_path: Path) -> Path:
    (tmp_path / "exits_at_start.py").write_text(_EXITS_AT_START)
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + "litellm_settings: {callbacks: [exits_at_start.handler]}\n")
    return config


def test_a_worker_uvicorn_stops_at_its_start_without_a_fault_stops_the_proxy_with_1(tmp_path):
    """A worker that exits with uvicorn's start-failure status without reporting a fault (in
    uvicorn's own start, or a process that just exits 3) stopped uvicorn's supervisor, and
    ``tracking serve`` exited 0, as if stopped. It exits 1 now, its last line naming the worker
    and its status."""
    config = _exits_at_start(tmp_path)
    done = _serve(
        tmp_path,
        *("--config", str(config), *_LOOPBACK, "--workers", "2"),
        env={"EXIT_HOW": "os-exit-3"},
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    worker = r"tracking serve: the proxy could not start: worker \[(\d+)\] exited "
    said = re.fullmatch(worker + re.escape(_UNREPORTED), last)
    assert said is not None, done.stderr
    assert f"Started server process [{said[1]}]" in done.stderr
    assert "a worker could not start: stopping the proxy" in done.stderr
    assert "SIGTERM" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_one_process_that_ends_itself_at_its_start_without_a_word_is_said_in_one_line(tmp_path):
    """One process (no ``--workers``) whose start ends it at once, ``os._exit(3)`` in a
    callback's lookup: no Python is left in it to say why, and ``tracking serve`` exited 3 with
    no line at all after uvicorn's "Waiting for application startup". The watcher of its start
    says it now, naming the process; the status stays the process's own."""
    config = _exits_at_start(tmp_path)
    done = _serve(tmp_path, "--config", str(config), *_LOOPBACK, env={"EXIT_HOW": "os-exit-3"})
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    said = re.fullmatch(r".*\[(\d+)\].*", last)
    assert said is not None, done.stderr
    assert last == (
        f"tracking serve: the proxy could not start: the server process [{said[1]}] ended "
        "during its start without a word (exited at once, as os._exit does, or killed by a "
        "signal; its exit status says which)"
    ), done.stderr
    assert f"Started server process [{said[1]}]" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


#: A callback module whose import takes long (a slow licence check, say): it leaves a mark,
#: then sleeps, so Ctrl-C comes while ``tracking serve`` checks the config.
_SLOW_IMPORT = """
import os
import time

open(os.environ["IMPORTING_MARK"], "w").close()
time.sleep(60)


def handler(kwargs, response, start_time, end_time):
    pass
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_while_the_config_is_checked_is_status_130_and_one_line(tmp_path, workers):
    """SIGINT as ``tracking serve`` imports a callback to check the config: it ended with
    status 130 and nothing on standard error, the user left to guess whether anything started.
    One line says it was interrupted there, and nothing was started."""
    (tmp_path / "slow_import.py").write_text(_SLOW_IMPORT)
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + "litellm_settings: {callbacks: [slow_import.handler]}\n")
    mark = tmp_path / "importing"
    process = subprocess.Popen(
        [*tracking_command(), "serve", "--config", str(config), *_LOOPBACK, "--workers", workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "IMPORTING_MARK": str(mark)},
        start_new_session=True,
    )
    try:
        wait_for(mark.exists, timeout=60)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == 130, err
    assert err.splitlines() == [
        "tracking serve: interrupted (Ctrl-C) while checking the config; nothing was started"
    ], err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_callback_lookup_that_exits_as_the_server_starts_is_a_config_fault(tmp_path, workers):
    """``sys.exit`` in a callback's code as the server starts (its module's ``__getattr__``, in
    the app's lifespan) went past the app's start-fault handling, a ``SystemExit`` being no
    ``Exception``: uvicorn logged its traceback, and ``tracking serve`` ended with the line of
    a start uvicorn stopped with no fault reported (status 1). It is the callback that fails to
    load now: status 2, one line of ours naming it, no traceback."""
    config = _exits_at_start(tmp_path)
    done = _serve(tmp_path, "--config", str(config), *_LOOPBACK, "--workers", workers)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "tracking serve: callback 'exits_at_start.handler': looking 'handler' up in "
        "'exits_at_start' failed: SystemExit: licence server unreachable"
    )
    assert "Traceback" not in done.stderr + done.stdout
    assert _UNREPORTED not in done.stderr


#: A callback module whose logger, made as the module is imported, raises a ``BaseException``
#: that is no ``Exception`` in its ``__init__`` (``RAISE`` names it), everywhere or (with
#: ``WHERE=workers``) only in the workers of ``tracking serve --workers N``, which checks the
#: config with an import of its own first.
_RAISES_IN_INIT = """
import multiprocessing
import os

import tracking


class Refused(BaseException):
    pass


RAISED = {
    "SystemExit": lambda: SystemExit("no licence for this logger"),
    "SystemExit-0": lambda: SystemExit(0),
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "BaseException": lambda: Refused("no licence for this logger"),
}


class Licensed(tracking.CustomLogger):
    def __init__(self):
        super().__init__()
        here = os.environ.get("WHERE") != "workers" or multiprocessing.parent_process()
        if here:
            raise RAISED[os.environ["RAISE"]]()


handler = Licensed()
"""

_IMPORT_FAILED = "tracking serve: callback 'raises_in_init.handler': importing 'raises_in_init' "


@pytest.mark.parametrize(
    ("raised", "where", "workers", "status", "last"),
    [
        ("SystemExit", "", "1", 2, "failed: SystemExit: no licence for this logger"),
        ("SystemExit-0", "", "2", 2, "failed: SystemExit: 0"),
        ("BaseException", "", "1", 2, "failed: Refused: no licence for this logger"),
        ("SystemExit", "workers", "2", 2, "failed: SystemExit: no licence for this logger"),
        ("BaseException", "workers", "2", 2, "failed: Refused: no licence for this logger"),
        ("KeyboardInterrupt", "workers", "2", 1, "KeyboardInterrupt"),
    ],
    ids=["exit", "exit-0", "base", "exit-in-workers", "base-in-workers", "ctrl-c-in-workers"],
)
@pytest.mark.parametrize("setting", ["callbacks", "success_callback"])
def test_a_callback_whose_logger_raises_a_base_exception_as_it_is_made_is_one_line(
    tmp_path, setting, raised, where, workers, status, last
):
    """A logger raising ``SystemExit`` (or another ``BaseException`` that is no ``Exception``)
    as its module made it: in ``tracking serve`` checking the config, the process ended with
    the exception's message alone (status 1), with nothing (``SystemExit(0)``: status 0, as if
    stopped), or with a traceback; in a worker, uvicorn logged its traceback and the last line
    said only that the worker stopped at its start. It is a callback that fails to load now,
    status 2, in one line of ours naming it, without a traceback. A ``KeyboardInterrupt``
    raised in a worker is the proxy that could not start, status 1 (raised in ``tracking
    serve`` itself, it is Ctrl-C's: status 130)."""
    (tmp_path / "raises_in_init.py").write_text(_RAISES_IN_INIT)
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + f"litellm_settings: {{{setting}: [raises_in_init.handler]}}\n")
    done = _serve(
        tmp_path,
        *("--config", str(config), *_LOOPBACK, "--workers", workers),
        env={"RAISE": raised, "WHERE": where},
    )
    assert done.returncode == status, done.stderr
    expected = (
        f"tracking serve: the proxy could not start: {last}"
        if status == 1
        else _IMPORT_FAILED + last
    )
    assert done.stderr.strip().splitlines()[-1] == expected, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    if where != "workers":  # refused before any port was bound or worker started
        assert done.stderr.splitlines() == [expected]


# -- 2. a busy port ---------------------------------------------------------------------------


#: The key ``--model`` takes from the environment: with it the config passes its checks, which
#: come first, and the busy port is what stops the start.
_A_KEY = {"OPENAI_API_KEY": "sk-test"}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_busy_port_is_one_line_naming_the_address_and_that_it_is_in_use(tmp_path, workers, host):
    """``localhost`` is ::1 and then 127.0.0.1 here (:func:`localhost_at_both_command`): ::1 is
    bound, 127.0.0.1 is taken, and the line names the address that failed, and whose it is."""
    tracking = localhost_at_both_command() if host == "localhost" else None
    whose = " (an address of localhost)" if host == "localhost" else ""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve(
            tmp_path,
            *("--model", "gpt-image-2", "--host", host, "--port", str(port)),
            *("--workers", workers),
            env=_A_KEY,
            tracking=tracking,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"tracking serve: error: cannot listen on 127.0.0.1:{port}{whose}: the port is in use "
        "(another process listens there; stop it or choose another --port)"
    ]


def test_a_busy_ipv6_port_names_the_address_in_brackets(tmp_path):
    """``::1:4000`` cannot be read as an address and a port; ``[::1]:4000`` can.

    It needs a socket bound on the IPv6 loopback, to make the port busy: a developer's
    container without IPv6 skips it (naming why); under CI, whose machines have ``::1``, its
    absence fails the test, as a missing service does (:func:`tests.services.unavailable`)."""
    holder = socket.socket(socket.AF_INET6)
    try:
        holder.bind(("::1", 0))
    except OSError as exc:
        holder.close()
        unavailable(f"no IPv6 loopback to bind (::1: {exc.strerror or exc})")
    with holder:
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve(
            tmp_path, "--model", "gpt-image-2", "--host", "::1", "--port", str(port), env=_A_KEY
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on [::1]:{port}: the port is in use" in done.stderr
    assert len(done.stderr.splitlines()) == 1


#: A callback module that takes the proxy's port as ``tracking serve`` reads the config (which
#: imports it), as another program could between a check of the port and the server's bind.
_PORT_TAKER = """
import os
import socket

held = socket.socket()
try:
    held.bind(("127.0.0.1", int(os.environ["PORT_TO_TAKE"])))
    held.listen()
except OSError:  # taken already (in a worker process, by its parent)
    held.close()


def handler(kwargs, response, start_time, end_time):
    pass
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_taken_while_the_proxy_starts_is_the_same_one_line(tmp_path, workers):
    """The port was checked free with a probe socket, closed, and bound again by uvicorn after
    the config was read: a port taken in between ended the start in uvicorn's own error line
    (``[Errno 98] Address already in use``) and status 3. The port is now bound once, by
    ``tracking serve``, and handed to uvicorn, so it is our one line and status 1 whenever the
    port was taken."""
    (tmp_path / "port_taker.py").write_text(_PORT_TAKER)
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + "litellm_settings: {callbacks: [port_taker.handler]}\n")
    port = free_port()
    done = _serve(
        tmp_path,
        *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", workers),
        env={"PORT_TO_TAKE": str(port)},
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"tracking serve: error: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(another process listens there; stop it or choose another --port)"
    ]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_0_is_named_in_the_summary_and_served_from_the_summary_on(tmp_path, workers):
    """``--port 0``: the summary names the port the system chose, and the socket bound for it is
    the one uvicorn serves on, listening from then on: a request sent as soon as the line is
    read, while the app is still starting, waits and is answered (it was refused while uvicorn
    had not bound the port yet; and no line named the port before uvicorn's own)."""
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT)
    args = ("--config", str(config), *_LOOPBACK, "--workers", workers)
    with _started(tmp_path, *args, until="tracking.proxy: listening: ") as (_, lines):
        found = re.search(r"tracking\.proxy: listening: http://127\.0\.0\.1:(\d+)$", lines[-1])
        assert found is not None, "".join(lines)
        port = int(found[1])
        assert port != 0
        answer = httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=60)
        assert answer.status_code == 200, answer.text


def test_sigterm_stops_one_process_with_status_0(tmp_path):
    """One process stopped by SIGTERM, every request done and every sink flushed, was then
    killed by the signal uvicorn raised again (status 143, or -15 here), where ``--workers N``
    and Ctrl-C exit 0, as the exit-status table says."""
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT)
    with _started(tmp_path, "--config", str(config), *_LOOPBACK) as (process, lines):
        assert "Application startup complete" in lines[-1], "".join(lines)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, "".join(lines) + out
        assert "Application shutdown complete" in out
        # the watcher of the start ended once the app started: it says nothing at the stop
        assert "ended during its start" not in "".join(lines) + out


# -- 3. a name with several addresses ------------------------------------------------------


def _answers(port: int) -> list[int]:
    """The liveliness status the proxy answers at 127.0.0.1 and at [::1] on ``port``."""
    hosts = ("127.0.0.1", "[::1]")
    return [
        httpx.get(f"http://{h}:{port}/health/liveliness", timeout=60).status_code for h in hosts
    ]


@pytest.mark.parametrize("port", ["free", "0"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_host_name_is_served_at_every_address_it_resolves_to(tmp_path, workers, port):
    """``--host localhost`` was bound at its first IPv4 address alone: a client resolving
    localhost to ::1 first was refused, where one uvicorn process had listened at both. Every
    address is bound now, at one port even for ``--port 0`` (the system's choice for the first
    address, taken at the others too), which the summary names with the host as given."""
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT)
    chosen = str(free_port()) if port == "free" else port
    args = ("--config", str(config), "--host", "localhost", "--port", chosen, "--workers", workers)
    started = _started(
        tmp_path, *args, until="tracking.proxy: listening: ", tracking=localhost_at_both_command()
    )
    with started as (_, lines):
        found = re.search(r"tracking\.proxy: listening: http://localhost:(\d+)$", lines[-1])
        assert found is not None, "".join(lines)
        assert port == "0" or found[1] == chosen
        assert _answers(int(found[1])) == [200, 200]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_ipv6_wildcard_is_served_over_ipv4_too(tmp_path, workers):
    """``--host ::`` means every address, IPv4's too, as ``--host ""`` does: its one socket is
    dual-stack whatever the system's default, so a client reaching the proxy at 127.0.0.1 is
    served as one at [::1] is, at the one port the summary names."""
    require_ipv6_loopback()
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT)
    args = ("--config", str(config), "--host", "::", "--port", "0", "--workers", workers)
    with _started(tmp_path, *args, until="tracking.proxy: listening: ") as (_, lines):
        found = re.search(r"tracking\.proxy: listening: http://\[::\]:(\d+)$", lines[-1])
        assert found is not None, "".join(lines)
        assert _answers(int(found[1])) == [200, 200]


# -- 4. a master key LiteLLM would refuse -----------------------------------------------------


@pytest.mark.parametrize("key", ["master-key-0123456789", "SK-upper-0123456789", "sk-", " sk-x"])
def test_a_master_key_not_starting_with_sk_is_refused_at_start(tmp_path, key):
    """LiteLLM requires ``sk-`` of a master key (its keys all start so; clients and gateways
    written for it rely on that). Any other key was accepted."""
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT + f"general_settings: {{master_key: '{key}'}}\n")
    done = _serve(tmp_path, "--config", str(config), "--host", "127.0.0.1", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert "general_settings.master_key: must start with 'sk-'" in done.stderr
    assert key.strip() not in done.stderr.replace("'sk-'", "")  # a secret is never repeated
    assert "Traceback" not in done.stderr


def test_a_master_key_from_the_environment_is_held_to_the_same_rule(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(_DEPLOYMENT)
    with pytest.raises(ConfigurationError) as refused:
        load_config(config, environ={"TRACKING_MASTER_KEY": "hunter2-master"})
    assert refused.value.message.startswith("TRACKING_MASTER_KEY: must start with 'sk-'")
    assert "hunter2" not in refused.value.message
    good = load_config(config, environ={"TRACKING_MASTER_KEY": MASTER_KEY})
    assert good.general_settings.master_key == MASTER_KEY


def test_the_quickstart_key_passes_the_rule():
    from tracking.proxy.quickstart import MASTER_KEY as QUICKSTART_KEY

    assert QUICKSTART_KEY.startswith("sk-") and len(QUICKSTART_KEY) > 3


# -- 5. the SQLite ledger's missing folder --------------------------------------------------


def test_a_missing_ledger_folder_is_created_and_named_in_one_line(tmp_path, caplog):
    """Created, as a container's empty volume needs; and said, so a misspelt path shows."""
    from tracking.proxy.ledger import make_ledger_folder

    folder = tmp_path / "data" / "ledgr"
    config = tmp_path / "config.yaml"
    config.write_text(
        _DEPLOYMENT + f"general_settings: {{database_url: 'sqlite:///{folder}/tracking.db'}}\n"
    )
    with caplog.at_level(logging.INFO, logger="tracking.proxy"):
        assert make_ledger_folder(load_config(config, environ={})) == folder
        assert make_ledger_folder(load_config(config, environ={})) is None  # said once
    assert folder.is_dir()
    said = [r.getMessage() for r in caplog.records if "ledger" in r.getMessage()]
    assert said == [f"ledger: created the folder {folder} for tracking.db (it did not exist)"]


def test_serve_names_the_ledger_folder_it_created(tmp_path):
    """Even with the image store off (which made the folder as a side effect when on), the
    start made the folder and said so; without the folder the start failed."""
    folder = tmp_path / "volume" / "ledger"
    config = tmp_path / "config.yaml"
    config.write_text(
        _DEPLOYMENT
        + "general_settings: {image_store: {type: 'off'}, "
        + f"database_url: 'sqlite:///{folder}/tracking.db'}}\n"
    )
    with _started(tmp_path, "--config", str(config), *_LOOPBACK) as (_, lines):
        pass
    log = "".join(lines)
    assert "Application startup complete" in log, log
    assert f"ledger: created the folder {folder} for tracking.db (it did not exist)" in log
    assert (folder / "tracking.db").is_file()


def test_a_ledger_folder_that_cannot_be_created_is_a_config_fault(tmp_path):
    from tracking.proxy.ledger import make_ledger_folder

    (tmp_path / "a-file").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        _DEPLOYMENT + f"general_settings: {{database_url: 'sqlite:///{tmp_path}/a-file/x/t.db'}}\n"
    )
    with pytest.raises(ConfigurationError) as refused:
        make_ledger_folder(load_config(config, environ={}))
    assert refused.value.message.startswith(f"cannot create {tmp_path}/a-file/x, the folder of")
