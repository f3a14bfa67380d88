"""The proxy relays a large streamed event with one copy of it per step, not one per
concatenation.

A completed event at 4K carries tens of MB of base64. Adding the call's cost to it and framing it
as SSE made about eight copies of it on the proxy's event loop (each ``+`` of bytes is one), time
in which no other request was served; it is now built with one copy for the cost member and one
for the frame. Measured as memory (``tracemalloc``), which a loaded machine does not move.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tracking.proxy.stream_relay import with_last_member
from tracking.sse import SSEDecoder, encode_event

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": 1}', b'{"a": 1, "tracking": {"x": 1}}'),
        (b'{"a": 1}\r\n \t', b'{"a": 1, "tracking": {"x": 1}}'),
        (b'{"a":\n1 }', b'{"a":\n1, "tracking": {"x": 1}}'),
        (b"{}", b'{ "tracking": {"x": 1}}'),
        (b"{ \n}", b'{ "tracking": {"x": 1}}'),
        (b"[1]", b"[1]"),  # not an object: left as it is
        (b"", b""),
    ],
)
def test_the_member_is_added_last_and_the_rest_left_as_it_came(
    data: bytes, expected: bytes
) -> None:
    assert with_last_member(data, b"tracking", b'{"x": 1}') == expected


def test_an_event_of_several_lines_is_framed_one_data_line_each() -> None:
    framed = encode_event("image_edit.completed", b'{"a": 1,\n"b": 2}')
    assert framed == b'event: image_edit.completed\ndata: {"a": 1,\ndata: "b": 2}\n\n'
    (event,) = SSEDecoder().feed(framed)
    assert (event.event, json.loads(event.data)) == ("image_edit.completed", {"a": 1, "b": 2})


def test_a_large_completed_event_is_copied_once_per_step() -> None:
    image = b"A" * (24 * MB)  # the base64 of a 4K PNG, about
    data = b'{"type": "image_edit.completed", "b64_json": "' + image + b'", "size": "4096x4096"}'
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with_cost = with_last_member(data, b"tracking", b'{"response_cost": "0.2"}')
        _, peak_member = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        framed = encode_event("image_edit.completed", with_cost)
        _, peak_frame = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one new copy each (a few KB of slack); the concatenations held two or three at once
    assert peak_member < len(data) + MB, peak_member / len(data)
    assert peak_frame - len(with_cost) < len(data) + MB, (peak_frame - len(with_cost)) / len(data)
    (event,) = SSEDecoder().feed(framed)
    assert json.loads(event.data)["tracking"] == {"response_cost": "0.2"}
