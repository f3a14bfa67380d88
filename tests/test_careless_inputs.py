"""Careless arguments (a file opened in text mode or already closed, ``metadata`` or
``extra_body`` that is not a dict, a size in full-width digits) are a ``ValidationError``
naming the parameter, before anything is sent, the same on the sync and async paths: never an
untyped ``UnicodeDecodeError`` / ``ValueError`` / ``TypeError`` from inside the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tracking
from tests.conftest import edit_either
from tests.recorder import record_events
from tracking.testing.fake_images import solid_png

PNG = solid_png(256, 256, (10, 20, 30))


def _call(use_async: bool, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"model": "gpt-image-2", "image": PNG, "prompt": "x", **kwargs}
    return edit_either(use_async, **params)


def _refused(fake, upstream, use_async: bool, **kwargs: Any) -> tracking.ValidationError:
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as caught:
        _call(use_async, **upstream, **kwargs)
    assert fake.hits == hits  # nothing was sent
    return caught.value


@pytest.fixture
def png_path(tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(PNG)
    return path


@pytest.mark.parametrize("use_async", [False, True])
def test_a_file_open_in_text_mode_says_open_it_with_rb(fake, upstream, png_path, use_async):
    with png_path.open() as handle:  # text mode, the default
        error = _refused(fake, upstream, use_async, image=handle)
    assert error.param == "image" and "'rb'" in error.message


@pytest.mark.parametrize("use_async", [False, True])
def test_a_closed_file_is_refused_naming_the_parameter(fake, upstream, png_path, use_async):
    handle = png_path.open("rb")
    handle.close()
    error = _refused(fake, upstream, use_async, image=handle)
    assert error.param == "image" and error.rule == "file" and "closed" in error.message
    mask = png_path.open("rb")
    mask.close()
    error = _refused(fake, upstream, use_async, mask=mask)
    assert error.param == "mask" and error.rule == "file"


class _BrokenFile:
    name = "broken.png"

    def read(self, size: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


@pytest.mark.parametrize("use_async", [False, True])
def test_a_file_that_fails_to_read_is_refused_naming_the_parameter(fake, upstream, use_async):
    error = _refused(fake, upstream, use_async, image=_BrokenFile())
    assert error.param == "image" and error.rule == "file"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("name", ["metadata", "extra_body"])
@pytest.mark.parametrize("value", ["x", [1], [("a", 1)], 5, {1: "a"}])
def test_metadata_and_extra_body_must_be_dicts(fake, upstream, monkeypatch, use_async, name, value):
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, **{name: value})
    assert error.param == name and error.rule == "type"
    assert recorder.last.error_type == "validation_error"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2", "\uff11\uff10\uff12\uff14x\uff11\uff10\uff12\uff14"),  # full-width
        ("gpt-image-2", "1024x1024\u00b2"),
        ("gpt-image-2", "\u0661\u0660\u0662\u0664x1024"),  # Arabic-Indic digits
        ("some-new-model", "\uff11\uff10\uff12\uff14x\uff11\uff10\uff12\uff14"),  # no family
        ("gpt-image-1", "1024x1024\n"),
    ],
)
def test_a_size_must_be_ascii(fake, upstream, use_async, model, size):
    error = _refused(fake, upstream, use_async, model=model, size=size)
    assert error.param == "size" and error.rule == "format"
