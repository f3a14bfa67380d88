"""How many worker deaths ``tracking serve --workers N`` starts again before it stops.

uvicorn's supervisor starts a worker that died (killed by a signal, or exited by itself once
started) again, each time, without limit: a worker killed at every start (a memory limit too
small for N workers, a crash in a native library) made a loop that never ended, and the proxy
never exited, so systemd or Kubernetes never saw it fail. :class:`DeathLimit` bounds it: a death
is started again while at most ``TRACKING_WORKER_RESTARTS`` (default 5) deaths fall within the
last ``TRACKING_WORKER_RESTARTS_SECONDS`` (default 60); one more stops the proxy, and
``tracking serve`` exits with status 1, its last line naming how the workers died.

:class:`BoundedMultiprocess` is uvicorn's ``Multiprocess`` with its check of the workers
(``keep_subprocess_alive``) wrapped, nothing copied: before it, workers found dead beyond the
limit stop the supervisor instead (as SIGTERM does, without a signal: every other worker
finishes its requests and flushes its sinks); after it, each worker it replaced is one line,
with how it died: a worker the supervisor killed itself, because it stopped answering its
health check (a worker stuck in a loop, or stopped), is said to be so, not "killed by SIGKILL"
as one killed from outside (the kernel's out-of-memory killer) is. A worker that exits with
uvicorn's start-failure status (3) stops the proxy at once, as uvicorn's own supervisor does:
with the fault it reported, when it did (:mod:`tracking.proxy.start_faults`), else with status 1
and a line naming the worker (uvicorn's supervisor stopped as if nothing had failed, and
``tracking serve`` exited 0).
"""

from __future__ import annotations

import logging
import signal
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from uvicorn.supervisors import Multiprocess

from .start_faults import STARTUP_FAILURE, StartFault, unreported

__all__ = [
    "DEFAULT_RESTARTS",
    "DEFAULT_SECONDS",
    "RESTARTS_ENV",
    "SECONDS_ENV",
    "BoundedMultiprocess",
    "Death",
    "DeathLimit",
]

log = logging.getLogger("tracking.proxy")

#: How many worker deaths within the window are started again; one more stops the proxy.
RESTARTS_ENV = "TRACKING_WORKER_RESTARTS"
DEFAULT_RESTARTS = 5
#: The window, in seconds, the deaths are counted in.
SECONDS_ENV = "TRACKING_WORKER_RESTARTS_SECONDS"
DEFAULT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Death:
    """A worker that ended: its pid, its exit code (``-N``: killed by signal N) and when; and,
    when the supervisor killed it because it did not answer its health check, that check's
    timeout in seconds."""

    pid: int | None
    exitcode: int
    at: float
    unanswered: float | None = None

    @property
    def cause(self) -> str:
        """``killed by SIGKILL``, ``exited with status 1``, ``killed for not answering
        uvicorn's health check within 5 s``."""
        if self.unanswered is not None:
            return f"killed for not answering uvicorn's health check within {self.unanswered:g} s"
        if self.exitcode >= 0:
            return f"exited with status {self.exitcode}"
        try:
            return f"killed by {signal.Signals(-self.exitcode).name}"
        except ValueError:
            return f"killed by signal {-self.exitcode}"


