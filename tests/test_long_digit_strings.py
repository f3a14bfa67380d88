"""Digit strings past Python's 4,300-digit limit for ``int()`` get a typed error, not a
``ValueError`` from deep inside the call: a free size's sides (leading zeros included) and a
2.6 model's range option sent as text, as an edit's multipart fields are."""

from __future__ import annotations

from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tracking.errors import ValidationError
from tracking.testing import FakeOpenAI

LONG = "0" * 5000


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"model": "gpt-image-2", "size": LONG + "1024x1024"}, "size"),
        ({"model": "gpt-image-2", "size": "1024x" + LONG + "1024"}, "size"),
        (
            {"model": "gpt-image-2.6-flare", "extra_body": {"frame_count": LONG + "3"}},
            "frame_count",
        ),
    ],
)
def test_a_number_of_thousands_of_digits_is_a_validation_error(
    fake: FakeOpenAI, upstream: dict[str, str], params: dict[str, Any], param: str
) -> None:
    sent = len(fake.requests)
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(image=make_png(), prompt="a hat", **upstream, **params)
    assert caught.value.param == param
    assert len(fake.requests) == sent  # refused before anything was sent
