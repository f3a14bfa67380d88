"""A group whose deployments run different models: a request one model cannot take (``n=2`` for
Gemini's one-image model) goes to the group's others, never failing on the draw.

The ``ValidationError`` of the deployment drawn first failed the whole call, although another
deployment of the group would have served it: the same call succeeded or failed at random.
"""

from __future__ import annotations

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tracking.router import MemoryState, Router
from tracking.testing import FakeOpenAI

GEMINI = "gemini/gemini-3-pro-image"  # one image per call


def _gemini(group: str, id: str, weight: float = 1) -> dict[str, object]:
    # never sent: the request is refused for its model before any request is built
    params = {"model": GEMINI, "api_key": "AIza-test-0123456789", "weight": weight}
    return {"model_name": group, "litellm_params": params, "model_info": {"id": id}}


def _openai(group: str, id: str, api_base: str, weight: float = 1) -> dict[str, object]:
    params = {"model": "gpt-image-2", "api_base": api_base, "api_key": API_KEY, "weight": weight}
    return {"model_name": group, "litellm_params": params, "model_info": {"id": id}}


def _edit(router: Router, model: str = "images", n: int = 2) -> tracking.ImageResponse:
    return router.image_edit(image=make_png(), prompt="a red hat", model=model, n=n)


def test_a_request_one_model_of_the_group_cannot_take_goes_to_the_others(recorder, fake):
    # the Gemini deployment wins every draw (the other weighs 0)
    router = Router(
        [_gemini("images", "gem"), _openai("images", "oa", fake.url, weight=0)], num_retries=0
    )
    before = len(fake.requests)
    for _ in range(3):
        response = _edit(router)
        assert response._hidden_params["deployment_id"] == "oa"
    assert len(fake.requests) == before + 3
    for event in recorder.events:  # nothing was sent to Gemini: no attempt, no retry
        assert (event.status, event.deployment_id, event.attempts, event.retries) == (
            "success",
            "oa",
            1,
            0,
        )
    assert router.state.snapshot(["gem"]).in_flight == {"gem": 0}


class _Drawn(MemoryState):
    """Routing state that lists the deployments drawn (begun) for a call."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: list[str] = []

    def begin(self, deployment_id: str, rpm_limit: int | None) -> bool:
        self.drawn.append(deployment_id)
        return super().begin(deployment_id, rpm_limit)


def test_a_request_no_deployment_of_the_group_takes_fails_at_once_without_fallback(recorder):
    state = _Drawn()
    with FakeOpenAI(api_keys=[API_KEY]) as backup:
        router = Router(
            [
                _gemini("images", "gem-1"),
                _gemini("images", "gem-2"),
                _openai("backup", "oa", backup.url),
            ],
            fallbacks=[{"images": ["backup"]}],
            state=state,
        )
        with pytest.raises(tracking.ValidationError, match="gemini-3-pro-image makes 1"):
            _edit(router)
        assert backup.hits == 0  # the request's fault: never retried on a fallback
        # the group's other deployment of the same model was not drawn for it too
        assert len(state.drawn) == 1
        # and the one drawn, never sent, gave its place in the minute's rpm back
        assert router.state.snapshot(["gem-1", "gem-2"]).rpm == {"gem-1": 0, "gem-2": 0}
    (event,) = recorder.events
    assert (event.status, event.attempts, event.error_type) == ("failure", 0, "validation_error")


def test_a_fallback_group_of_mixed_models_serves_with_the_model_that_takes_the_request(
    recorder, fake
):
    with FakeOpenAI(api_keys=[API_KEY], faults=["status=500;times=always"]) as broken:
        router = Router(
            [
                _openai("primary", "p", broken.url),
                _gemini("backup", "gem"),
                _openai("backup", "oa", fake.url, weight=0),
            ],
            fallbacks=[{"primary": ["backup"]}],
            num_retries=0,
            allowed_fails=9,
        )
        response = _edit(router, model="primary")
    assert response._hidden_params["fallbacks_skipped"] == []
    (event,) = recorder.events
    assert (event.model_group, event.deployment_id, event.fallback_from) == (
        "backup",
        "oa",
        ("primary",),
    )
    assert (event.attempts, event.retries) == (2, 0)
