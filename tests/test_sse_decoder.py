"""The SSE decoder the streamed answers are read with: events split across chunks in any way,
``\\r\\n`` line ends, comments and unknown fields skipped, and an event that never ends refused
at its size limit without losing the events that came before it."""

from __future__ import annotations

import pytest

from tracking.sse import EventTooLarge, ServerSentEvent, SSEDecoder, encode_event

FIRST = encode_event("image_edit.partial_image", b'{"partial_image_index": 0}')
SECOND = encode_event("image_edit.completed", b'{"a": 1}\n{"b": 2}')


def test_events_split_at_every_byte_come_out_whole_and_once():
    decoder = SSEDecoder()
    stream = FIRST + b": a comment\r\nid: 7\r\n" + SECOND
    events: list[ServerSentEvent] = []
    for index in range(len(stream)):
        events += decoder.feed(stream[index : index + 1])
    assert events == [
        ServerSentEvent("image_edit.partial_image", b'{"partial_image_index": 0}'),
        ServerSentEvent("image_edit.completed", b'{"a": 1}\n{"b": 2}'),
    ]
    assert not decoder.pending


def test_an_event_that_never_ends_is_refused_at_the_limit():
    decoder = SSEDecoder(max_event_bytes=100)
    assert decoder.feed(b"data: " + b"x" * 60) == []
    with pytest.raises(EventTooLarge, match="100 bytes"):
        decoder.feed(b"x" * 60 + b"\ndata: more")


def test_the_events_before_an_oversized_one_in_the_same_chunk_are_delivered_first():
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(FIRST + b"data: " + b"x" * 200)
    assert [event.event for event in events] == ["image_edit.partial_image"]
    with pytest.raises(EventTooLarge):
        decoder.feed(b"\n\n")  # its end, too late: the event was refused
