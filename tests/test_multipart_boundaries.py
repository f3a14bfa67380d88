"""Multipart boundaries: unpredictable (the OS's randomness), unique, and drawn without a system
call per body (a system call hands the GIL to another thread in the middle of every call)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import in_forked_child
from tracking import multipart
from tracking.images import ImageFile
from tracking.multipart import POOL_BYTES, encode_multipart

PNG = ImageFile("a.png", b"\x89PNG\r\n\x1a\nrest", "image/png")


def _boundary() -> str:
    _, content_type = encode_multipart([("prompt", "a hat")], [("image", PNG)])
    return content_type.split("boundary=", 1)[1]


def test_boundaries_come_from_the_os_a_pool_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[int] = []
    real = os.urandom

    def counted(size: int) -> bytes:
        fetched.append(size)
        return real(size)

    monkeypatch.setattr(multipart.os, "urandom", counted)
    multipart._ENTROPY.reset()
    bodies = POOL_BYTES // 16 * 3
    boundaries = [_boundary() for _ in range(bodies)]
    assert len(set(boundaries)) == bodies  # each 16 bytes handed out once
    assert all(len(b) == 32 and int(b, 16) >= 0 for b in boundaries)
    assert fetched == [POOL_BYTES] * 3  # one system call per 256 bodies, not one per body


def test_the_body_is_delimited_by_its_boundary() -> None:
    body, content_type = encode_multipart([("prompt", "a hat")], [("image", PNG)])
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"--" + boundary + b"--\r\n")
    assert body.count(boundary) == 3


def test_a_forked_child_draws_other_boundaries_than_its_parent() -> None:
    _boundary()  # the parent's pool is filled
    child = in_forked_child(_boundary)
    assert child != _boundary()
    assert len(child) == 32
