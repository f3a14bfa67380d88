"""The SSE decoder the streamed answers are read with: events split across chunks in any way,
``\\r\\n`` line ends, comments and unknown fields skipped, and an event that never ends refused
at its size limit without losing the events that came before it."""

from __future__ import annotations

import pytest

from tracking.sse import EventTooLarge, ServerSentEvent, SSEDecoder, encode_event

FIRST = encode_event("image_edit.partial_image", b'{"partial_image_index": 0}')
SECOND = encode_event("image_edit.completed", b'{"a": 1}\n{"b": 2}')


#: FIRST and SECOND, decoded.
FIRST_AND_SECOND = [
    ServerSentEvent("image_edit.partial_image", b'{"partial_image_index": 0}'),
    ServerSentEvent("image_edit.completed", b'{"a": 1}\n{"b": 2}'),
]


def test_events_split_at_every_byte_come_out_whole_and_once():
    decoder = SSEDecoder()
    stream = FIRST + b": a comment\r\nid: 7\r\n" + SECOND
    events: list[ServerSentEvent] = []
    for index in range(len(stream)):
        events += decoder.feed(stream[index : index + 1])
    assert events == FIRST_AND_SECOND
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


def _ended(stream: bytes, ending: bytes) -> bytes:
    return stream.replace(b"\n", ending)


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"], ids=["cr", "crlf", "lf"])
@pytest.mark.parametrize("split", ["one chunk", "every byte"])
def test_lines_ended_by_cr_alone_are_lines_as_the_specification_says(ending, split):
    stream = _ended(FIRST + b": a comment\nid: 7\n" + SECOND, ending)
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    if split == "one chunk":
        events += decoder.feed(stream)
    else:
        for index in range(len(stream)):
            events += decoder.feed(stream[index : index + 1])
    assert events == FIRST_AND_SECOND
    assert not decoder.pending


def test_a_crlf_split_between_chunks_is_one_line_end_and_mixed_ends_decode_alike():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\r") == []
    assert decoder.feed(b"\ndata: 1\r") == []
    # the \n completes data's \r\n, then \r ends the event: not two blank lines
    assert decoder.feed(b"") == []  # nothing: the \r may still be half of a \r\n
    assert decoder.feed(b"\n\r") == [ServerSentEvent("a", b"1")]
    assert decoder.feed(b"\ndata: 2\n\r\n") == [ServerSentEvent(None, b"2")]
    assert decoder.feed(b"data: 3\r\rdata: 4\n\n") == [
        ServerSentEvent(None, b"3"),
        ServerSentEvent(None, b"4"),
    ]
    assert decoder.feed(b"\r" * 100_000 + b"data: 5\r\r") == [ServerSentEvent(None, b"5")]
