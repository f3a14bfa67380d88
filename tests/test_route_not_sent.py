"""What a route of your own (:class:`tracking.router.Route`) is told of an attempt that was chosen
but never sent because the call was cancelled (or interrupted) first: a :class:`Withheld`, as
for every attempt not sent, whose ``__cause__`` is the interruption itself, while the call ends
with the interruption. Before, the route was told ``Withheld("not sent: CancelledError")`` with
nothing to tell a cancellation from a budget's refusal but the message's words."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import make_png
from tracking.api import call_async
from tracking.call_control import Withheld
from tracking.request import call_params, image_edit_params
from tracking.router import Route, Target
from tracking.targets import Routing, Steps


class WaitingRoute:
    """One target, reached only after a long wait (a retry's backoff)."""

    def __init__(self) -> None:
        self.picked = asyncio.Event()
        self.reported: list[tuple[BaseException | None, float | None]] = []

    def next(self, failure: BaseException | None) -> Steps[Target]:
        yield from ()
        if failure is not None:
            raise failure
        self.picked.set()
        return Target(overrides={}, key="only", backoff=True, retry_after=30)

    def done(
        self, target: Target, error: BaseException | None, latency_ms: float | None, response: Any
    ) -> Steps[None]:
        yield from ()
        self.reported.append((error, latency_ms))

    def routing(self, model: str, model_group: str | None) -> Routing:
        return Routing(model, model_group)


def test_a_route_of_your_own_learns_a_cancelled_attempt_was_not_sent(upstream):
    route = WaitingRoute()
    check: Route = route  # it is one
    assert check is route
    params = call_params(
        image_edit_params,
        (),
        {"image": make_png(), "prompt": "a hat", "model": "gpt-image-1", **upstream},
    )

    async def cancelled() -> None:
        call = asyncio.ensure_future(call_async(params, route))
        await route.picked.wait()
        for _ in range(5):  # into its backoff
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(cancelled())
    ((error, latency_ms),) = route.reported  # told once
    assert isinstance(error, Withheld) and latency_ms is None
    assert isinstance(error.__cause__, asyncio.CancelledError)  # and why
