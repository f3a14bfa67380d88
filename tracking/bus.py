"""Delivery of each call's event to integrations and user callbacks (docs/architecture.md).

Receivers come from three lists in :mod:`tracking`: ``success_callback``, ``failure_callback``
and ``callbacks``. Each call reads them once (the ids of their entries), so changing the lists
while calls are in flight is safe and costs no lock; when they changed, a snapshot of them
(``tuple(...)``) is turned into a dispatch plan once, reused while they stay the same. They are
:class:`~tracking.callback_list.CallbackList` objects: setting one (a list set to None is empty,
a lone entry assigned without a list is one entry) or adding to it checks the new entries
(:func:`check_entries`) before anything changes. What only using an entry tells (a built-in
name whose extra is not installed), or a list changed past those checks
(``list.append(tracking.callbacks, x)``), refuses a call with a
:class:`~tracking.errors.ConfigurationError` at its start, before anything is sent; a bad entry
that appears while a call is in flight is skipped at its end, reported (:func:`report_failure`)
and never raised into it, and every other entry still receives the event.

An entry is one of:

* a built-in integration name (``"prometheus"``, ``"otel"``, ``"sql"``, ``"structlog"``), resolved
  lazily to one shared instance, or an object implementing the
  :class:`~tracking.integration.Integration` protocol. Integrations receive success and failure
  events whichever list names them, each exactly once per call, in the call on the caller's
  thread (``on_start`` before the request is sent, ``on_end`` before the call returns), so they
  must be fast; what they raise, except ``KeyboardInterrupt``, is counted, never raised into the
  call;
* a plain function ``fn(kwargs, response, start_time, end_time)``, sync or async: called for
  successes from ``success_callback``, failures from ``failure_callback``, both from ``callbacks``;
* a :class:`~tracking.user_callbacks.CustomLogger`, likewise by list.

User callbacks never run in the call: sync handlers run on one worker thread fed by a bounded
queue (when full the oldest item is dropped, counted and warned about); async handlers run on
the bus's own event loop thread, for sync and async calls alike, so a callback still running
when the caller's loop ends (``asyncio.run`` returning) is not cancelled: it runs exactly once,
whatever the caller's loop does. Each runs in its own copy of the caller's context, taken when
the call ended, so it reads the caller's context variables. A callback that raises (anything,
``SystemExit`` included) is logged once per callback (then at most once a minute) and counted;
one that runs past the callback timeout is abandoned (a replacement worker takes over the
queue) and counted. A plain
function that returns an awaitable (a lambda calling an async function) has it awaited on the
bus's loop, as an async callback. :func:`flush` and :func:`shutdown` deliver everything queued
and run at interpreter exit; :func:`flush` called from a callback does not wait for the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import logging
import math
import os
import reprlib
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .call_control import caller_context
from .callback_list import CallbackList
from .errors import ConfigurationError
from .integration import Integration
from .process_exit import Terminated, exit_on_sigterm, on_exit
from .user_callbacks import (
    LOGGER_METHODS,
    CustomLogger,
    Receiver,
    callback_kwargs,
    callback_name,
    receivers_for,
    unread_hooks,
)

if TYPE_CHECKING:
    from .events import ImageEditEvent
    from .integration import CallStart
    from .request import ImageEditRequest
    from .response import ImageResponse

__all__ = [
    "ACCEPTED",
    "BUILTIN_INTEGRATIONS",
    "DEFAULT_CALLBACK_TIMEOUT",
    "DEFAULT_QUEUE_SIZE",
    "check_entries",
    "check_entry",
    "configure",
    "counters",
    "dispatch_lost_attempts",
    "dispatch_start",
    "emit_async",
    "emit_sync",
    "expect",
    "flush",
    "integrations",
    "loaded_integrations",
    "record_drop",
    "register",
    "report_failure",
    "resolve",
    "shutdown",
]

log = logging.getLogger("tracking")

#: Built-in names -> "module:class"; imported on first use so unused integrations cost nothing.
BUILTIN_INTEGRATIONS: dict[str, str] = {
    "prometheus": "tracking.integrations.prometheus:PrometheusLogger",
    "otel": "tracking.integrations.otel:OtelLogger",
    "sql": "tracking.integrations.sql:SqlLedger",
    "structlog": "tracking.integrations.structlog:StructlogLogger",
}
DEFAULT_CALLBACK_TIMEOUT = 30.0
DEFAULT_QUEUE_SIZE = 10_000
#: The sink name under which user-callback drops are counted.
USER_CALLBACKS_SINK = "user_callbacks"
_REPORT_INTERVAL = 60.0  # seconds between repeated log lines about the same callback

_INSTANCES: dict[str, Integration] = {}
_LOCK = threading.Lock()


def resolve(entry: Any) -> Integration | None:
    """The integration an entry names or is; None for entries that are not integrations."""
    if isinstance(entry, str):
        instance = _INSTANCES.get(entry)
        if instance is None:
            with _LOCK:
                instance = _INSTANCES.get(entry) or _load(entry)
                _INSTANCES[entry] = instance
        return instance
    if isinstance(entry, Integration):
        return entry
    return None


def _load(name: str) -> Integration:
    from .extras import extra_for, install_hint

    target = BUILTIN_INTEGRATIONS.get(name)
    if target is None:
        raise _unknown_name(name)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"callback {name!r} needs {exc.name!r}, which is not installed: "
            f"{install_hint(extra_for(exc.name, name) or name)}"
        ) from None
    instance: Integration = getattr(module, attribute)()
    return instance


# -- counters ----------------------------------------------------------------------------------

_COUNTER_LOCK = threading.Lock()
_CALLBACK_ERRORS: dict[str, int] = {}
_CALLBACK_TIMEOUTS: dict[str, int] = {}
_EVENTS_DROPPED: dict[str, int] = {}
_INTEGRATION_ERRORS: dict[str, int] = {}
_TABLES = {
    "callback_errors": _CALLBACK_ERRORS,
    "events_dropped": _EVENTS_DROPPED,
    "integration_errors": _INTEGRATION_ERRORS,
}
_LAST_REPORT: dict[str, float] = {}
_SUPPRESSED: dict[str, int] = {}


def counters() -> dict[str, dict[str, int]]:
    """The bus's own counters, totals since the process started (a snapshot copy).

    Shape::

        {
            "callback_errors": {"<callback name>": n, ...},   # raised or timed out
            "callback_timeouts": {"<callback name>": n, ...}, # the timed-out subset
            "events_dropped": {"<sink>": n, ...},             # e.g. "user_callbacks"
            "integration_errors": {"<integration>": n, ...},  # failures caught inside one
        }

    A callback's name is ``module.qualname`` of the function, or of the logger's or integration's
    class. Exporters map ``callback_errors`` to ``tracking_callback_errors_total{callback}``,
    ``events_dropped`` to ``tracking_events_dropped_total{sink}`` and ``integration_errors`` to
    ``tracking_integration_errors_total{integration}``. Names known before anything happened
    are there at 0 (:func:`expect`): each callback-list entry from when it is set, the
    ``user_callbacks`` sink with the first user callback, an integration's own name (and its
    sink) from when it is created.
    """
    with _COUNTER_LOCK:
        return {
            "callback_errors": dict(_CALLBACK_ERRORS),
            "callback_timeouts": dict(_CALLBACK_TIMEOUTS),
            "events_dropped": dict(_EVENTS_DROPPED),
            "integration_errors": dict(_INTEGRATION_ERRORS),
        }


def expect(
    kind: Literal["callback_errors", "events_dropped", "integration_errors"], *names: str
) -> None:
    """Start the :func:`counters` of ``kind`` under ``names`` at 0 (a name already counted keeps
    its count).

    Called where the names are known, before anything can be counted: when a callback list is
    set, when an integration is created. An exporter then shows each series from 0, and its
    first count is a rise that ``rate()`` and ``increase()`` see (a series that appears at 1
    has none).
    """
    table = _TABLES[kind]
    with _COUNTER_LOCK:
        for name in names:
            table.setdefault(name, 0)


def _expect_entries(entries: Iterable[Any]) -> None:
    """:func:`expect` what checked callback-list entries can count: each entry's callback
    errors, and the ``user_callbacks`` sink's drops when one of them is a user callback."""
    names = []
    user_callbacks = False
    for entry in entries:
        if isinstance(entry, str):  # a built-in name, not loaded: its class's name
            names.append(BUILTIN_INTEGRATIONS[entry].replace(":", "."))
        else:
            names.append(callback_name(entry))
            user_callbacks = user_callbacks or not isinstance(entry, Integration)
    expect("callback_errors", *names)
    if user_callbacks:
        expect("events_dropped", USER_CALLBACKS_SINK)


