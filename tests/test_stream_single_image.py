"""A streamed call asks for one image: ``stream=True`` with ``n`` above 1 is refused before sending.

Each streamed event carries one image and OpenAI refuses a stream of several with a 400
(``unsupported_parameter``, "Streaming is only supported with n=1."). It was sent anyway: the
call failed at the upstream instead of as a ``ValidationError``, and meanwhile the proxy held the
budget of ``n`` images for it. The fake upstream refused nothing and streamed one image.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import API_KEY, make_png


def _call(operation: str, use_async: bool, upstream: dict[str, str], **more: Any) -> Any:
    params: dict[str, Any] = {"prompt": "a hat", "model": "gpt-image-2", **upstream, **more}
    if operation == "edit":
        params["image"] = make_png()
    sync = tracking.image_edit if operation == "edit" else tracking.image_generation
    if not use_async:
        return sync(**params)
    call = tracking.aimage_edit if operation == "edit" else tracking.aimage_generation
    return asyncio.run(call(**params))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("operation", ["edit", "generation"])
def test_a_stream_of_several_images_is_refused_before_sending(fake, upstream, operation, use_async):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as refused:
        _call(operation, use_async, upstream, stream=True, n=2, partial_images=1)
    assert refused.value.param == "n" and refused.value.rule == "stream_single_image"
    assert refused.value.code == "unsupported_parameter"
    assert fake.hits == hits  # nothing was sent


def test_n_of_one_streams_and_several_images_without_a_stream_still_work(fake, upstream):
    stream = _call("edit", False, upstream, stream=True, n=1)
    assert [event.type for event in stream][-1] == "image_edit.completed"
    assert len(_call("generation", False, upstream, n=2).data) == 2


def test_the_fake_refuses_a_stream_of_several_images_as_openai_does(fake):
    answer = httpx.post(
        f"{fake.url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "a hat", "stream": True, "n": 2},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == "n"
