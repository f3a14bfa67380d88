"""How a proxy process that cannot start tells ``tracking serve``, which then stops.

``tracking serve`` checks what it can before any port is bound (the config, the router, the
image store). Some faults show only as a process starts serving: an SQLite ledger path that is a
folder or no database, an outbox folder that cannot be made, a callback that fails to load. Each
becomes a :class:`StartFault`, one message and an exit status: 2 for a fault of the
configuration (any :class:`~tracking.errors.TrackingError`), 1 for anything else, and 1 for a
process that uvicorn stopped at its start with no fault reported (:func:`unreported`).

With one process the app keeps its fault and ``tracking serve`` reports it. Under ``--workers
N`` the fault is in a worker: it writes it, as a file, into the private folder named by
``TRACKING_START_FAULTS``; the supervising process watches that folder (:class:`FaultWatch`),
stops every worker at the first fault (uvicorn's supervisor would otherwise exit 0, or start the
worker again and again) and exits with the fault's status and message. It stops the supervisor
as SIGTERM would, but without a signal: uvicorn's log never says one was received.

One process (no ``--workers``) that ends at its start with no Python left to say why (its own
``os._exit(3)``, a signal that kills it) cannot report anything itself: a small process watches
its start (:class:`StartWatch`), and says so in one line when the start ends that way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrackingError

__all__ = [
    "FAULTS_ENV",
    "STARTUP_FAILURE",
    "FaultWatch",
    "StartFault",
    "StartWatch",
    "described",
    "report",
    "unreported",
]

log = logging.getLogger("tracking.proxy")

#: The folder a worker writes its start fault into (set by ``tracking serve --workers N``).
FAULTS_ENV = "TRACKING_START_FAULTS"
_POLL_SECONDS = 0.2
#: uvicorn's exit status for a start it stopped (``uvicorn.config.STARTUP_FAILURE``).
STARTUP_FAILURE = 3


@dataclass(frozen=True, slots=True)
class StartFault:
    """Why a proxy process could not start, and the exit status ``tracking serve`` ends with."""

    message: str
    status: int

    @classmethod
    def of(cls, exc: BaseException) -> StartFault:
        if isinstance(exc, TrackingError):
            return cls(exc.message, 2)
        return cls.could_not_start(described(exc))

    @classmethod
    def could_not_start(cls, detail: str) -> StartFault:
        """Status 1: the proxy could not start, for a reason outside its configuration."""
        return cls(f"the proxy could not start: {detail}", 1)


def described(exc: BaseException) -> str:
    """``RuntimeError: its message``, or the type's name alone when it says nothing (a bare
    ``SystemExit``, ``KeyboardInterrupt``)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unreported(what: str) -> StartFault:
    """Why the proxy stops when ``what`` (a worker, or the one process's uvicorn) stopped at its
    start with uvicorn's start-failure status, no fault reported: a failure in uvicorn's own
    start, or in the app's lifespan that the app did not catch. Status 1; uvicorn's log above
    says what failed (without this, ``tracking serve`` exited 0, or 3 with one process)."""
    return StartFault.could_not_start(
        f"{what} with uvicorn's start-failure status {STARTUP_FAILURE} and no fault of the "
        "proxy's (uvicorn's log above says why)"
    )


def report(fault: StartFault) -> None:
    """Leave ``fault`` where the supervising process looks (nothing without a supervisor)."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    final = Path(folder) / f"{os.getpid()}.json"
    partial = final.with_suffix(".tmp")
    try:  # written whole, then renamed: the watcher never reads half a fault
        partial.write_text(json.dumps({"message": fault.message, "status": fault.status}))
        partial.replace(final)
    except OSError:
        log.exception("cannot report the start fault to tracking serve")


class FaultWatch:
    """The supervising process's side: a private folder for the workers' faults, watched."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tracking-start-"))
        self._stop = threading.Event()

    def first(self) -> StartFault | None:
        """The earliest fault a worker reported, or None."""
        found: list[tuple[int, StartFault]] = []
        for path in self.folder.glob("*.json"):
            try:
                written = json.loads(path.read_text())
                found.append(
                    (path.stat().st_mtime_ns, StartFault(written["message"], written["status"]))
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return min(found, key=lambda item: item[0])[1] if found else None

    @contextlib.contextmanager
    def watching(self, stop: Callable[[], None]) -> Iterator[None]:
        """While the supervisor runs: at the first fault, call ``stop`` (which asks it to stop
        every worker and return, as SIGTERM does), from the watching thread."""
        os.environ[FAULTS_ENV] = str(self.folder)  # the workers inherit it
        watcher = threading.Thread(
            target=self._watch, args=(stop,), name="tracking-start-faults", daemon=True
        )
        watcher.start()
        try:
            yield
        finally:
            self._stop.set()
            watcher.join()
            os.environ.pop(FAULTS_ENV, None)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _watch(self, stop: Callable[[], None]) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            if self.first() is not None:
                log.error("a worker could not start: stopping the proxy")
                stop()
                return


#: The watcher of one process's start: its standard input is a pipe whose other end the watched
#: process holds; end of file with no byte read first means that process ended during its start.
#: Ctrl-C reaches the whole process group: the watcher lets the proxy say what it stopped.
_WATCHER = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "if not os.read(0, 1):\n"
    "    os.write(2, sys.argv[1].encode() + b'\\n')\n"
)


def ended_unheard(pid: int) -> str:
    """What ``tracking serve`` says of its one process ``pid`` that ended during its start with
    nothing of Python left to report it (its exit status is the process's own)."""
    return (
        f"tracking serve: the proxy could not start: the server process [{pid}] ended during "
        "its start without a word (exited at once, as os._exit does, or killed by a signal; "
        "its exit status says which)"
    )


class StartWatch:
    """One process's start, watched by a small process of its own (see the module docstring).

    :meth:`release` once the start is over (the app started, or failed and said why), and the
    watcher ends without a word; should this process end before, the watcher reads end of file
    and writes :func:`ended_unheard`'s line on the standard error they share. Nothing of it runs
    once the proxy serves."""

    def __init__(self) -> None:
        read, self._write = os.pipe()  # neither end is inherited by other children
        try:
            self._watcher: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603 - ours
                [sys.executable, "-I", "-S", "-c", _WATCHER, ended_unheard(os.getpid())],
                stdin=read,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:  # the start goes on, unwatched
            log.warning("cannot watch the proxy's start: %s", exc)
            self._watcher = None
        finally:
            os.close(read)
        self._released = threading.Lock()

    def release(self) -> None:
        """The start is over: the watcher ends without a word. Idempotent."""
        if not self._released.acquire(blocking=False):
            return
        with contextlib.suppress(OSError):  # the watcher is gone already: nothing to tell
            os.write(self._write, b"x")
        os.close(self._write)
        if self._watcher is not None:  # reaped as it ends, not left a zombie while we serve
            threading.Thread(
                target=self._watcher.wait, name="tracking-start-watch", daemon=True
            ).start()

    def close(self) -> None:
        """Release, and wait for the watcher to end."""
        self.release()
        if self._watcher is None:
            return
        try:
            self._watcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._watcher.kill()
            self._watcher.wait()
