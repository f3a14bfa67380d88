"""What tracking finishes before its process goes, however the process ends.

Queued work (a ``background`` ledger's rows, user callbacks not yet delivered) is finished by
handlers registered here. Python runs them for most endings, but not all:

- **interpreter exit** (the script returns, ``sys.exit``): :mod:`atexit` runs them.
- **a ``multiprocessing`` child** started by ``fork`` or ``forkserver`` (``Pool`` and
  ``ProcessPoolExecutor`` workers included) ends with ``os._exit`` once its target returns, so
  :mod:`atexit` never runs there. :mod:`multiprocessing` runs its own finalizers instead: the
  handlers are registered as one of them in every such child.
- **SIGTERM** (``docker stop``, Kubernetes, ``Pool.terminate``, ``kill``) ends the process at
  once under Python's default disposition, running neither. :func:`exit_on_sigterm` makes it a
  normal exit instead (:class:`Terminated`, status 143) in the main thread, so both run. A
  ledger calls it when it opens and the callbacks' delivery when it starts; it changes SIGTERM
  only while its disposition is still Python's default, so a handler of the application's own
  (uvicorn's, gunicorn's, Celery's) is never replaced. ``TRACKING_HANDLE_SIGTERM=0`` leaves
  SIGTERM alone.

``kill -9`` and ``os._exit`` run nothing: a durable ledger's intents are what cover those.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["SIGTERM_EXIT_STATUS", "Terminated", "cancel", "exit_on_sigterm", "on_exit"]

log = logging.getLogger("tracking")

#: The exit status of a process SIGTERM ended through :func:`exit_on_sigterm`: 128 + 15, what a
#: shell reports for a process the signal killed.
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
_SIGTERM_SETTING = "TRACKING_HANDLE_SIGTERM"
#: Multiprocessing runs finalizers of higher priority first; its queues' own use lower ones.
_FINALIZER_PRIORITY = 100

_handlers: list[Callable[[], None]] = []
_lock = threading.Lock()
_finalizer_pid = 0  # the process whose multiprocessing exit runs the handlers, once registered
_sigterm_decided = False


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM once :func:`exit_on_sigterm` has run: a normal exit,
    which integrations' hooks pass on (they swallow a plain ``SystemExit``) and ``except
    Exception`` does not catch."""


def on_exit(handler: Callable[[], None]) -> None:
    """Run ``handler`` when this process ends: at interpreter exit and at a multiprocessing
    child's exit. Handlers run last registered first, as :mod:`atexit` runs them."""
    atexit.register(handler)
    with _lock:
        _handlers.append(handler)
    if _in_multiprocessing_child():
        _register_finalizer()


def cancel(handler: Callable[[], None]) -> None:
    """Forget ``handler`` (it ran already, or its owner was shut down)."""
    atexit.unregister(handler)
    with _lock:
        while handler in _handlers:
            _handlers.remove(handler)


def _run_handlers() -> None:
    with _lock:
        handlers = _handlers[::-1]
    for handler in handlers:
        try:
            handler()
        except Exception:  # one handler's failure must not keep the next from running
            log.exception("tracking: an exit handler failed")


# -- multiprocessing children ---------------------------------------------------------------


def _in_multiprocessing_child() -> bool:
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None


class _Anchor:
    """What multiprocessing's after-fork registry holds (it keeps a weak reference)."""


_ANCHOR = _Anchor()
_after_fork_registered = False


def _register_finalizer() -> None:
    """Make this process's multiprocessing exit run the handlers (once per process)."""
    global _finalizer_pid
    from multiprocessing import util

    if _finalizer_pid == os.getpid():
        return
    _finalizer_pid = os.getpid()
    util.Finalize(None, _run_handlers, exitpriority=_FINALIZER_PRIORITY)


def _before_fork() -> None:
    # Multiprocessing clears a forked child's finalizers before running its target, and runs
    # the functions registered with ``register_after_fork`` after that: the finalizer has to be
    # registered there, and this is the last moment to ask for it. Only when multiprocessing is
    # already loaded: nothing else ends a child without ``atexit``, and importing it costs.
    global _after_fork_registered
    util = sys.modules.get("multiprocessing.util")
    if util is None or _after_fork_registered:
        return
    _after_fork_registered = True
    util.register_after_fork(_ANCHOR, lambda _anchor: _register_finalizer())


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# -- SIGTERM --------------------------------------------------------------------------------


def exit_on_sigterm() -> bool:
    """Make SIGTERM a normal exit (:class:`Terminated`, status 143) so that the exit handlers
    run; True when SIGTERM is handled so now. Only from the main thread, only while SIGTERM has
    Python's default disposition, and not with ``TRACKING_HANDLE_SIGTERM=0``. A second SIGTERM
    during the exit ends the process at once."""
    global _sigterm_decided
    if _sigterm_decided or threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    _sigterm_decided = True
    if os.environ.get(_SIGTERM_SETTING, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False  # the application handles it: its handler decides how the process ends
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not waited on
    raise Terminated(SIGTERM_EXIT_STATUS)
