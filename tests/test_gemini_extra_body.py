"""``extra_body`` may not override what a Gemini call is made and priced by (a QA pass's finding).

``extra_body`` is refused for the call's own parameters (``size``, ``n``...), but Gemini's own
names for them passed and replaced the call's: ``generationConfig.imageConfig.imageSize = "4K"``
made Google bill a 4K image while the ledger priced the 1K the call's size implies, and any
``generationConfig`` replaced the call's whole (its image output and size dropped). Now the
members the call sets (``contents``; ``generationConfig``'s ``imageConfig``, ``candidateCount``,
``responseModalities``, in either spelling) are a ``ValidationError(param="extra_body")``
before sending, in the SDK and through the proxy, and other ``generationConfig`` members are
merged into the call's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.proxy_support import ProxyProcess
from tests.scripted_upstream import (
    GEMINI_ANSWER,
    MODELS,
    PNG,
    Reply,
    ScriptedUpstream,
    proxy_in_front,
    scripted_upstream,
)
from tracking.errors import ValidationError

REFUSED: dict[str, dict[str, Any]] = {
    "imageConfig": {"generationConfig": {"imageConfig": {"imageSize": "4K"}}},
    "image_config": {"generationConfig": {"image_config": {"image_size": "4K"}}},
    "candidateCount": {"generationConfig": {"candidateCount": 4}},
    "candidate_count": {"generationConfig": {"candidate_count": 4}},
    "responseModalities": {"generationConfig": {"responseModalities": ["TEXT"]}},
    "response_modalities": {"generationConfig": {"response_modalities": ["TEXT"]}},
    "generation_config": {"generation_config": {"image_config": {"image_size": "4K"}}},
    "contents": {"contents": [{"role": "user", "parts": [{"text": "another prompt"}]}]},
    "generationConfig not an object": {"generationConfig": "4K"},
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        server.reply = Reply(GEMINI_ANSWER)
        yield server


@pytest.fixture(params=["gemini", "vertex_ai"])
def params(request, upstream, monkeypatch) -> dict[str, Any]:
    if request.param == "gemini":
        return upstream.params("gemini")
    monkeypatch.setenv("VERTEXAI_PROJECT", "test-project")
    return {**upstream.params("gemini"), "model": "vertex_ai/gemini-3.1-flash-image"}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_extra_body_may_not_set_what_the_call_is_priced_by(upstream, params, case):
    before = len(upstream.received)
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(image=PNG, size="1024x1024", extra_body=REFUSED[case], **params)
    assert caught.value.param == "extra_body"
    assert len(upstream.received) == before  # nothing sent


def test_other_generation_config_members_are_merged_into_the_calls(upstream, params):
    extra = {
        "generationConfig": {"temperature": 0.4, "seed": 7},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    tracking.image_edit(image=PNG, size="4096x4096", extra_body=extra, **params)
    sent = upstream.received[-1]
    assert sent["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "temperature": 0.4,
        "seed": 7,
        "imageConfig": {"aspectRatio": "1:1", "imageSize": "4K"},  # the size asked, kept
    }
    assert sent["safetySettings"] == extra["safetySettings"]
    assert sent["contents"][0]["parts"][0] == {"text": "a hat"}


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream, tmp_path_factory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("gemini-extra-body-proxy")
    with proxy_in_front(folder, {"nano": (MODELS["gemini"], upstream.base("gemini"))}) as process:
        yield process


@pytest.mark.parametrize(
    "field",
    [
        "generationConfig[imageConfig][imageSize]",
        "generationConfig[candidateCount]",
        "contents[0][parts][0][text]",
    ],
)
def test_the_proxy_refuses_form_fields_that_override_the_call(upstream, proxy, field):
    before = len(upstream.received)
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": "nano", "prompt": "a hat", field: "4K"},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "extra_body"
    assert len(upstream.received) == before
