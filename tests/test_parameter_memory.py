"""parse_call remembers the parameter sets that pass the per-model parameter rules.

The rules that read only a call's parameters (model, n, size, options, stream, whether a mask
was given, drop_params) give the same answer for the same parameters, so ``parse_call`` keeps
the answer of a set that passes them and runs only the prompt and file rules again. These tests
hold it to what it promises: a bounded memory (hostile input cannot grow it), no error ever
kept, large or unusual values never kept, and every call answered as if nothing were kept.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

import tracking
import tracking.request as request_module
from tests.conftest import make_png
from tracking.request import parse_call

SQUARE = make_png(64, 64)
WIDE = make_png(96, 64)


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


JPEG = _jpeg()


@pytest.fixture(autouse=True)
def empty_memory() -> Iterator[dict[tuple[Any, ...], frozenset[str]]]:
    request_module._passed.clear()
    yield request_module._passed
    request_module._passed.clear()


def edit(**kwargs: Any) -> Any:
    return parse_call(**{"image": SQUARE, "prompt": "a hat", "model": "gpt-image-2", **kwargs})


def refused(**kwargs: Any) -> tracking.ValidationError:
    with pytest.raises(tracking.ValidationError) as caught:
        edit(**kwargs)
    return caught.value


def outcome(**kwargs: Any) -> tuple[str, Any]:
    """What parse_call answers: the request and options, or the error's type, fields and text."""
    try:
        return "ok", edit(**kwargs)
    except tracking.ValidationError as exc:
        rules = [(v.param, v.rule, v.message) for v in exc.violations]
        return "error", (type(exc), exc.param, exc.rule, str(exc), rules)


def test_a_passing_set_is_remembered_once_whatever_the_prompt_and_images(empty_memory):
    edit(size="1024x1024", quality="low", user="u1")
    assert len(empty_memory) == 1
    edit(size="1024x1024", quality="low", user="u2", prompt="another prompt", image=WIDE)
    assert len(empty_memory) == 1
    edit(size="1024x1024", quality="high")
    assert len(empty_memory) == 2


def test_the_memory_never_holds_more_than_its_bound(empty_memory):
    bound = request_module._MAX_REMEMBERED
    widths = range(640, 3072 + 1, 16)  # gpt-image-2's free sizes: multiples of 16, within 3:1
    calls = 0
    for n in range(1, 11):
        for width in widths:
            edit(size=f"{width}x1024", n=n)
            calls += 1
            assert len(empty_memory) <= bound
    assert calls > 2 * bound  # the bound was passed, more than once
    assert empty_memory  # and the memory still serves


def test_a_set_that_breaks_a_rule_is_never_remembered_and_refused_each_time(empty_memory):
    errors = [refused(quality="ultra"), refused(quality="ultra"), refused(quality="ultra")]
    assert {(e.param, e.rule, str(e)) for e in errors} == {("quality", "enum", errors[0].args[0])}
    assert not empty_memory
    unsupported = [refused(input_fidelity="high") for _ in range(2)]
    assert all(isinstance(e, tracking.UnsupportedParamsError) for e in unsupported)
    assert not empty_memory


def test_long_or_unusual_values_are_not_remembered(empty_memory):
    # a size spelled with 2,000 leading zeros: refused (no side of more than 9 digits is read
    # as a number), never held
    with pytest.raises(tracking.ValidationError):
        edit(size="0" * 2000 + "1024x1024")
    # a size of 9-digit sides: accepted, sent as given
    padded = "000001024x000001024"
    assert edit(size=padded)[0].size == padded
    empty_memory.clear()
    # a value the model does not take, dropped: accepted, never held
    dropped, _ = edit(input_fidelity="x" * 5000, drop_params=True)
    assert dropped.input_fidelity is None
    assert not empty_memory

    class Text(str):
        pass

    assert edit(quality=Text("low"))[0].quality == "low"
    assert not empty_memory
    edit(quality="low")
    assert len(empty_memory) == 1


def test_prompt_and_file_rules_still_run_for_a_remembered_set(empty_memory):
    params = {"model": "dall-e-2", "size": "256x256", "response_format": "url"}
    edit(**params)
    assert len(empty_memory) == 1
    long_prompt = refused(**params, prompt="x" * 1001)
    assert (long_prompt.param, long_prompt.rule) == ("prompt", "max_length")
    not_square = refused(**params, image=WIDE)
    assert (not_square.param, not_square.rule) == ("image", "square")
    jpeg = refused(**params, image=("a.jpg", JPEG))
    assert (jpeg.param, jpeg.rule) == ("image", "format")  # dall-e-2 takes PNG files only
    many = refused(**params, image=[SQUARE, SQUARE])
    assert (many.param, many.rule) == ("image", "max_images")
    opaque_mask = refused(**params, mask=make_png(64, 64, alpha=False))
    assert (opaque_mask.param, opaque_mask.rule) == ("mask", "alpha")
    assert len(empty_memory) == 2  # with a mask is another set; it passed its parameter rules


def test_drop_params_and_the_mask_are_part_of_the_set(empty_memory):
    kept, _ = edit(input_fidelity="high", drop_params=True)
    assert kept.input_fidelity is None
    error = refused(input_fidelity="high")
    assert isinstance(error, tracking.UnsupportedParamsError)
    assert error.param == "input_fidelity"

    gemini = {"model": "gemini/gemini-3.1-flash-image"}
    assert edit(**gemini)[0].mask is None
    masked, _ = edit(**gemini, mask=SQUARE, drop_params=True)
    assert masked.mask is None  # dropped: the family takes no mask
    error = refused(**gemini, mask=SQUARE)
    assert (error.param, error.rule) == ("mask", "unsupported")


CASES: list[dict[str, Any]] = [
    {"size": "1024x1024", "quality": "low", "user": "u"},
    {"size": "1536x1024", "n": 3, "output_format": "jpeg", "output_compression": 50},
    {"size": "2048x1024", "background": "opaque"},
    {"size": "1000x1000"},  # not a multiple of 16
    {"background": "transparent"},
    {"output_compression": 50},  # png takes no compression
    {"stream": True, "partial_images": 2},
    {"stream": True, "n": 2},
    {"response_format": "b64_json"},  # dropped silently for GPT image models
    {"response_format": "url"},
    {"quality": "ultra", "prompt": "x" * 40_000},  # a parameter and the prompt, together
    {"model": "dall-e-2", "size": "256x256", "image": WIDE, "quality": "hd"},
    {"model": "gpt-image-2.6-flare", "output_format": "gif", "stream": True},
    {"model": "gemini/gemini-3.1-flash-image", "n": 2, "mask": SQUARE},
    {"operation": "image_generation", "image": None, "moderation": "low"},
    {"operation": "image_generation", "image": None, "model": "dall-e-2", "size": "512x512"},
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_every_call_is_answered_as_if_nothing_were_remembered(case, empty_memory):
    cold = outcome(**case)
    empty_memory.clear()
    edit_anyway = [outcome(**case) for _ in range(3)]  # the first fills the memory, if it passes
    assert all(answer == cold for answer in edit_anyway)
