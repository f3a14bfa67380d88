"""Routing state: cooldowns, failure counts, in-flight calls, rpm/tpm usage and latencies.

:class:`MemoryState` keeps it in this process (the default); ``RedisState``
(:mod:`tracking.router.redis_state`) keeps it in Redis so that several processes route as one.
A routed call reaches the state through :func:`stepwise`: a Redis state yields its exchanges as
:class:`~tracking.targets.Consult` effects (run blocking on the sync path, awaited on the async
one); a state kept in the process (:class:`MemoryState`, or your own :class:`RouterState`) is
called directly. Each begin answers the call's :class:`Place` (its minute, its member), which its
end or release gives back: a place released goes back to the minute it was taken in.

Usage windows are calendar minutes (``rpm`` / ``tpm`` count the current minute); failure counts
for ``allowed_fails`` expire ``failure_window`` seconds after the first failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..frozen import fast_init
from ..targets import Steps

__all__ = [
    "MemoryState",
    "Place",
    "RouterState",
    "Snapshot",
    "StepwiseState",
    "stepwise",
]

log = logging.getLogger("tracking.router")

T = TypeVar("T")

#: Each in-flight call is counted for at most this long (its process may have died mid-call).


@fast_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a strategy may look at, for the candidate deployments of one decision."""

    cooling: Mapping[str, float]  #: deployment id -> seconds of cooldown left (only those cooling)
    in_flight: Mapping[str, int]
    rpm: Mapping[str, int]  #: requests started this minute
    tpm: Mapping[str, int]  #: tokens used this minute
    latency_ms: Mapping[str, tuple[float, ...]]  #: recent latencies, newest first
    #: seconds until this minute's ``rpm`` / ``tpm`` windows end (a limited deployment is free)
    window_left: float = 60.0
    #: deployment id -> failures within the failure window (only those that failed)
    failures: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Place:
    """A call's place on a deployment, as its begin took it: what its end or release gives back.

    A release gives the request back to the minute it was counted in, whatever was begun on the
    deployment since (a call begun just after a minute's end counts in the next minute)."""

    deployment_id: str
    #: the calendar minute its request was counted in; None for a state of your own
    minute: int | None
    #: its member among the deployment's in-flight calls in Redis; None when taken in the process
    member: str | None = None


class RouterState(Protocol):
    """Where routing state lives; every method is safe to call from any thread."""

    def snapshot(self, ids: Sequence[str]) -> Snapshot: ...

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        """Count a call starting (in flight, this minute's requests); False, counting nothing,
        when the deployment's rpm limit is already reached."""
        ...

    def end(self, deployment_id: str) -> None: ...

    # A state may also have ``release(deployment_id)``: end a call that :meth:`begin` counted
    # but that was never sent (refused for the deployment's model, its settings, the caller's
    # budget), giving its place in that minute's requests back. :class:`MemoryState` and
    # :class:`RedisState` have it (and a routed call gives its place back to the very minute it
    # was taken in); a state without it is ended with :meth:`end` instead (the place stays
    # taken until the minute ends).

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None: ...

    def record_failure(self, deployment_id: str) -> int:
        """Count a failure; returns the failures within the failure window."""
        ...

    def cool_down(self, deployment_id: str, seconds: float) -> bool:
        """Start a cooldown of ``seconds`` and reset the failure count; True when this started
        it, False when the deployment was cooling down already (that cooldown is kept as it is,
        so calls failing together start one cooldown, counted once)."""
        ...

    def close(self) -> None: ...


class StepwiseState(Protocol):
    """A :class:`RouterState`'s operations as routing steps (see :func:`stepwise`)."""

    def snapshot(self, ids: Sequence[str]) -> Steps[Snapshot]: ...

    def begin(self, deployment_id: str, rpm_limit: int | None) -> Steps[Place | None]:
        """The call's place, or None (nothing taken) when the deployment's rpm is reached."""
        ...

    def end(self, place: Place) -> Steps[None]: ...

    def release(self, place: Place) -> Steps[None]: ...

    def record_success(
        self, deployment_id: str, latency_ms: float | None, tokens: int
    ) -> Steps[None]: ...

    def record_failure(self, deployment_id: str) -> Steps[int]: ...

    def cool_down(self, deployment_id: str, seconds: float) -> Steps[bool]: ...


def stepwise(state: RouterState) -> StepwiseState:
    """``state``'s operations for a routed call: a :class:`RedisState` yields its exchanges
    (run blocking on the sync path, awaited on the async one); any other state is in the process
    and is called directly."""
    from .redis_state import RedisState  # once per router

    if isinstance(state, RedisState):
        return state.steps
    return _InProcessSteps(state)


class _InProcessSteps:
    """A state with no I/O to yield: each step calls the state's own method."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    def snapshot(self, ids: Sequence[str]) -> Steps[Snapshot]:
        yield from ()
        return self.state.snapshot(ids)

    def begin(self, deployment_id: str, rpm_limit: int | None) -> Steps[Place | None]:
        yield from ()
        if isinstance(self.state, MemoryState) and _inherited(self.state, "begin"):
            minute = self.state.take(deployment_id, rpm_limit)
            return None if minute is None else Place(deployment_id, minute)
        return Place(deployment_id, None) if self.state.begin(deployment_id, rpm_limit) else None

    def end(self, place: Place) -> Steps[None]:
        yield from ()
        self.state.end(place.deployment_id)

    def release(self, place: Place) -> Steps[None]:
        yield from ()
        if isinstance(self.state, MemoryState) and _inherited(self.state, "release"):
            self.state.release(place.deployment_id, place.minute)
            return
        release = getattr(self.state, "release", None)
        if release is None:  # a state of your own without it: the rpm place stays taken
            self.state.end(place.deployment_id)
        else:
            release(place.deployment_id)

    def record_success(
        self, deployment_id: str, latency_ms: float | None, tokens: int
    ) -> Steps[None]:
        yield from ()
        self.state.record_success(deployment_id, latency_ms, tokens)

    def record_failure(self, deployment_id: str) -> Steps[int]:
        yield from ()
        return self.state.record_failure(deployment_id)

    def cool_down(self, deployment_id: str, seconds: float) -> Steps[bool]:
        yield from ()
        return self.state.cool_down(deployment_id, seconds)


def _inherited(state: MemoryState, method: str) -> bool:
    """Whether ``state`` (maybe a subclass of yours) has MemoryState's own ``method``."""
    return getattr(type(state), method) is getattr(MemoryState, method)


