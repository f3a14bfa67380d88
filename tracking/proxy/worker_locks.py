"""Whether a process that shares a file with this one is alive: a lock it holds while it lives.

Each process using the machine's counters file (:mod:`.machine_counters`) holds an exclusive
``flock`` on a file of its own beside it, ``<counters file>.worker-<id>.lock`` (``id``: random,
never a process id, which the system reuses), for as long as it lives. The kernel lets go of a
process's locks when it ends, however it ends (``kill -9``, out of memory, ``os._exit``), and only
then: another process that can take the lock knows the owner is dead, at once, and one that
cannot knows it is alive, however slow, stopped or busy it is. A lock file is made under another
name, locked, then renamed, so a file under its final name is locked from its first moment; a
missing file (removed by hand, or a process of a version before 2026-12-07, which had none) says
nothing, and is never taken for a dead process. The file's folder must be local (a lock on a
network file system is not reliable), as the counters file's SQLite needs anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid

__all__ = ["WorkerLock", "is_dead", "lock_path", "remove_lock"]


def lock_path(shared: str, worker: str) -> str:
    """The lock file of ``worker`` beside the ``shared`` file."""
    return f"{shared}.worker-{worker}.lock"


class WorkerLock:
    """This process's lock beside ``shared``, held until :meth:`release` or its end."""

    def __init__(self, shared: str) -> None:
        self.shared = shared
        self.worker = uuid.uuid4().hex
        self.path = lock_path(shared, self.worker)
        making = f"{self.path}.new"
        self._fd: int | None = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never refused
            os.replace(making, self.path)
        except BaseException:
            os.close(self._fd)
            with contextlib.suppress(OSError):
                os.unlink(making)
            raise

    def release(self, *, remove: bool) -> None:
        """Let go of the lock (``remove``: the file too, when nothing of this process is left
        for the others to find it dead for)."""
        if self._fd is None:
            return
        if remove:
            remove_lock(self.shared, self.worker)
        os.close(self._fd)
        self._fd = None


def is_dead(shared: str, worker: str) -> bool:
    """Whether ``worker``'s process is known dead: its lock file is there and nobody holds it."""
    try:
        fd = os.open(lock_path(shared, worker), os.O_RDWR)
    except OSError:
        return False  # no lock file: unknown, never taken for dead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: alive
    finally:
        os.close(fd)  # (lets go of the lock too, when it was taken)
    return True


def remove_lock(shared: str, worker: str) -> None:
    """Remove the lock file of ``worker``, known dead (no process takes it again)."""
    with contextlib.suppress(OSError):
        os.unlink(lock_path(shared, worker))
