"""A streamed event whose ``type`` is a list or an object ends the call with a typed error (a QA
pass on streaming).

``parse_stream_event`` looked such a type up in a set of names: a bare ``TypeError``
("unhashable type") escaped the call path instead of the upstream failure the docs' table
promises (``invalid_response`` as the first event, ``stream_interrupted`` after others), which the
proxy answers as a 502 or an ``error`` event.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import edits_upstream, make_png
from tests.recorder import EventRecorder

PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
PARTIAL = json.dumps({"type": "image_edit.partial_image", "b64_json": PNG_B64})
TYPES: dict[str, Any] = {"list": ["image_edit.completed"], "object": {"name": "x"}}


def _upstream(kind: Any, first: bool) -> Any:
    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        if not first:
            await answer.write(f"event: image_edit.partial_image\ndata: {PARTIAL}\n\n".encode())
        odd = json.dumps({"type": kind, "b64_json": PNG_B64})
        await answer.write(f"event: image_edit.completed\ndata: {odd}\n\n".encode())
        await answer.write_eof()
        return answer

    return edits_upstream(edit, "odd-event-type")


@pytest.mark.parametrize("first", [True, False], ids=["first-event", "after-a-partial"])
@pytest.mark.parametrize("kind", sorted(TYPES))
def test_an_event_type_that_is_no_string_is_an_upstream_failure(
    recorder: EventRecorder, kind: str, first: bool
) -> None:
    seen: list[str] = []
    with _upstream(TYPES[kind], first) as api_base:
        params = {"model": "gpt-image-2", "prompt": "a hat", "image": make_png(16, 16)}
        params |= {"api_base": api_base, "api_key": "sk-test", "stream": True, "max_retries": 0}
        with pytest.raises(tracking.TrackingError) as failed:
            seen.extend(event.type for event in tracking.image_edit(**params))
    expected = tracking.APIResponseError if first else tracking.StreamInterruptedError
    assert isinstance(failed.value, expected), failed.value
    assert seen == ([] if first else ["image_edit.partial_image"])
    (event,) = recorder.events
    error_type = "invalid_response" if first else "stream_interrupted"
    assert (event.status, event.error_type, event.http_status) == ("failure", error_type, 200)
    assert event.cost_source == "estimate" and event.cost_usd
