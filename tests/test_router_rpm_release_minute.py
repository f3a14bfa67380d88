"""An rpm place given back (a deployment picked for an attempt never sent) goes back to the
minute it was taken in.

``release`` gave back the place of the call begun *last* on the deployment: around a minute's
end, a call begun at :59 and refused after another call began at :00 took the new minute's
place away (that deployment could then take one request too many in it) and left its own in the
old minute. Each begin now answers its place, naming its minute, and the release gives that
back. Time is a :class:`ManualClock`: no test waits for a minute's end.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import API_KEY, make_png
from tests.router_support import ManualClock, deployment
from tests.services import REDIS_TIMEOUT
from tracking.router import MemoryState, RedisState, Router
from tracking.targets import run_steps

GEMINI = "gemini/gemini-3-pro-image"  # one image per call: n=2 is refused before sending
KINDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


def _state(kind: str, request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    if kind == "memory":
        return MemoryState(clock=clock.time, monotonic=clock.monotonic)
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return RedisState(url, prefix=prefix, clock=clock.time, socket_timeout=REDIS_TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
def test_a_place_released_after_the_minute_turned_goes_back_to_its_own_minute(request, kind):
    clock = ManualClock()
    clock.advance(59)  # the last second of a minute
    old_minute = int(clock.time() // 60)
    state = _state(kind, request, clock)
    router = Router([deployment("images", "http://127.0.0.1:9", id="d")], state=state)
    steps = router.stepwise_state
    early = run_steps(steps.begin("d", None))  # taken at :59
    clock.advance(2)  # the next minute
    late = run_steps(steps.begin("d", None))  # taken at :01
    assert early is not None and late is not None
    run_steps(steps.release(early))  # the :59 call was never sent
    snapshot = state.snapshot(["d"])
    assert snapshot.rpm == {"d": 1}  # the :01 call still counts in its minute
    assert snapshot.in_flight == {"d": 1}
    if kind == "redis":
        assert state._client.get(f"{state.prefix}rpm:d:{old_minute}") == b"0"
    run_steps(steps.end(late))
    assert state.snapshot(["d"]).in_flight == {"d": 0}


class _Shared(MemoryState):
    """In-process state where another call begins on the deployment, in the next minute, just
    after this call took its place at a minute's last second."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock.time, monotonic=clock.monotonic)
        self.manual = clock
        self.other_began = False

    def take(self, deployment_id: str, rpm_limit: int | None) -> int | None:
        minute = super().take(deployment_id, rpm_limit)
        if deployment_id == "gem" and not self.other_began:
            self.other_began = True
            self.manual.advance(2)
            assert super().take(deployment_id, None) is not None  # that other call, at :01
        return minute


def test_a_routed_call_refused_at_a_minutes_end_gives_back_its_own_place(fake):
    clock = ManualClock()
    clock.advance(59)
    gemini = {
        "model_name": "images",
        "litellm_params": {"model": GEMINI, "api_key": "AIza-test-0123456789"},
        "model_info": {"id": "gem"},
    }
    openai = deployment("images", fake.url, id="oa", model="gpt-image-2", api_key=API_KEY)
    openai["litellm_params"]["weight"] = 0  # Gemini wins every draw it is free for
    state = _Shared(clock)
    router = Router([gemini, openai], state=state, num_retries=0, register_prices=False)
    response = router.image_edit(image=make_png(), prompt="a hat", model="images", n=2)
    assert response._hidden_params["deployment_id"] == "oa"  # refused on gem, never sent
    assert state.other_began
    snapshot = state.snapshot(["gem", "oa"])
    assert snapshot.rpm == {"gem": 1, "oa": 1}  # the other call's place, in its minute
    assert snapshot.in_flight == {"gem": 1, "oa": 0}
