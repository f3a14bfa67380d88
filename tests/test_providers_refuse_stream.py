"""``stream=True`` with a provider whose upstream answers whole (every one but OpenAI, Azure and
OpenAI-compatible servers) is refused before anything is sent, whatever the model.

The family table refused it only for the models it knows; for the others (Recraft's models,
Stability's operations, FLUX.2, a new Gemini or Grok model) the request went out, the upstream
made and billed the image, and the call failed as "not a stream of events": the caller paid for
an image it never got (the fakes over loopback, as the real APIs answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import tracking
from tests.conftest import make_half_mask, make_png
from tests.recorder import record_events
from tracking.errors import UnsupportedParamsError
from tracking.testing.app_thread import ServedApp
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_gemini import FakeGemini
from tracking.testing.fake_recraft import FakeRecraft
from tracking.testing.fake_stability import FakeStability
from tracking.testing.fake_xai import FakeXAI

KEY = "stream-test-key-0123456789"
PNG = make_png(64, 64)


def _sent(fake: Any) -> int:
    """What reached the fake: its recorded requests, or the jobs submitted to FakeBFL."""
    return len(fake.jobs) if isinstance(fake, FakeBFL) else len(fake.requests)


CASES: list[tuple[Callable[[], ServedApp], str, dict[str, Any]]] = [
    (FakeRecraft, "recraft/recraftv3", {}),
    (FakeStability, "stability/inpaint", {"mask": make_half_mask()}),
    (FakeBFL, "black_forest_labs/flux-2-pro", {}),
    (FakeGemini, "gemini/gemini-4-flash-image", {}),
    (FakeXAI, "xai/grok-imagine-image-pro", {}),
]


@pytest.mark.parametrize(("fake_class", "model", "extra"), CASES, ids=[c[1] for c in CASES])
def test_stream_to_a_provider_that_answers_whole_is_refused_before_sending(
    monkeypatch, fake_class, model, extra
):
    events = record_events(monkeypatch)
    with fake_class() as fake:
        with pytest.raises(UnsupportedParamsError) as raised:
            tracking.image_edit(
                image=PNG,
                prompt="a hat",
                model=model,
                api_base=fake.url,
                api_key=KEY,
                stream=True,
                drop_params=True,  # never dropped: the answer would not be the stream asked
                **extra,
            )
        assert _sent(fake) == 0
    assert raised.value.param == "stream"
    assert (events.last.status, events.last.cost_usd) == ("failure", 0)
    assert events.last.error_type == "unsupported_param"


async def test_an_async_stream_to_recraft_is_refused_before_sending(monkeypatch):
    events = record_events(monkeypatch)
    with FakeRecraft() as fake:
        with pytest.raises(UnsupportedParamsError):
            await tracking.aimage_edit(
                image=PNG,
                prompt="a hat",
                model="recraft/recraftv3",
                api_base=fake.url,
                api_key=KEY,
                stream=True,
            )
        assert fake.requests == []
    assert (events.last.status, events.last.cost_usd) == ("failure", 0)