def record_drop(sink: str, count: int = 1, *, reason: str = "its queue is full") -> None:
    """Count events a sink dropped and warn (at most once a minute per sink and reason).

    Integrations report their own drops here too, so one counter covers every sink.
    """
    with _COUNTER_LOCK:
        _EVENTS_DROPPED[sink] = _EVENTS_DROPPED.get(sink, 0) + count
    suppressed = _due(f"drop:{sink}:{reason}")
    if suppressed is not None:
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("tracking: %s dropped %d event(s): %s%s", sink, count, reason, more)


def report_failure(integration: str, what: str, exc: BaseException | None = None) -> None:
    """Count one failure an integration caught inside itself, and log it.

    The one place integrations report what they swallow (a metric not recorded, a log line not
    written, a span not ended): counted under ``integration`` (``integration_errors`` in
    :func:`counters`, ``tracking_integration_errors_total`` on ``/metrics``) and logged with its
    traceback the first time for each ``what``, then at most once a minute with the count of
    those not logged meanwhile. Never raises.
    """
    with _COUNTER_LOCK:
        _INTEGRATION_ERRORS[integration] = _INTEGRATION_ERRORS.get(integration, 0) + 1
    suppressed = _due(f"integration:{integration}:{what}")
    if suppressed is not None:
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("tracking: %s: %s%s", integration, what, more, exc_info=exc)


