"""Property-based tests of the request parser: whatever a caller passes, ``parse_call`` either
accepts it or raises a typed ``ValidationError`` naming a parameter; never another exception,
and a hostile image (a PNG "bomb", truncated or mislabelled bytes) is refused from its header
without being decoded. Also the SDK entry point end to end: bad input never reaches the upstream.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracking
from tracking.errors import TrackingError, ValidationError
from tracking.providers import prepare_call
from tracking.request import parse_call

from .conftest import make_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG whose header claims ``width`` x ``height`` pixels, in under a kilobyte:
    the IDAT holds a few compressed rows only (a decoder would allocate for all of them)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    rows = zlib.compress(b"\x00" * (width * 4 + 1) * 2, 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


SMALL_PNG = make_png(32, 32)
OTHER_SIZE_PNG = make_png(48, 16)

#: Image arguments a caller (or an attacker through the proxy) may hand over.
hostile_images = st.one_of(
    st.just(SMALL_PNG),
    st.just(png_bomb()),
    st.just(png_bomb(1, 2**31 - 1)),
    st.binary(max_size=64),  # random bytes, sometimes empty
    st.binary(max_size=64).map(lambda tail: PNG_SIGNATURE + tail),  # a PNG signature, no header
    st.integers(1, len(SMALL_PNG) - 1).map(lambda cut: SMALL_PNG[:cut]),  # truncated
    st.just(b"\xff\xd8\xff" + b"\x00" * 20),  # a JPEG signature over nothing
    st.just(b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\xff" * 24),  # a WebP claiming 16M x 16M
    st.tuples(st.text(max_size=20), st.binary(max_size=32)),  # (filename, bytes) as openai takes
    st.tuples(st.none(), st.just(SMALL_PNG), st.text(max_size=20)),
    # a file name or content type with NULs, line breaks, lone surrogates, or not text at all
    st.tuples(
        st.one_of(
            st.text(st.characters(exclude_categories=()), max_size=12), st.binary(max_size=4)
        ),
        st.just(SMALL_PNG),
        st.one_of(st.none(), st.text(st.characters(exclude_categories=()), max_size=12)),
    ),
    st.integers(),
    st.none(),
    st.lists(st.just(SMALL_PNG), max_size=20),  # too many images for most models
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30).map(lambda s: f"/nonexistent/{s}"),
)

#: Text with unicode, control characters, NULs and line breaks.
nasty_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
any_scalar = st.one_of(
    st.none(),
    nasty_text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=8),
)
models = st.one_of(
    st.sampled_from(["gpt-image-1", "gpt-image-1-mini", "dall-e-2", "azure/deploy", "some-model"]),
    nasty_text,
    st.none(),
)


@given(
    image=hostile_images,
    mask=st.one_of(st.none(), st.just(OTHER_SIZE_PNG), st.just(png_bomb()), st.binary(max_size=16)),
    model=models,
    prompt=st.one_of(st.just("add a hat"), nasty_text, st.none(), st.integers()),
    n=any_scalar,
    size=any_scalar,
    quality=any_scalar,
    user=any_scalar,
    output_compression=any_scalar,
    timeout=any_scalar,
    max_retries=any_scalar,
    extra_headers=st.one_of(st.none(), st.dictionaries(nasty_text, nasty_text, max_size=3)),
    extra_body=st.one_of(
        st.none(),
        st.dictionaries(
            st.text(st.characters(exclude_categories=()), max_size=6),
            st.one_of(st.text(st.characters(exclude_categories=()), max_size=6), st.integers()),
            max_size=2,
        ),
    ),
)
def test_any_arguments_are_accepted_or_a_typed_validation_error(
    image: Any,
    mask: Any,
    model: Any,
    prompt: Any,
    n: Any,
    size: Any,
    quality: Any,
    user: Any,
    output_compression: Any,
    timeout: Any,
    max_retries: Any,
    extra_headers: Any,
    extra_body: Any,
) -> None:
    """Every combination ends in a request or a ValidationError whose message names a parameter,
    and an accepted one encodes into a body whose part headers hold no control character."""
    refused: ValidationError | None = None
    try:
        request, options = parse_call(
            image=image,
            mask=mask,
            model=model,
            prompt=prompt,
            n=n,
            size=size,
            quality=quality,
            user=user,
            output_compression=output_compression,
            timeout=timeout,
            max_retries=max_retries,
            extra_headers=extra_headers,
            extra_body=extra_body,
        )
    except ValidationError as exc:
        refused = exc
    if refused is not None:
        assert refused.message and refused.param, refused
        return
    # Accepted: what was accepted is sane, whatever came in.
    assert request.images and all(len(i.content) > 0 for i in request.images)
    assert request.n is None or 1 <= request.n <= 10
    assert options.timeout > 0 and options.timeout == options.timeout  # positive, not NaN
    for image_file in (*request.images, *((request.mask,) if request.mask else ())):
        if image_file.width is not None:
            assert image_file.width * (image_file.height or 0) <= 89_478_485
    broken: TrackingError | None = None
    try:
        _, prepared = prepare_call(request, options)
    except TrackingError as exc:  # a rule of the model (a size it does not take...): typed too
        broken = exc
    if broken is None:
        _assert_clean_part_headers(prepared.body, prepared.headers["Content-Type"])
    else:
        assert broken.message


def _assert_clean_part_headers(body: bytes, content_type: str) -> None:
    """Every part's header lines are free of control characters (a NUL or a line break in a
    name would break the part, or make the upstream refuse the whole request)."""
    boundary = content_type.partition("boundary=")[2].encode()
    parts = body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    for part in parts[1:-1]:
        headers, separator, _ = part[2:].partition(b"\r\n\r\n")
        assert separator
        for line in headers.split(b"\r\n"):
            assert not any(byte < 0x20 or byte == 0x7F for byte in line), line


@given(n=st.integers(min_value=-(2**200), max_value=2**200))
def test_n_outside_its_range_is_refused_naming_n(n: int) -> None:
    if 1 <= n <= 10:
        request, _ = parse_call(image=SMALL_PNG, prompt="p", model="gpt-image-1", n=n)
        assert request.n == n
    else:
        with pytest.raises(ValidationError) as caught:
            parse_call(image=SMALL_PNG, prompt="p", model="gpt-image-1", n=n)
        assert caught.value.param == "n"


@pytest.mark.parametrize(
    ("width", "height"), [(100_000, 100_000), (2**31 - 1, 2**31 - 1), (1, 100_000_000)]
)
def test_a_png_bomb_is_refused_from_its_header_with_bounded_memory(width: int, height: int) -> None:
    bomb = png_bomb(width, height) if width * 4 < 10**6 else _bomb_header_only(width, height)
    assert len(bomb) < 50_000
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ValidationError) as caught:
            parse_call(image=bomb, prompt="p", model="gpt-image-1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.param == "image" and caught.value.rule == "dimensions"
    assert peak < 5 * 1024 * 1024, f"{peak:,} bytes allocated to refuse a bomb"
    assert time.monotonic() - started < 5


def _bomb_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_bad_input_through_the_sdk_never_reaches_the_upstream(fake, upstream) -> None:
    """The public entry points raise the typed error before any HTTP exchange."""
    before = fake.hits
    for image in (png_bomb(), b"not an image at all", SMALL_PNG[:30]):
        with pytest.raises(TrackingError):
            tracking.image_edit(model="gpt-image-1", image=image, prompt="p", **upstream)
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(model="gpt-image-1", image=SMALL_PNG, prompt="p", n=-1, **upstream)
    assert caught.value.param == "n"
    assert fake.hits == before


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e300, -1.0, 0])
def test_a_non_finite_or_absurd_timeout_is_a_validation_error(fake, upstream, timeout) -> None:
    """Found by the fuzz test: NaN and huge timeouts used to escape as ValueError/OverflowError."""
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(
            model="gpt-image-1", image=SMALL_PNG, prompt="p", timeout=timeout, **upstream
        )
    assert caught.value.param == "timeout"


def test_an_image_of_no_pixels_is_refused_for_what_it_is() -> None:
    # It was refused with "claims 0x0 pixels, more than the 89,478,485 accepted".
    with pytest.raises(ValidationError) as caught:
        parse_call(image=png_bomb(0, 0), prompt="p", model="gpt-image-2")
    assert caught.value.rule == "dimensions" and "0x0" in caught.value.message
    assert "more than" not in caught.value.message
