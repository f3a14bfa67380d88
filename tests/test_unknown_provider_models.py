"""A FLUX or Gemini model the family table does not know gets its provider's rules (a QA pass's
findings).

The family table knows FLUX.1 Kontext, FLUX.2 and today's Gemini image models; a newer model of
either provider (``black_forest_labs/flux-kontext-next``, a name no FLUX model has yet: until
2026-12-07 this was ``flux-2-pro``, now known; ``gemini/gemini-4-image``) got only the generic
checks. A size such as ``0x0`` or ``wide`` then raised ``ZeroDivisionError`` / ``ValueError``
out of the provider (the proxy answered 500), and ``n > 1`` or a mask were sent and ignored
upstream (one unmasked image for the price of what was asked). Now the size is a
``ValidationError(param="size")``, ``n > 1`` a ``ValidationError(param="n")`` and a parameter
the provider has no field for an ``UnsupportedParamsError`` (dropped with ``drop_params=True``),
all before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import make_half_mask
from tests.proxy_support import ProxyProcess
from tests.scripted_upstream import (
    GEMINI_ANSWER,
    PNG,
    Reply,
    ScriptedUpstream,
    proxy_in_front,
    scripted_upstream,
)
from tracking.errors import APIResponseError, UnsupportedParamsError, ValidationError

#: a FLUX name the tables do not know (FLUX.2's ``flux-2-...`` names are FLUX.2's, with their rules)
FLUX_UNKNOWN = "black_forest_labs/flux-kontext-next"
UNKNOWN = [FLUX_UNKNOWN, "gemini/gemini-4-image", "vertex_ai/gemini-4-image"]
BAD_SIZES = ["0x0", "0x1024", "1024x0", "1024x", "x1024", "wide", "big", "1024x1024x2", "-1x5"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def vertex_project(monkeypatch) -> None:
    monkeypatch.setenv("VERTEXAI_PROJECT", "test-project")


def _edit(upstream: ScriptedUpstream, model: str, **params: Any) -> Any:
    provider = "flux" if model.startswith("black_forest_labs/") else "gemini"
    if provider == "flux":
        upstream.reply = Reply({"id": "job-1", "status": "Error"})  # the job fails once sent
    else:
        upstream.reply = Reply(GEMINI_ANSWER)
    arguments = {**upstream.params(provider), "model": model, "image": PNG, **params}
    if provider == "flux":
        with pytest.raises(APIResponseError):
            tracking.image_edit(**arguments)
        return None
    return tracking.image_edit(**arguments)


@pytest.mark.parametrize("size", BAD_SIZES)
@pytest.mark.parametrize("model", UNKNOWN)
def test_a_size_the_provider_cannot_take_is_refused_before_sending(upstream, model, size):
    before = len(upstream.received)
    with pytest.raises(ValidationError) as caught:
        _edit(upstream, model, size=size)
    assert caught.value.param == "size"
    assert len(upstream.received) == before


def test_a_flux_size_becomes_its_aspect_ratio(upstream):
    _edit(upstream, FLUX_UNKNOWN, size="1536x1024")
    assert upstream.received[-1]["aspect_ratio"] == "3:2"


@pytest.mark.parametrize("model", ["gemini/gemini-4-image", "vertex_ai/gemini-4-image"])
def test_a_gemini_size_becomes_its_image_config(upstream, model):
    _edit(upstream, model, size="1536x1024")
    assert upstream.received[-1]["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}


@pytest.mark.parametrize("n", [2, 10])
@pytest.mark.parametrize("model", UNKNOWN)
def test_more_than_one_image_is_refused_before_sending(upstream, model, n):
    before = len(upstream.received)
    with pytest.raises(ValidationError) as caught:
        _edit(upstream, model, n=n)
    assert caught.value.param == "n"
    assert len(upstream.received) == before


@pytest.mark.parametrize("model", UNKNOWN)
def test_one_image_is_sent(upstream, model):
    before = len(upstream.received)
    _edit(upstream, model, n=1)
    assert len(upstream.received) == before + 1


@pytest.mark.parametrize(
    ("model", "param", "value"),
    [
        ("gemini/gemini-4-image", "mask", make_half_mask(64)),
        ("vertex_ai/gemini-4-image", "mask", make_half_mask(64)),
        ("gemini/gemini-4-image", "quality", "high"),
        ("gemini/gemini-4-image", "output_format", "webp"),
        (FLUX_UNKNOWN, "quality", "high"),
        (FLUX_UNKNOWN, "background", "transparent"),
    ],
)
def test_a_parameter_the_provider_has_no_field_for_is_refused_or_dropped(
    upstream, model, param, value
):
    before = len(upstream.received)
    with pytest.raises(UnsupportedParamsError) as caught:
        _edit(upstream, model, **{param: value})
    assert caught.value.param == param
    assert len(upstream.received) == before
    _edit(upstream, model, drop_params=True, **{param: value})
    assert len(upstream.received) == before + 1
    assert param not in upstream.received[-1]


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("unknown-models-proxy")
    deployments = {
        "flux2": (FLUX_UNKNOWN, upstream.base("flux")),
        "gem4": ("gemini/gemini-4-image", upstream.base("gemini")),
    }
    with proxy_in_front(folder, deployments) as process:
        yield process


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("flux2", "size", "0x0"),
        ("gem4", "size", "axb"),
        ("gem4", "n", "2"),
        ("flux2", "n", "3"),
    ],
)
def test_the_proxy_answers_400_naming_the_parameter(upstream, proxy, model, field, value):
    before = len(upstream.received)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat", field: value},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field
    assert len(upstream.received) == before