def _due(key: str) -> int | None:
    """Whether a log line about ``key`` is due: the count suppressed since the last one, or None."""
    now = time.monotonic()
    with _COUNTER_LOCK:
        last = _LAST_REPORT.get(key)
        if last is not None and now - last < _REPORT_INTERVAL:
            _SUPPRESSED[key] = _SUPPRESSED.get(key, 0) + 1
            return None
        _LAST_REPORT[key] = now
        return _SUPPRESSED.pop(key, 0)


def _callback_failed(name: str, exc: BaseException, *, timed_out: bool = False) -> None:
    with _COUNTER_LOCK:
        _CALLBACK_ERRORS[name] = _CALLBACK_ERRORS.get(name, 0) + 1
        if timed_out:
            _CALLBACK_TIMEOUTS[name] = _CALLBACK_TIMEOUTS.get(name, 0) + 1
    suppressed = _due(f"callback:{name}")
    if suppressed is None:
        return
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    if timed_out:
        log.error(
            "tracking: callback %s did not finish within %s s and was abandoned%s",
            name,
            DELIVERY.timeout,
            more,
        )
    else:
        log.error("tracking: callback %s raised %s%s", name, type(exc).__name__, more, exc_info=exc)


# -- the dispatch plan -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    integrations: tuple[Integration, ...]
    success: tuple[Receiver, ...]
    failure: tuple[Receiver, ...]
    #: The entries left out, each with why: (its name, the ConfigurationError).
    skipped: tuple[tuple[str, ConfigurationError], ...] = ()

    def check(self) -> _Plan:
        """The plan itself, or the first skipped entry's ConfigurationError."""
        if self.skipped:
            raise self.skipped[0][1]
        return self


_Snapshot = tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]
#: (ids of the entries, the entries themselves, their plan). Holding the entries keeps their ids
#: from being reused by other objects while the cache is alive.
_last_plan: tuple[tuple[tuple[int, ...], ...], _Snapshot, _Plan] | None = None


def _entries(value: Any) -> tuple[Any, ...]:
    """What one of the three lists holds, as a tuple, whatever the user assigned to it.

    None is no entry; a lone name, function, logger or integration assigned without a list
    (``tracking.success_callback = "prometheus"``) is one entry, never a string's letters;
    anything else that cannot be iterated is one (bad) entry, skipped and reported.
    """
    if type(value) is CallbackList or type(value) is list or type(value) is tuple:
        return tuple(value)  # the common case
    if value is None:
        return ()
    if isinstance(value, str | bytes | CustomLogger | Integration) or callable(value):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


def _validate(entry: Any) -> Integration | None:
    """The integration an entry is, None for a user callback; a clear error for anything else."""
    if isinstance(entry, type) and (
        issubclass(entry, CustomLogger) or isinstance(entry, Integration)
    ):  # the class itself: an integration's hooks would run unbound, a logger's never
        raise ConfigurationError(
            f"callback {callback_name(entry)} is a class; register an instance of it "
            f"({entry.__qualname__}())"
        )
    integration = resolve(entry)
    if integration is not None:
        return integration
    if isinstance(entry, CustomLogger):
        _warn_unread_hooks(entry)
        return None
    if callable(entry):
        if inspect.isgeneratorfunction(entry) or inspect.isasyncgenfunction(entry):
            # calling one makes a generator and runs none of its body: never a delivery
            raise ConfigurationError(
                f"callback {callback_name(entry)} is a generator function (it has a yield), "
                "so calling it would run none of its body; write it without yield"
            )
        try:
            inspect.signature(entry).bind(None, None, None, None)
        except TypeError:
            raise ConfigurationError(
                f"callback {callback_name(entry)} must accept "
                "(kwargs, response, start_time, end_time)"
            ) from None
        except ValueError:  # no signature to inspect (some builtins): trust it
            pass
        return None
    raise ConfigurationError(f"not a callback: {_given(entry)}; {ACCEPTED}{_logger_hint(entry)}")


def _logger_hint(entry: Any) -> str:
    """For an object with a logger's methods that is no :class:`CustomLogger` (a class written
    for LiteLLM's ``litellm.integrations.custom_logger.CustomLogger``): what to change."""
    if not any(callable(getattr(entry, name, None)) for name in LOGGER_METHODS):
        return ""
    return (
        f"; {type(entry).__qualname__} has a logger's methods (LiteLLM's CustomLogger's): "
        f"make it a subclass of tracking.CustomLogger (class {type(entry).__qualname__}"
        "(tracking.CustomLogger): ...)"
    )


