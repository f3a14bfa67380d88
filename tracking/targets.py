"""The contract between the call flow and a router: which deployment to try next, and how it went.

:func:`tracking.flow.edit_flow` takes an optional :class:`Route`. It asks the route for a
:class:`Target` before every attempt, parses the call again with the target's overrides (so a
fallback model re-validates the request), sends it, and reports each outcome back with
:meth:`Route.done`. The route does no I/O of its own: it never sleeps or sends, and where it
must read or write shared state (a router's Redis) it yields a :class:`Consult` effect that the
flow passes on to its driver: the sync driver runs it with a blocking client, the async driver
awaits it with an async one. So ``next`` and ``done`` are generators (:data:`Steps`), and the
sync and async drivers stay the only place where I/O happens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from .frozen import fast_init

if TYPE_CHECKING:
    from .response import ImageResponse

__all__ = ["Consult", "Route", "Routing", "Steps", "Target", "run_steps"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Consult:
    """An exchange with shared routing state, run by the flow's driver: ``run()`` on the sync
    path, ``await arun()`` on the async one. The answer (or the ``Exception`` it raised, as a
    value) is sent back into the generator that yielded it."""

    run: Callable[[], Any]
    arun: Callable[[], Awaitable[Any]]


#: A routing step: yields :class:`Consult` effects, returns its result.
Steps = Generator[Consult, Any, T]


def run_steps(steps: Steps[T]) -> T:
    """Drive ``steps`` on this thread (the sync path, and the router's own sync methods).

    An effect's ``Exception`` is sent back as a value; an interruption (Ctrl-C) is thrown into
    the steps where they wait, as the flow's drivers do, so a step can take back what the
    interrupted exchange may have done before the interruption goes on."""
    answer: Any = None
    interrupted: BaseException | None = None
    while True:
        try:
            consult = steps.send(answer) if interrupted is None else steps.throw(interrupted)
        except StopIteration as stop:
            result: T = stop.value
            return result
        answer = interrupted = None
        try:
            answer = consult.run()
        except Exception as exc:  # handed back: the state decides what an error means
            answer = exc
        except BaseException as exc:
            interrupted = exc


@fast_init
@dataclass(frozen=True, slots=True)
class Target:
    """One attempt's destination."""

    #: Call parameters replaced for this attempt: model, api_key, api_base, api_version, timeout.
    overrides: Mapping[str, Any]
    #: Opaque to the flow: what the route needs to recognise the attempt in :meth:`Route.done`.
    key: Any = None
    #: Wait before sending (the flow paces it: exponential backoff, or ``retry_after``).
    backoff: bool = False
    retry_after: float | None = None


class Routing(NamedTuple):
    """The event fields a route decides."""

    model: str  #: the model the caller asked for
    model_group: str | None  #: the group that served (or last failed)
    deployment_id: str | None = None
    fallback_from: tuple[str, ...] = ()  #: the groups tried before the one that served
    #: attempts that repeated one within its group (a fallback's first attempt is not a retry);
    #: None: every attempt after the first
    retries: int | None = None


class Route(Protocol):
    """Decides the attempts of one routed call."""

    def next(self, failure: BaseException | None) -> Steps[Target]:
        """The next attempt, given why the previous one failed (None before the first).

        Raises the error that ends the call when there is nothing left to try.
        """
        ...

    def done(
        self,
        target: Target,
        error: BaseException | None,
        latency_ms: float | None,
        response: ImageResponse | None,
    ) -> Steps[None]:
        """Report how an attempt ended (called exactly once per :meth:`next`); never raises.

        ``error`` is None for a success, else the attempt's failure; an attempt never sent is
        reported as a :class:`~tracking.call_control.Withheld` (or the error that stopped its
        preparation), also when the call was cancelled or interrupted before the request went:
        then the Withheld's ``__cause__`` is the ``CancelledError`` / ``KeyboardInterrupt``,
        which the call raises once this returns. A route counts no attempt for a Withheld.
        """
        ...

    def routing(self, model: str, model_group: str | None) -> Routing:
        """The call's routing fields, given the model and group the flow saw last."""
        ...
