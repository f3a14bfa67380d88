"""Every accepted form of image argument reaches the upstream as the same multipart file."""

from __future__ import annotations

import io
import os

import pytest

import tracking
from tests.conftest import make_png

PNG = make_png(32, 32)


def _sent_files(fake):
    return [(name, fname, ctype, size) for name, fname, ctype, size in fake.requests[-1].files]


def test_bytes(fake, upstream):
    tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)
    assert _sent_files(fake) == [("image", "image.png", "image/png", len(PNG))]


def test_path_string_and_pathlib(fake, upstream, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    tracking.image_edit(image=str(path), prompt="p", model="gpt-image-1", **upstream)
    assert _sent_files(fake) == [("image", "photo.png", "image/png", len(PNG))]
    tracking.image_edit(image=path, prompt="p", model="gpt-image-1", **upstream)
    assert _sent_files(fake) == [("image", "photo.png", "image/png", len(PNG))]


def test_open_file_and_bytesio(fake, upstream, tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    with open(path, "rb") as handle:
        tracking.image_edit(image=handle, prompt="p", model="gpt-image-1", **upstream)
    assert _sent_files(fake) == [("image", "cat.png", "image/png", len(PNG))]
    tracking.image_edit(image=io.BytesIO(PNG), prompt="p", model="gpt-image-1", **upstream)
    assert _sent_files(fake) == [("image", "image.png", "image/png", len(PNG))]


def test_tuple_as_the_openai_client_takes_it(fake, upstream):
    tracking.image_edit(
        image=("named.png", PNG, "image/png"), prompt="p", model="gpt-image-1", **upstream
    )
    assert _sent_files(fake) == [("image", "named.png", "image/png", len(PNG))]


def test_list_of_mixed_inputs_is_sent_as_image_brackets(fake, upstream, tmp_path):
    path = tmp_path / "second.png"
    path.write_bytes(PNG)
    other = make_png(16, 16)
    tracking.image_edit(
        image=[PNG, path, io.BytesIO(other)], prompt="p", model="gpt-image-1", **upstream
    )
    assert _sent_files(fake) == [
        ("image[]", "image.png", "image/png", len(PNG)),
        ("image[]", "second.png", "image/png", len(PNG)),
        ("image[]", "image.png", "image/png", len(other)),
    ]


def test_missing_file_is_a_validation_error_naming_the_path(upstream, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(tracking.ValidationError, match="no such file") as caught:
        tracking.image_edit(image=missing, prompt="p", model="gpt-image-1", **upstream)
    assert caught.value.param == "image"


@pytest.mark.parametrize("param", ["image", "mask"])
def test_paths_that_name_no_readable_image_file_are_validation_errors(upstream, tmp_path, param):
    # A NUL byte (open() raises a bare ValueError), a named pipe without a writer (open() would
    # block forever) and a device (endless bytes) are refused before anything is sent.
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    others = {"image": make_png(), "mask": None}
    for path, message in [
        ("", "an empty file name"),
        (f"{tmp_path}/a\x00b.png", "NUL byte"),
        (fifo, "not a regular file"),
        ("/dev/zero", "not a regular file"),
    ]:
        arguments = {**others, param: path}
        with pytest.raises(tracking.ValidationError, match=message) as caught:
            tracking.image_edit(prompt="p", model="gpt-image-2", **arguments, **upstream)
        assert caught.value.param == param


def test_text_mode_file_is_refused_with_advice(upstream, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("hello")
    with open(path) as handle, pytest.raises(tracking.ValidationError, match="'rb'"):
        tracking.image_edit(image=handle, prompt="p", model="gpt-image-1", **upstream)


def test_wrong_type_and_empty_inputs(upstream):
    with pytest.raises(tracking.ValidationError, match="got int"):
        tracking.image_edit(image=42, prompt="p", model="gpt-image-1", **upstream)
    with pytest.raises(tracking.ValidationError, match="empty"):
        tracking.image_edit(image=b"", prompt="p", model="gpt-image-1", **upstream)
    with pytest.raises(tracking.ValidationError, match="empty"):
        tracking.image_edit(image=[], prompt="p", model="gpt-image-1", **upstream)


def test_image_file_repr_never_dumps_bytes():
    from tracking.images import read_image

    assert repr(read_image(PNG)) == f"ImageFile('image.png', {len(PNG)} bytes, image/png)"