#: The logger classes already warned about (:func:`_warn_unread_hooks`): once per class.
_WARNED_CLASSES: set[type] = set()


def _warn_unread_hooks(logger: CustomLogger) -> None:
    """A logger written for LiteLLM may define hooks this library never calls (before the API
    call, per stream chunk, the proxy's call hooks): said once per class, not silently ignored."""
    cls = type(logger)
    if cls in _WARNED_CLASSES:
        return
    _WARNED_CLASSES.add(cls)
    unread = unread_hooks(logger)
    if unread:
        log.warning(
            "tracking: callback %s defines %s, LiteLLM hooks never called here; each call runs "
            "log_success_event / log_failure_event or their async_ twins, once, after it ends",
            callback_name(logger),
            ", ".join(unread),
        )


#: What a callback list takes, said by every error about an entry that is none of it.
ACCEPTED = (
    "expected a function fn(kwargs, response, start_time, end_time), a tracking.CustomLogger "
    "instance, an integration object or a built-in name ("
    + ", ".join(sorted(BUILTIN_INTEGRATIONS))
    + ")"
)


def _given(entry: Any) -> str:
    """What an entry that is no callback is, for its error: its type and (briefly) its value."""
    if isinstance(entry, types.ModuleType):  # os.path for os.path.join, say
        return f"the module {entry.__name__!r} (name a function or logger object in it)"
    if entry is None:
        return "None"
    return f"{type(entry).__name__} {reprlib.repr(entry)}"


def check_entry(entry: Any) -> None:
    """Refuse an entry that cannot be a callback with a
    :class:`~tracking.errors.ConfigurationError` saying what it is and what is accepted. Loads
    nothing: a built-in name is checked against the known ones, its integration created when
    first used, as before."""
    if isinstance(entry, str):
        if entry not in BUILTIN_INTEGRATIONS:
            raise _unknown_name(entry)
        return
    _validate(entry)


def _unknown_name(name: str) -> ConfigurationError:
    known = ", ".join(sorted(BUILTIN_INTEGRATIONS))
    return ConfigurationError(f"unknown callback {name!r}; built-in integrations: {known}")


def check_entries(name: str, value: Any, *, start: int = 0, step: int = 1) -> tuple[Any, ...]:
    """:func:`check_entry` for each entry of what callback list ``name`` is set to or given
    (``tracking.success_callback = [...]``, ``.extend([...])``), the error naming the list and
    the entry's place (``start``, then every ``step``). Once all pass, the counters they can
    move start at 0 (:func:`expect`). Returns the entries, as a tuple."""
    entries = _entries(value)
    for offset, entry in enumerate(entries):
        try:
            check_entry(entry)
        except ConfigurationError as error:
            place = start + offset * step
            raise ConfigurationError(f"tracking.{name}[{place}]: {error}") from None
    _expect_entries(entries)
    return entries


def _entry_key(entry: Any) -> object:
    """What makes two list entries one callback: the object, or for a bound method (a new
    object at every ``obj.method`` access) its object and function, so ``obj.handle`` listed
    twice, or in two lists, runs once per call."""
    if isinstance(entry, types.MethodType):
        return (id(entry.__self__), id(entry.__func__))
    return id(entry)


def _build_plan(snapshot: _Snapshot) -> _Plan:
    found: dict[object, Integration] = {}
    success: dict[object, Receiver] = {}
    failure: dict[object, Receiver] = {}
    skipped: list[tuple[str, ConfigurationError]] = []
    valid: list[Any] = []
    outcomes = (("success",), ("failure",), ("success", "failure"))
    for entries, wanted in zip(snapshot, outcomes, strict=True):
        for entry in entries:
            try:
                integration = _validate(entry)
            except ConfigurationError as error:  # one bad entry leaves the others working
                name = entry if isinstance(entry, str) else callback_name(entry)
                skipped.append((name, error))
                continue
            valid.append(entry)
            if integration is not None:
                key = getattr(integration, "same_records_as", None) or id(integration)
                kept = found.setdefault(key, integration)
                if kept is not integration:  # another object recording the same things
                    log.warning(
                        "%s records what %s already does (one registry, one count): left out",
                        callback_name(integration),
                        callback_name(kept),
                    )
                continue
            for outcome in wanted:
                chosen = success if outcome == "success" else failure
                key = _entry_key(entry)
                if key not in chosen:
                    receiver = receivers_for(entry, outcome)
                    if receiver is not None:
                        chosen[key] = receiver
    _expect_entries(valid)  # entries added to a list in place, never checked when set
    return _Plan(
        tuple(found.values()), tuple(success.values()), tuple(failure.values()), tuple(skipped)
    )