class DeathLimit:
    """The workers' deaths within the last ``seconds``: at most ``restarts`` are started again."""

    def __init__(
        self, restarts: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.restarts = restarts
        self.seconds = seconds
        self.clock = clock
        self._deaths: deque[Death] = deque()

    @classmethod
    def from_environment(cls) -> DeathLimit:
        """``TRACKING_WORKER_RESTARTS`` and ``TRACKING_WORKER_RESTARTS_SECONDS`` (a value that
        is not a whole number >= 0, or not a number of seconds, is logged and its default used)."""
        from ..environment_numbers import number_from_environment, seconds_from_environment

        whole = "a whole number >= 0"
        restarts = number_from_environment(RESTARTS_ENV, DEFAULT_RESTARTS, int, whole)
        return cls(restarts, seconds_from_environment(SECONDS_ENV, DEFAULT_SECONDS))

    def death(self, pid: int | None, exitcode: int, unanswered: float | None = None) -> Death:
        return Death(pid, exitcode, self.clock(), unanswered)

    def allows(self, deaths: Sequence[Death]) -> bool:
        """Whether ``deaths``, not counted yet, may be started again."""
        return len(self._recent()) + len(deaths) <= self.restarts

    def count(self, death: Death) -> None:
        """Count ``death``, started again."""
        self._deaths.append(death)

    def counted(self) -> int:
        """The deaths started again within the window."""
        return len(self._recent())

    def verdict(self, deaths: Sequence[Death]) -> StartFault:
        """Why the proxy stops when ``deaths`` are not allowed: status 1, one line naming how
        the workers died and the settings that bound it."""
        every = [*self._recent(), *deaths]
        causes = Counter(death.cause for death in every)
        said = ", ".join(f"{count} {cause}" for cause, count in causes.items())
        last = every[-1]
        return StartFault(
            f"worker deaths within {self.seconds:g} s: {len(every)} ({said}; the last, "
            f"[{last.pid}], {last.cause}): the proxy stopped instead of starting another "
            f"({RESTARTS_ENV}={self.restarts} restarts within "
            f"{SECONDS_ENV}={self.seconds:g})",
            1,
        )

    def _recent(self) -> deque[Death]:
        since = self.clock() - self.seconds
        while self._deaths and self._deaths[0].at <= since:
            self._deaths.popleft()
        return self._deaths


class BoundedMultiprocess(Multiprocess):
    """uvicorn's supervisor, stopping when a worker fails at its start, or its workers die more
    often than ``limit`` allows; ``stopped`` then says why (``None`` otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # uvicorn up to 0.50 takes a target too
        self.limit = DeathLimit.from_environment()
        self.stopped: StartFault | None = None
        #: the pids of the workers the supervisor killed while they were running: they did
        #: not answer its health check (a worker found dead is killed too, to no effect)
        self._unanswered: set[int] = set()
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()  # their kill() watched

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        if self._failed_start(self.processes):
            return
        dead = [
            self.limit.death(process.process.pid, code)
            for process in self.processes
            if (code := process.process.exitcode) is not None and code != STARTUP_FAILURE
        ]
        if dead and not self.limit.allows(dead):
            self._stop(self.limit.verdict(dead), "workers keep dying")
            return
        before = list(self.processes)
        for process in before:
            self._watch_kill(process)
        super().keep_subprocess_alive()
        if self._failed_start(before):  # one failed after the look above
            return
        for old, new in zip(before, self.processes, strict=False):
            if new is old:
                continue
            code = old.process.exitcode
            pid = old.process.pid
            death = self.limit.death(
                pid,
                -signal.SIGKILL if code is None else code,
                self._healthcheck_timeout() if pid in self._unanswered else None,
            )
            self._unanswered.discard(pid)
            if not self.limit.allows([death]):  # it died (or hung) after the look above
                # its replacement is stopped too
                self._stop(self.limit.verdict([death]), "workers keep dying")
                continue
            self.limit.count(death)
            log.warning(
                "worker [%s] %s: started again as [%s] (%d of %d restarts within %g s)",
                death.pid,
                death.cause,
                new.process.pid,
                self.limit.counted(),
                self.limit.restarts,
                self.limit.seconds,
            )

    def _watch_kill(self, process: Any) -> None:
        """Note, when the supervisor kills ``process`` (uvicorn's ``Process``), whether it was
        still running: the supervisor kills a worker that did not answer its health check in
        time (its exit code is then SIGKILL's) and, to no effect, one it found dead (which keeps
        its own, SIGKILL's too when the out-of-memory killer ended it)."""
        if process in self._watched:
            return
        self._watched.add(process)
        kill = process.kill

        def watched_kill() -> None:
            if process.process.is_alive():  # not dead: it did not answer the health check
                self._unanswered.add(process.process.pid)
            kill()

        process.kill = watched_kill

    def _healthcheck_timeout(self) -> float:
        """How long the supervisor waits for a worker's answer (uvicorn's
        ``timeout_worker_healthcheck``; 5 s in the versions without that setting)."""
        return float(getattr(self.config, "timeout_worker_healthcheck", 5))

    def _failed_start(self, processes: Sequence[Any]) -> bool:
        """Whether one of ``processes`` exited with uvicorn's start-failure status: the proxy
        is stopped then (uvicorn's own supervisor stopped too, though nothing said why)."""
        for process in processes:
            if process.process.exitcode == STARTUP_FAILURE:
                said = f"worker [{process.process.pid}] exited"
                self._stop(unreported(said), "a worker could not start")
                return True
        return False

    def _stop(self, verdict: StartFault, why: str) -> None:
        """Stop every worker as SIGTERM does, and end ``tracking serve`` with ``verdict``."""
        if self.stopped is None:
            self.stopped = verdict
            log.error("%s: stopping the proxy", why)
        self.should_exit.set()