#: Where routing state reads the time: wall-clock seconds for the calendar-minute usage windows,
#: monotonic seconds for cooldowns and failure windows. Tests inject their own.
Clock = Callable[[], float]


def _minute(clock: Clock) -> int:
    return int(clock() // 60)


def _window_left(clock: Clock) -> float:
    """Seconds until the current calendar minute ends (never 0: at least a millisecond)."""
    return max(60.0 - clock() % 60.0, 0.001)


class MemoryState:
    """Routing state in this process."""

    def __init__(
        self,
        *,
        latency_window: int = 10,
        failure_window: float = 60.0,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.latency_window = latency_window
        self.failure_window = failure_window
        self._lock = threading.Lock()
        self._cooling: dict[str, float] = {}  # id -> monotonic deadline
        self._failures: dict[str, tuple[int, float]] = {}  # id -> (count, window deadline)
        self._in_flight: dict[str, int] = {}  # id -> calls in flight there
        self._usage: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens)
        self._latency: dict[str, deque[float]] = {}

    def snapshot(self, ids: Sequence[str]) -> Snapshot:
        now = self.monotonic()
        minute = _minute(self.clock)
        with self._lock:
            cooling = {i: self._cooling[i] - now for i in ids if self._cooling.get(i, 0) > now}
            usage = {i: u for i in ids if (u := self._usage.get(i)) and u[0] == minute}
            failures = {
                i: f[0] for i in ids if (f := self._failures.get(i)) and f[0] and f[1] > now
            }
            return Snapshot(
                cooling=cooling,
                in_flight={i: self._in_flight.get(i, 0) for i in ids},
                rpm={i: usage[i][1] if i in usage else 0 for i in ids},
                tpm={i: usage[i][2] if i in usage else 0 for i in ids},
                latency_ms={i: tuple(reversed(self._latency.get(i, ()))) for i in ids},
                window_left=_window_left(self.clock),
                failures=failures,
            )

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        return self.take(deployment_id, rpm_limit) is not None

    def take(self, deployment_id: str, rpm_limit: int | None) -> int | None:
        """:meth:`begin`, answering the minute the request was counted in (for
        :meth:`release`), or None, counting nothing, when the rpm limit is reached."""
        minute = _minute(self.clock)
        with self._lock:
            used_minute, requests, tokens = self._usage.get(deployment_id, (minute, 0, 0))
            if used_minute != minute:
                requests, tokens = 0, 0
            if rpm_limit is not None and requests >= rpm_limit:
                return None
            self._usage[deployment_id] = (minute, requests + 1, tokens)
            self._in_flight[deployment_id] = self._in_flight.get(deployment_id, 0) + 1
            return minute

    def end(self, deployment_id: str) -> None:
        with self._lock:
            self._end(deployment_id)

    def _end(self, deployment_id: str) -> bool:
        calls = self._in_flight.get(deployment_id, 0)
        if calls > 0:
            self._in_flight[deployment_id] = calls - 1
        return calls > 0

    def release(self, deployment_id: str, minute: int | None = None) -> None:
        """End a call begun there that was never sent: its request leaves the count of
        ``minute``, the one :meth:`take` answered (None: the current minute), while that minute
        lasts."""
        if minute is None:
            minute = _minute(self.clock)
        with self._lock:
            if not self._end(deployment_id):
                return
            used_minute, requests, tokens = self._usage.get(deployment_id, (minute, 0, 0))
            if used_minute == minute and requests > 0:
                self._usage[deployment_id] = (minute, requests - 1, tokens)

    def record_success(self, deployment_id: str, latency_ms: float | None, tokens: int) -> None:
        minute = _minute(self.clock)
        with self._lock:
            if latency_ms is not None:
                window = self._latency.get(deployment_id)
                if window is None:
                    window = self._latency[deployment_id] = deque(maxlen=self.latency_window)
                window.append(latency_ms)
            if tokens:
                used_minute, requests, used = self._usage.get(deployment_id, (minute, 0, 0))
                if used_minute != minute:
                    requests, used = 0, 0
                self._usage[deployment_id] = (minute, requests, used + tokens)

    def record_failure(self, deployment_id: str) -> int:
        now = self.monotonic()
        with self._lock:
            count, deadline = self._failures.get(deployment_id, (0, 0.0))
            if deadline <= now:
                count, deadline = 0, now + self.failure_window
            self._failures[deployment_id] = (count + 1, deadline)
            return count + 1

    def cool_down(self, deployment_id: str, seconds: float) -> bool:
        now = self.monotonic()
        with self._lock:
            self._failures.pop(deployment_id, None)
            if self._cooling.get(deployment_id, 0) > now:
                return False
            self._cooling[deployment_id] = now + seconds
            return True

    def close(self) -> None:
        pass