def _current_plan() -> _Plan:
    """The plan for the lists as they are now, bad entries left out (listed in ``skipped``)."""
    global _last_plan
    import tracking

    success: Iterable[Any] = tracking.success_callback
    failure: Iterable[Any] = tracking.failure_callback
    both: Iterable[Any] = tracking.callbacks
    if not (type(success) is type(failure) is type(both) is CallbackList):  # set past the checks
        success, failure, both = _entries(success), _entries(failure), _entries(both)
    # Spelled out rather than a generator: this runs twice per call. The lists' own ids are
    # compared, without copying them, as the cache holds the entries whose ids it keeps.
    key = (tuple(map(id, success)), tuple(map(id, failure)), tuple(map(id, both)))
    cached = _last_plan
    if cached is not None and cached[0] == key:
        return cached[2]
    snapshot = (tuple(success), tuple(failure), tuple(both))
    plan = _build_plan(snapshot)
    # The key again, of the snapshot: the lists may have changed since their ids were read.
    _last_plan = (tuple(tuple(map(id, entries)) for entries in snapshot), snapshot, plan)
    return plan


def _plan() -> _Plan:
    """The plan for the lists as they are now; raises ConfigurationError for a bad entry."""
    return _current_plan().check()


def _plan_for_end() -> _Plan:
    """The plan for a call that is over: a bad entry is reported and skipped, never raised into
    the call, and every good entry still receives the event."""
    plan = _current_plan()
    for name, error in plan.skipped:
        report_failure(name, f"callback not run: {error}")
    return plan


def integrations() -> tuple[Integration, ...]:
    """The distinct integrations named in the three lists right now, in order."""
    return _plan().integrations


def register(*entries: Any, on: Literal["success", "failure", "both"] = "both") -> None:
    """Validate entries and add them to the list for ``on`` (``both``: ``tracking.callbacks``).

    An unknown built-in name, an integration whose extra is not installed, or something that is
    not a callback is a :class:`~tracking.errors.ConfigurationError` naming what is known. With no
    entries, validates what the three lists hold now.
    """
    import tracking

    if not entries:
        _plan()
        return
    for entry in entries:
        _validate(entry)
    attribute = {"success": "success_callback", "failure": "failure_callback", "both": "callbacks"}
    if on not in attribute:
        raise ConfigurationError(f"on: expected 'success', 'failure' or 'both', got {on!r}")
    target = getattr(tracking, attribute[on])
    for entry in entries:
        if not any(_entry_key(existing) == _entry_key(entry) for existing in target):
            target.append(entry)


# -- delivery of user callbacks ----------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    name: str
    handler: Any
    event: ImageEditEvent
    response: ImageResponse | None
    exception: BaseException | None
    #: A copy of the caller's context, taken in the call: the callback runs in it, so it reads
    #: the context variables the caller had set (a request id bound by a web framework). Each
    #: callback has its own copy: what one sets is seen by none other, nor by the caller.
    context: contextvars.Context


#: ``on_bus`` is True on the bus's own threads (the worker and the loop thread): a callback
#: that calls :func:`flush` there must not wait for the delivery it is part of.
_THREAD = threading.local()


@dataclass(slots=True)
class _WorkerState:
    current: tuple[_Job, float] | None = None
    abandoned: threading.Event = field(default_factory=threading.Event)


