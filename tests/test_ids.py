"""Request ids are UUIDv7: valid UUIDs that sort by the millisecond they were made."""

from __future__ import annotations

import time
import uuid

import tracking
from tests.conftest import in_forked_child, make_png
from tracking.ids import new_request_id


def test_ids_are_version_7_uuids_carrying_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    text = new_request_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = [new_request_id() for _ in range(50)]
    time.sleep(0.002)
    later = new_request_id()
    assert all(id_ < later for id_ in earlier)


def test_ids_are_unique() -> None:
    assert len({new_request_id() for _ in range(100_000)}) == 100_000


def test_a_call_carries_a_version_7_id(upstream: dict[str, str]) -> None:
    response = tracking.image_edit(
        model="gpt-image-1", image=make_png(), prompt="a hat", **upstream
    )
    assert uuid.UUID(response.request_id).version == 7


def test_a_forked_child_makes_different_ids_than_its_parent() -> None:
    child_id = in_forked_child(new_request_id)
    parent_id = new_request_id()
    assert child_id[14:] != parent_id[14:]  # the random parts differ
