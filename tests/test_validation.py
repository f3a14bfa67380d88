"""Every request rule, each with a failing input and the error expected for it, written by hand.

The rules are checked by ``parse_call`` before anything is sent; the last tests prove that
through ``image_edit`` against the fake (no request arrives) and that unknown models get only
the generic checks.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tracking.families import FAMILIES, family_of
from tracking.request import parse_call

MB = 1024 * 1024
SQUARE = make_png(64, 64)
WIDE = make_png(96, 64)
OPAQUE = make_png(64, 64, alpha=False)


def encoded(fmt: str, width: int = 64, height: int = 64, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    color = (255, 0, 0, 128) if mode == "RGBA" else (255, 0, 0)  # half transparent: alpha kept
    Image.new(mode, (width, height), color).save(out, format=fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def refused(**kwargs):
    call = {"image": SQUARE, "prompt": "p", **kwargs}
    with pytest.raises(tracking.ValidationError) as caught:
        parse_call(**call)
    return caught.value


# -- the table ---------------------------------------------------------------------------------


def test_families_are_matched_exactly():
    assert family_of("gpt-image-1").name == "gpt-image-1"
    assert family_of("gpt-image-1.5").name == "gpt-image-1"
    assert family_of("gpt-image-1-mini").name == "gpt-image-1-mini"
    assert family_of("gpt-image-2-2026-04-21").name == "gpt-image-2"
    assert family_of("dall-e-2").name == "dall-e-2"
    for near_miss in ("gpt-image-1x", "GPT-IMAGE-1", "gpt-image", "dall-e-3", "openai/gpt-image-1"):
        assert family_of(near_miss) is None


def test_every_model_belongs_to_exactly_one_family():
    models = [model for family in FAMILIES for model in family.models]
    assert len(models) == len(set(models))


# -- dall-e-2 ----------------------------------------------------------------------------------

DALL_E_2_CASES = [
    (
        {"image": [SQUARE, SQUARE]},
        "image",
        "max_images",
        "image: dall-e-2 takes at most 1 image(s), got 2",
    ),
    (
        {"image": encoded("JPEG")},
        "image",
        "format",
        "image: dall-e-2 takes PNG files; 'image.jpg' is JPEG",
    ),
    (
        {"image": SQUARE + b"\0" * (4 * MB)},
        "image",
        "max_bytes",
        f"image: dall-e-2 takes files under 4 MB; 'image.png' is {len(SQUARE) + 4 * MB:,} bytes",
    ),
    (
        {"image": WIDE},
        "image",
        "square",
        "image: dall-e-2 takes square images; 'image.png' is 96x64",
    ),
    (
        {"size": "1536x1024"},
        "size",
        "enum",
        "size: dall-e-2 takes '1024x1024', '256x256', '512x512', got '1536x1024'",
    ),
    (
        {"quality": "high"},
        "quality",
        "enum",
        "quality: dall-e-2 takes 'standard', got 'high'",
    ),
    (
        {"background": "transparent"},
        "background",
        "unsupported",
        "background: dall-e-2 does not take this parameter; remove it, or pass "
        "drop_params=True to drop it",
    ),
    (
        {"prompt": "x" * 1001},
        "prompt",
        "max_length",
        "prompt: dall-e-2 takes at most 1000 characters, got 1001",
    ),
    (
        {"mask": encoded("JPEG")},
        "mask",
        "format",
        "mask: dall-e-2 takes PNG files; 'mask.jpg' is JPEG",
    ),
    (
        {"mask": OPAQUE},
        "mask",
        "alpha",
        "mask: the mask needs an alpha channel (its fully transparent pixels mark where to "
        "edit); 'mask.png' has none",
    ),
    (
        {"mask": make_png(32, 32)},
        "mask",
        "dimensions",
        "mask: must have the image's dimensions (64x64); 'mask.png' is 32x32",
    ),
    (
        {"mask": SQUARE + b"\0" * (4 * MB)},
        "mask",
        "max_bytes",
        f"mask: dall-e-2 takes files under 4 MB; 'mask.png' is {len(SQUARE) + 4 * MB:,} bytes",
    ),
]


@pytest.mark.parametrize(("kwargs", "param", "rule", "message"), DALL_E_2_CASES)
def test_dall_e_2_rules(kwargs, param, rule, message):
    error = refused(model="dall-e-2", **kwargs)
    assert (error.param, error.rule, str(error)) == (param, rule, message)
    assert error.status_code == 400


def test_dall_e_2_accepts_a_valid_call_and_sends_response_format():
    request, _ = parse_call(
        image=SQUARE,
        mask=make_png(64, 64),
        prompt="p",
        model="dall-e-2",
        size="512x512",
        response_format="url",
        n=10,
    )
    assert request.response_format == "url"
    assert request.images[0].width == 64 and request.mask is not None


# -- GPT image models --------------------------------------------------------------------------

GPT_CASES = [
    (
        "gpt-image-1",
        {"image": [SQUARE] * 17},
        "image",
        "max_images",
        "image: gpt-image-1 takes at most 16 image(s), got 17",
    ),
    (
        "gpt-image-1",
        {"image": encoded("GIF")},
        "image",
        "format",
        "image: gpt-image-1 takes JPEG/PNG/WEBP files; 'image.gif' is GIF",
    ),
    (
        "gpt-image-1",
        {"image": b"just some text, not an image"},
        "image",
        "format",
        "image: gpt-image-1 takes JPEG/PNG/WEBP files; 'image.bin' is not a recognised image",
    ),
    (
        "gpt-image-1.5",
        {"size": "512x512"},
        "size",
        "enum",
        "size: gpt-image-1.5 takes '1024x1024', '1024x1536', '1536x1024', 'auto', got '512x512'",
    ),
    (
        "gpt-image-1",
        {"quality": "ultra"},
        "quality",
        "enum",
        "quality: gpt-image-1 takes 'auto', 'high', 'low', 'medium', got 'ultra'",
    ),
    (
        "gpt-image-1",
        {"background": "none"},
        "background",
        "enum",
        "background: gpt-image-1 takes 'auto', 'opaque', 'transparent', got 'none'",
    ),
    (
        "gpt-image-1",
        {"output_format": "gif"},
        "output_format",
        "enum",
        "output_format: gpt-image-1 takes 'jpeg', 'png', 'webp', got 'gif'",
    ),
    (
        "gpt-image-1",
        {"input_fidelity": "max"},
        "input_fidelity",
        "enum",
        "input_fidelity: gpt-image-1 takes 'high', 'low', got 'max'",
    ),
    (
        "gpt-image-1",
        {"background": "transparent", "output_format": "jpeg"},
        "background",
        "needs_format",
        "background: 'transparent' needs output_format 'png', 'webp', got 'jpeg'",
    ),
    (
        "gpt-image-1",
        {"output_compression": 50},
        "output_compression",
        "needs_format",
        "output_compression: only for output_format 'jpeg', 'webp', got 'png'",
    ),
    (
        "gpt-image-1",
        {"output_compression": 50, "output_format": "png"},
        "output_compression",
        "needs_format",
        "output_compression: only for output_format 'jpeg', 'webp', got 'png'",
    ),
    (
        "gpt-image-1-mini",
        {"input_fidelity": "high"},
        "input_fidelity",
        "unsupported",
        "input_fidelity: gpt-image-1-mini does not take this parameter; remove it, or pass "
        "drop_params=True to drop it",
    ),
    (
        "gpt-image-2",
        {"input_fidelity": "high"},
        "input_fidelity",
        "unsupported",
        "input_fidelity: gpt-image-2 does not take this parameter; remove it, or pass "
        "drop_params=True to drop it",
    ),
    (
        "gpt-image-2-2026-04-21",
        {"background": "transparent"},
        "background",
        "enum",
        "background: gpt-image-2-2026-04-21 takes 'auto', 'opaque', got 'transparent'",
    ),
    (
        "gpt-image-1",
        {"response_format": "url"},
        "response_format",
        "unsupported",
        "response_format: gpt-image-1 always returns base64 (b64_json) and does not accept "
        "response_format='url'; remove it, or pass drop_params=True to drop it",
    ),
    (
        "gpt-image-1",
        {"prompt": "x" * 32001},
        "prompt",
        "max_length",
        "prompt: gpt-image-1 takes at most 32000 characters, got 32001",
    ),
    (
        "gpt-image-1",
        {"image": SQUARE + b"\0" * (50 * MB)},
        "image",
        "max_bytes",
        f"image: gpt-image-1 takes files under 50 MB; 'image.png' is "
        f"{len(SQUARE) + 50 * MB:,} bytes",
    ),
    (
        "gpt-image-1",
        {"mask": OPAQUE},
        "mask",
        "alpha",
        "mask: the mask needs an alpha channel (its fully transparent pixels mark where to "
        "edit); 'mask.png' has none",
    ),
    (
        "gpt-image-1",
        {"image": [WIDE, SQUARE], "mask": SQUARE},
        "mask",
        "dimensions",
        "mask: must have the image's dimensions (96x64); 'mask.png' is 64x64",
    ),
    (
        "gpt-image-1",
        {"mask": encoded("WEBP", mode="RGBA")},
        "mask",
        "format",
        "mask: gpt-image-1 takes PNG files; 'mask.webp' is WEBP",
    ),
]


@pytest.mark.parametrize(("model", "kwargs", "param", "rule", "message"), GPT_CASES)
def test_gpt_image_rules(model, kwargs, param, rule, message):
    error = refused(model=model, **kwargs)
    assert (error.param, error.rule, str(error)) == (param, rule, message)


GPT_IMAGE_2_SIZES = [
    ("1000x1008", "multiple_of", "both sides multiples of 16"),
    ("4096x1024", "max_side", "no side above 3840"),
    ("3840x1024", "aspect", "an aspect ratio within 3:1 and 1:3"),
    ("800x800", "pixels", "between 655,360 and 8,294,400 pixels in all"),
    ("3840x2176", "pixels", "between 655,360 and 8,294,400 pixels in all"),
    ("big", "format", "both sides whole numbers of pixels"),
]


@pytest.mark.parametrize(("size", "rule", "needs"), GPT_IMAGE_2_SIZES)
def test_gpt_image_2_custom_sizes(size, rule, needs):
    error = refused(model="gpt-image-2", size=size)
    assert (error.param, error.rule) == ("size", rule)
    assert str(error) == (
        "size: gpt-image-2 takes '1024x1024', '1024x1536', '1536x1024', 'auto' or "
        f"WIDTHxHEIGHT with {needs}; got {size!r}"
    )


@pytest.mark.parametrize("size", ["3840x2160", "2160x3840", "2048x2048", "1024x768", "auto"])
def test_gpt_image_2_accepts_flexible_sizes(size):
    request, _ = parse_call(image=SQUARE, prompt="p", model="gpt-image-2", size=size)
    assert request.size == size


def test_other_gpt_image_models_take_no_custom_size():
    error = refused(model="gpt-image-1", size="2048x2048")
    assert (error.param, error.rule) == ("size", "enum")


def test_gpt_image_accepts_every_documented_combination():
    request, _ = parse_call(
        image=[SQUARE, encoded("JPEG"), encoded("WEBP", mode="RGBA")],
        mask=make_png(64, 64),
        prompt="p",
        model="gpt-image-1",
        size="1536x1024",
        quality="high",
        background="transparent",
        output_format="webp",
        output_compression=80,
        input_fidelity="high",
        n=10,
        response_format="b64_json",
    )
    assert request.output_compression == 80 and request.input_fidelity == "high"
    assert request.response_format is None  # b64_json is what they return: never sent
    assert [i.format for i in request.images] == ["png", "jpeg", "webp"]


def test_drop_params_drops_what_the_model_does_not_take():
    request, _ = parse_call(
        image=SQUARE,
        prompt="p",
        model="gpt-image-1-mini",
        input_fidelity="high",
        response_format="url",
        drop_params=True,
    )
    assert request.input_fidelity is None and request.response_format is None
    request, _ = parse_call(
        image=SQUARE, prompt="p", model="dall-e-2", background="opaque", drop_params=True
    )
    assert request.background is None


def test_drop_params_never_drops_a_wrong_value():
    error = refused(model="gpt-image-1", quality="ultra", drop_params=True)
    assert (error.param, error.rule) == ("quality", "enum")


def test_every_broken_rule_is_reported_at_once():
    error = refused(
        model="gpt-image-1",
        size="512x512",
        quality="best",
        response_format="url",
        prompt="x" * 32001,
    )
    assert not isinstance(error, tracking.UnsupportedParamsError)
    assert [(v.param, v.rule) for v in error.violations] == [
        ("prompt", "max_length"),
        ("size", "enum"),
        ("response_format", "unsupported"),
        ("quality", "enum"),
    ]
    assert error.param == "prompt"
    assert str(error) == "; ".join(v.message for v in error.violations)


@pytest.mark.parametrize(
    "model", ["gpt-image-2.5-flare", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare", "gpt-image-1"]
)
def test_the_models_after_and_before_gpt_image_2_take_a_transparent_background(model):
    request, _ = parse_call(
        image=SQUARE, prompt="p", model=model, background="transparent", input_fidelity="high"
    )
    assert (request.background, request.input_fidelity) == ("transparent", "high")


def test_only_unsupported_parameters_give_the_narrower_error():
    error = refused(model="gpt-image-1-mini", input_fidelity="low", response_format="url")
    assert isinstance(error, tracking.UnsupportedParamsError)
    assert {v.param for v in error.violations} == {"input_fidelity", "response_format"}


# -- images for every model --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-2", "some-unknown-model"])
def test_a_png_claiming_huge_dimensions_is_refused_without_decoding(model):
    bomb = png_claiming(100_000, 100_000)
    tracemalloc.start()
    try:
        error = refused(model=model, image=bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (error.param, error.rule) == ("image", "dimensions")
    assert str(error) == (
        "image: the PNG header claims 100000x100000 pixels, more than the 89,478,485 accepted; "
        "refused without decoding it"
    )
    assert peak < 5 * MB  # decoding would need 40 GB


def test_a_huge_mask_is_refused_too():
    error = refused(model="gpt-image-1", mask=png_claiming(20_000, 20_000))
    assert (error.param, error.rule) == ("mask", "dimensions")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "PNG"),
        (b"\xff\xd8\xff" + b"\0" * 20, "JPEG"),
        (b"RIFF\0\0\0\0WEBPVP8Xshort", "WEBP"),
        (make_png(64, 64)[:20], "PNG"),
    ],
)
def test_a_malformed_image_header_is_refused(data, kind):
    error = refused(model="some-unknown-model", image=data)
    assert (error.param, error.rule) == ("image", "malformed")
    assert str(error) == (
        f"image: the file starts like a {kind} but its header is malformed or truncated"
    )


def test_an_oversized_file_is_refused_from_its_size_without_reading_it(tmp_path):
    from tracking.images import MAX_IMAGE_BYTES

    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.write(SQUARE)
        handle.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk and is never read
    tracemalloc.start()
    try:
        error = refused(model="gpt-image-1", image=path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (error.param, error.rule) == ("image", "max_bytes")
    assert str(error) == f"image: {str(path)!r} is larger, more than the 64 MiB any image may be"
    assert peak < 5 * MB


def test_an_open_file_is_read_only_up_to_the_limit():
    from tracking.images import MAX_IMAGE_BYTES

    class Endless(io.RawIOBase):
        """A stream that would never end: only a bounded read() can finish."""

        asked: list[int] = []

        def readable(self):
            return True

        def read(self, size=-1):
            self.asked.append(size)
            assert size is not None and 0 < size <= MAX_IMAGE_BYTES + 1
            return b"\0" * size

    error = refused(model="gpt-image-1", image=Endless())
    assert (error.param, error.rule) == ("image", "max_bytes")
    assert Endless.asked == [MAX_IMAGE_BYTES + 1]


def test_header_inspection_reads_formats_dimensions_and_alpha():
    from tracking.images import read_image

    cases = {
        "png": (make_png(40, 30), 40, 30, True),
        "png-opaque": (make_png(40, 30, alpha=False), 40, 30, False),
        "jpeg": (encoded("JPEG", 40, 30), 40, 30, False),
        "webp": (encoded("WEBP", 40, 30, mode="RGBA"), 40, 30, True),
        "gif": (encoded("GIF", 40, 30), 40, 30, False),
    }
    for name, (data, width, height, alpha) in cases.items():
        image = read_image(data)
        assert (image.width, image.height, image.has_alpha) == (width, height, alpha), name
        assert image.format == name.split("-")[0]


# -- unknown models and the network ------------------------------------------------------------


def test_unknown_models_get_only_the_generic_checks():
    request, _ = parse_call(
        image=[encoded("GIF"), b"not an image at all"],
        mask=encoded("JPEG"),
        prompt="x" * 50000,
        model="my-local-model",
        size="333x777",
        quality="ultra",
        response_format="url",
        input_fidelity="extreme",
    )
    assert request.response_format == "url" and request.size == "333x777"
    assert request.family is None
    # ...but the generic checks still hold:
    assert refused(model="my-local-model", n=11).param == "n"
    assert refused(model="my-local-model", output_compression=101).param == "output_compression"
    assert refused(model="my-local-model", response_format="png").param == "response_format"


def test_validation_happens_before_any_network_call(fake, upstream):
    before = fake.hits
    with pytest.raises(tracking.ValidationError, match="size: gpt-image-1 takes"):
        tracking.image_edit(image=SQUARE, prompt="p", model="gpt-image-1", size="1x1", **upstream)
    with pytest.raises(tracking.ValidationError, match="header claims"):
        tracking.image_edit(
            image=png_claiming(100_000, 100_000), prompt="p", model="gpt-image-1", **upstream
        )
    assert fake.hits == before


def test_a_validation_failure_still_yields_one_failure_event(monkeypatch, upstream):
    events = record_events(monkeypatch)
    with pytest.raises(tracking.ValidationError):
        tracking.image_edit(image=SQUARE, prompt="p", model="dall-e-2", size="9x9", **upstream)
    (event,) = events.events
    assert (event.status, event.error_type, event.http_status, event.attempts) == (
        "failure",
        "validation_error",
        400,
        0,
    )


@pytest.mark.parametrize("model", ["gemini-3-pro-image", "gemini-3.1-flash-image"])
def test_too_many_images_names_the_most_and_the_n_asked(model):
    # until 2026-12-07: "makes 1 to 1 images", and the n asked was not named
    error = refused(model=f"gemini/{model}", n=2)
    assert (error.param, error.rule) == ("n", "range")
    assert str(error) == f"n: {model} makes 1 image per call, got 2"