class _Delivery:
    """The worker thread, its watchdog, and the bus's own event loop thread."""

    def __init__(self) -> None:
        self.timeout = _timeout_from_environment()
        self.max_queue = DEFAULT_QUEUE_SIZE
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._worker: _WorkerState | None = None
        self._watchdog: threading.Thread | None = None
        self._threads_inflight = 0  # worker jobs queued or running, and jobs on our loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        _THREAD.on_bus = False  # after a fork: the child's one thread is not a worker

    @staticmethod
    def on_bus_thread() -> bool:
        """Whether the current thread is one of the bus's own (a callback is running on it)."""
        return bool(getattr(_THREAD, "on_bus", False))

    # worker thread -----------------------------------------------------------------------

    def submit_worker(self, job: _Job) -> None:
        dropped = False
        with self._lock:
            if self._worker is None:
                self._start_worker()
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self._threads_inflight -= 1
                dropped = True
            self._queue.append(job)
            self._threads_inflight += 1
            self._work.notify()
        if dropped:
            record_drop(USER_CALLBACKS_SINK, reason="the queue is full; the oldest was dropped")

    def _start_worker(self) -> None:  # holds the lock
        exit_on_sigterm()  # queued callbacks are delivered at exit: SIGTERM must exit, not kill
        state = _WorkerState()
        self._worker = state
        threading.Thread(
            target=self._run_worker, args=(state,), name="tracking-callbacks", daemon=True
        ).start()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="tracking-callbacks-watchdog", daemon=True
            )
            self._watchdog.start()

    def _run_worker(self, state: _WorkerState) -> None:
        _THREAD.on_bus = True
        while True:
            with self._lock:
                while not self._queue and not state.abandoned.is_set():
                    self._work.wait()
                if state.abandoned.is_set():
                    return
                job = self._queue.popleft()
                state.current = (job, time.monotonic())
            self._call_sync(job)
            with self._lock:
                if (
                    state.abandoned.is_set()
                ):  # the watchdog gave up on us and already counted this job
                    return
                state.current = None
                self._threads_inflight -= 1
                self._idle.notify_all()

    def _call_sync(self, job: _Job) -> None:
        try:
            kwargs = callback_kwargs(job.event, job.response, job.exception)
            result = job.context.run(
                job.handler, kwargs, job.response, job.event.start_time, job.event.end_time
            )
        except BaseException as exc:  # SystemExit too: it would end the worker, stalling the queue
            _callback_failed(job.name, exc)
            return
        if inspect.isawaitable(result):  # a lambda or wrapper around an async function
            self.submit_loop(job, result)

    def _watch(self) -> None:
        while True:
            time.sleep(max(0.01, min(1.0, self.timeout / 4)))
            with self._lock:
                state = self._worker
                if state is None or state.current is None:
                    continue
                job, started = state.current
                if time.monotonic() - started <= self.timeout:
                    continue
                state.abandoned.set()
                self._threads_inflight -= 1
                self._start_worker()  # a fresh worker takes over the queue
                self._idle.notify_all()
            _callback_failed(job.name, TimeoutError(), timed_out=True)

    # coroutines ---------------------------------------------------------------------------

    async def _call_async(self, job: _Job, started: Awaitable[Any] | None) -> None:
        began = time.monotonic()
        try:
            if started is None:
                kwargs = callback_kwargs(job.event, job.response, job.exception)
                started = job.context.run(
                    job.handler, kwargs, job.response, job.event.start_time, job.event.end_time
                )
            # Its own task, waited for up to the timeout: a callback that ignores its
            # cancellation (``except BaseException: pass`` around an await) is then abandoned,
            # as the watchdog abandons a stuck thread, instead of holding ``flush()`` forever.
            # It runs in the caller's context (its copy), not the loop's.
            task = asyncio.get_running_loop().create_task(_outcome(started), context=job.context)
            await asyncio.wait((task,), timeout=self.timeout)
            if not task.done():
                task.cancel()
                raise TimeoutError(f"it was still running after {self.timeout:g} s")
            raised = task.result()
            if raised is not None:
                raise raised
            if time.monotonic() - began > self.timeout:
                # It blocked the loop (``time.sleep``, a sync request) past its time: no timeout
                # can fire then, and the other async callbacks waited. Counted, so it is seen.
                raise TimeoutError("it blocked the callbacks' event loop (no await) past its time")
        except TimeoutError as exc:
            _callback_failed(job.name, exc, timed_out=True)
        except asyncio.CancelledError:  # the loop is stopping: not the callback's failure
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: they would stop our loop
            _callback_failed(job.name, exc)

    def submit_loop(self, job: _Job, started: Awaitable[Any] | None = None) -> None:
        """Run a coroutine callback on the bus's own loop thread; or, with ``started``, await
        what a plain callback returned there, under the same timeout."""
        with self._lock:
            loop = self._loop
            if loop is None:
                exit_on_sigterm()
                loop = self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=_run_loop, args=(loop,), name="tracking-callbacks-loop", daemon=True
                )
                self._loop_thread.start()
            self._threads_inflight += 1
        future = asyncio.run_coroutine_threadsafe(self._call_async(job, started), loop)
        future.add_done_callback(self._loop_job_done)

    def _loop_job_done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._threads_inflight -= 1
            self._idle.notify_all()

    # flush / shutdown ---------------------------------------------------------------------

    def wait_idle(self, deadline: float | None) -> bool:
        with self._lock:
            while self._threads_inflight > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    def stop_loop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if thread.is_alive():  # a callback blocks the loop: it and its thread are abandoned
            return
        if any(not task.done() for task in asyncio.all_tasks(loop)):
            # An abandoned callback that ignored its cancellation: closing its coroutine (when
            # the loop is collected, at the latest at exit) would run it once more in whichever
            # thread collects it, forever if it swallows every error. Its loop goes on in a
            # daemon thread, which the interpreter's exit freezes with everything it holds.
            threading.Thread(
                target=_run_loop, args=(loop,), name="tracking-callbacks-abandoned", daemon=True
            ).start()
            return
        loop.close()


#: The environment variable that sets the callback timeout (seconds) at import.
CALLBACK_TIMEOUT_ENV = "TRACKING_CALLBACK_TIMEOUT"


def _checked_timeout(value: float, name: str) -> float:
    """A callback timeout: a positive, finite number of seconds (``nan`` would abandon every
    callback at once, ``inf`` hold the process's exit forever behind a hung one)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name}: must be a positive number of seconds, got {value!r}")
    return float(value)


def _timeout_from_environment() -> float:
    raw = os.environ.get(CALLBACK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_CALLBACK_TIMEOUT
    try:
        return _checked_timeout(float(raw), CALLBACK_TIMEOUT_ENV)
    except (ValueError, ConfigurationError):
        raise ConfigurationError(
            f"{CALLBACK_TIMEOUT_ENV}: must be a positive number of seconds, got {raw!r}"
        ) from None


async def _outcome(callback: Awaitable[Any]) -> BaseException | None:
    """What a callback's awaitable raised, returned: a ``SystemExit`` raised in a task of its
    own would stop the bus's loop, and an abandoned callback's error would be logged as lost."""
    try:
        await callback
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return exc
    return None


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    _THREAD.on_bus = True
    loop.run_forever()


DELIVERY = _Delivery()
if hasattr(os, "register_at_fork"):
    # Threads do not survive a fork: the child starts with an empty queue and fresh threads.
    os.register_at_fork(after_in_child=DELIVERY._reset)


def configure(*, callback_timeout: float | None = None, max_queue: int | None = None) -> None:
    """Set how long a user callback may run (default 30 s) and the queue bound (10,000)."""
    if callback_timeout is not None:
        DELIVERY.timeout = _checked_timeout(callback_timeout, "callback_timeout")
    if max_queue is not None:
        # a whole number (not a bool, a float or text, which ``< 1`` compared or truncated)
        if type(max_queue) is not int or max_queue < 1:
            raise ConfigurationError(
                f"max_queue: must be a whole number of at least 1, got {max_queue!r}"
            )
        DELIVERY.max_queue = max_queue


# -- dispatch ----------------------------------------------------------------------------------


#: What an integration's hook may raise into the call: only a Ctrl-C or a SIGTERM's exit (which
#: happen to arrive while the hook runs). Anything else (a plain SystemExit included) is counted
#: and logged, never passed to a call that may have been billed.
_PASSED_ON = (KeyboardInterrupt, Terminated)


def dispatch_start(call: CallStart) -> _Plan:
    """Run every integration's ``on_start`` hook, inline on the caller's thread (a hook may add
    headers); only a bad callback list raises. Returns the call's receivers: the ones that end
    it (:func:`emit_sync` / :func:`emit_async`), whatever the lists hold by then."""
    plan = _plan()
    for integration in plan.integrations:
        try:
            integration.on_start(call)
        except _PASSED_ON:
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
    return plan


def dispatch_lost_attempts(
    call: CallStart, lost: tuple[ImageEditRequest, ...], plan: _Plan | None = None
) -> None:
    """Run the ``on_lost_attempts`` hook of every integration that has one, inline (rare: only
    before an attempt that follows lost ones); ``plan``: the receivers the call started with."""
    for integration in (plan if plan is not None else _plan()).integrations:
        hook = getattr(integration, "on_lost_attempts", None)
        if hook is None:
            continue
        try:
            hook(call, lost)
        except _PASSED_ON:
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)


def _hand_over(
    plan: _Plan,
    after: int,
    event: ImageEditEvent,
    response: ImageResponse | None,
    exception: BaseException | None,
    *,
    asynchronous: bool,
) -> None:
    """The call's ending was interrupted at integration ``after``: the integrations after it get
    the event without waiting on any (``on_end_nowait`` where there is one), and the user
    callbacks are queued, so every receiver still gets the call's one event."""
    for integration in plan.integrations[after + 1 :]:
        try:
            nowait = getattr(integration, "on_end_nowait", None)
            (integration.on_end if nowait is None else nowait)(event)
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
    _submit_callbacks(plan, event, response, exception, asynchronous=asynchronous)


def emit_sync(
    event: ImageEditEvent,
    response: ImageResponse | None,
    exception: BaseException | None,
    plan: _Plan | None = None,
) -> None:
    """Hand a finished sync call's event to every registered receiver. A Ctrl-C (or a
    SIGTERM's exit) while an integration waits is passed on, but only after the integrations
    after it and the user callbacks have the event too: the call may have been billed.
    ``plan``: the receivers the call started with (else those listed now)."""
    plan = plan if plan is not None else _plan_for_end()
    for index, integration in enumerate(plan.integrations):
        try:
            integration.on_end(event)
        except _PASSED_ON:
            _hand_over(plan, index, event, response, exception, asynchronous=False)
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
    _submit_callbacks(plan, event, response, exception, asynchronous=False)


async def emit_async(
    event: ImageEditEvent,
    response: ImageResponse | None,
    exception: BaseException | None,
    plan: _Plan | None = None,
) -> None:
    """Hand a finished async call's event to every registered receiver.

    An integration may offer an async ``aon_end`` (see :mod:`tracking.integration`): awaited
    instead of ``on_end``, so a durable ledger's acknowledgement never blocks the caller's loop.
    The caller's task cancelled while it waits (``asyncio.wait_for``, a client gone) is passed
    on, after the integrations after it and the user callbacks have the event, without waiting.
    ``plan``: the receivers the call started with (else those listed now).
    """
    plan = plan if plan is not None else _plan_for_end()
    for index, integration in enumerate(plan.integrations):
        try:
            acknowledge = getattr(integration, "aon_end", None)
            if acknowledge is None:
                integration.on_end(event)
            else:
                await acknowledge(event)
        except (*_PASSED_ON, asyncio.CancelledError):
            _hand_over(plan, index, event, response, exception, asynchronous=True)
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
    _submit_callbacks(plan, event, response, exception, asynchronous=True)


def _submit_callbacks(
    plan: _Plan,
    event: ImageEditEvent,
    response: ImageResponse | None,
    exception: BaseException | None,
    *,
    asynchronous: bool,
) -> None:
    """Queue the user callbacks for a finished call, each with its own copy of the response
    and of the caller's context.

    The copies are made here, in the call, before the caller gets its response back: a
    callback may change its copy freely (it runs on another thread, while the caller uses its
    own), sees the response as it was when the call ended, and runs in the context the caller
    had (:func:`~tracking.call_control.caller_context`: its context variables, a request id a
    web framework bound; ``copy_context()`` is O(1), and what a callback sets reaches neither
    the caller nor another callback). Nothing is copied without callbacks.
    """
    context: contextvars.Context | None = None
    for receiver in plan.success if event.status == "success" else plan.failure:
        chosen = receiver.for_async if asynchronous else receiver.for_sync
        if chosen is None:
            continue
        handler, is_async = chosen
        copied = response.copy() if response is not None else None
        if context is None:
            context = caller_context()
        job = _Job(receiver.name, handler, event, copied, exception, context.copy())
        if is_async:
            DELIVERY.submit_loop(job)
        else:
            DELIVERY.submit_worker(job)


def loaded_integrations() -> tuple[Integration, ...]:
    """Integrations already in use, without resolving (loading) any: for integrations that feed
    each other, such as the ledger reporting its queue to the Prometheus logger."""
    cached = _last_plan
    found: dict[int, Integration] = {id(i): i for i in list(_INSTANCES.values())}
    if cached is not None:
        for integration in cached[2].integrations:
            found.setdefault(id(integration), integration)
    return tuple(found.values())


def _known_integrations() -> list[Integration]:
    found: dict[int, Integration] = {id(i): i for i in list(_INSTANCES.values())}
    for integration in _current_plan().integrations:  # bad entries are skipped, never raised
        found.setdefault(id(integration), integration)
    return list(found.values())


def flush(timeout: float | None = None) -> bool:
    """Deliver everything queued to user callbacks and integrations; True when all of it was.

    Called from a user callback (on the bus's worker thread or its event loop), it cannot wait
    for the callbacks' queue, which holds the running callback itself and cannot move until it
    returns: it flushes the integrations only, within ``timeout``, and returns False (what is
    queued is still delivered, after the callback returns).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delivered = False if DELIVERY.on_bus_thread() else DELIVERY.wait_idle(deadline)
    for integration in _known_integrations():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            delivered = integration.flush(remaining) and delivered
        except _PASSED_ON:
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
            delivered = False
    return delivered


def shutdown(timeout: float | None = None) -> None:
    """Flush, then shut every integration down and stop the bus's threads; safe to repeat."""
    deadline = None if timeout is None else time.monotonic() + timeout
    flush(timeout)
    _shut_integrations_down(deadline)


def _shut_integrations_down(deadline: float | None) -> None:
    for integration in _known_integrations():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            integration.shutdown(remaining)
        except _PASSED_ON:
            raise
        except BaseException as exc:
            _callback_failed(callback_name(integration), exc)
    DELIVERY.stop_loop()


#: Seconds the integrations have, in all, to shut down at exit. What a ledger cannot write or
#: ship by then (its database locked or away) waits in its outbox for the next start.
EXIT_TIMEOUT = 10.0


def _at_exit() -> None:
    """At exit, queued user callbacks get their timeout (and 5 s) to run; the integrations are
    then shut down within :data:`EXIT_TIMEOUT`, so that a database that cannot take the rows
    does not hold the exit for the callbacks' timeout."""
    DELIVERY.wait_idle(time.monotonic() + DELIVERY.timeout + 5.0)
    _shut_integrations_down(time.monotonic() + EXIT_TIMEOUT)


on_exit(_at_exit)
