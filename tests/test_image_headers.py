"""The hand-written PNG/JPEG header parsers report what Pillow reports, and refuse what it
refuses, for every mode Pillow writes and for damaged headers."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image

from tracking.image_headers import jpeg_header, png_header

#: What Pillow raises for a header it cannot read.
PILLOW_REFUSALS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def pillow_view(data: bytes) -> tuple[int, int, bool]:
    with Image.open(io.BytesIO(data)) as image:
        alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        return image.size[0], image.size[1], alpha


def png(mode: str, size: tuple[int, int] = (37, 23), **save: object) -> bytes:
    image = Image.new(mode, size)
    out = io.BytesIO()
    image.save(out, format="PNG", **save)
    return out.getvalue()


def jpeg(mode: str, size: tuple[int, int] = (37, 23), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="JPEG", **save)
    return out.getvalue()


PNGS = {
    "1": png("1"),
    "L": png("L"),
    "LA": png("LA"),
    "I;16": png("I;16"),
    "P": png("P"),
    "P+transparency": png("P", transparency=0),
    "L+transparency": png("L", transparency=7),
    "RGB": png("RGB"),
    "RGB+transparency": png("RGB", transparency=(1, 2, 3)),
    "RGBA": png("RGBA"),
    "RGBA+text": png("RGBA", pnginfo=None, dpi=(72, 72)),
    "wide": png("RGB", (4000, 3)),
}

JPEGS = {
    "L": jpeg("L"),
    "RGB": jpeg("RGB"),
    "CMYK": jpeg("CMYK"),
    "progressive": jpeg("RGB", progressive=True),
    "exif+icc": jpeg("RGB", exif=b"Exif\0\0" + b"\0" * 40, icc_profile=b"\0" * 300),
    "tall": jpeg("RGB", (3, 4000)),
}


@pytest.mark.parametrize("name", sorted(PNGS))
def test_png_headers_match_pillow(name: str) -> None:
    data = PNGS[name]
    header = png_header(data)
    assert header is not None
    assert (header.width, header.height, header.has_alpha) == pillow_view(data)
    assert header.format == "png"


@pytest.mark.parametrize("name", sorted(JPEGS))
def test_jpeg_headers_match_pillow(name: str) -> None:
    data = JPEGS[name]
    header = jpeg_header(data)
    assert header is not None
    assert (header.width, header.height, header.has_alpha) == pillow_view(data)
    assert header.format == "jpeg"


def _with_chunk_before_idat(data: bytes, kind: bytes, body: bytes) -> bytes:
    chunk = struct.pack(">I", len(body)) + kind + body
    chunk += struct.pack(">I", zlib.crc32(kind + body))
    return data[:33] + chunk + data[33:]


def test_a_trns_chunk_anywhere_before_the_image_data_means_alpha() -> None:
    opaque = PNGS["RGB"]
    assert png_header(opaque).has_alpha is False  # type: ignore[union-attr]
    padded = _with_chunk_before_idat(opaque, b"tEXt", b"Comment\0hello")
    with_trns = _with_chunk_before_idat(padded, b"tRNS", b"\0\1\0\2\0\3")
    assert png_header(with_trns).has_alpha is True  # type: ignore[union-attr]
    assert pillow_view(with_trns)[2] is True


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:20],  # cut inside IHDR
        lambda d: d[:33],  # IHDR only: no image data
        lambda d: d[:8] + b"\x00\x00\x00\x0dIHDX" + d[16:],  # not IHDR first
        lambda d: d[:29] + bytes([d[29] ^ 1]) + d[30:],  # IHDR checksum wrong
        lambda d: d[:24] + b"\x03\x02" + d[26:],  # depth 3: no such PNG
    ],
)
def test_damaged_png_headers_are_refused_like_pillow_refuses_them(
    damage: Callable[[bytes], bytes],
) -> None:
    data = damage(PNGS["RGBA"])
    assert png_header(data) is None
    with pytest.raises(PILLOW_REFUSALS):
        pillow_view(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff" + b"\0" * 20,  # no marker after SOI
        b"\xff\xd8\xff\xd9",  # the end before any frame
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # cut inside APP0
        JPEGS["RGB"][: JPEGS["RGB"].index(b"\xff\xc0") + 5],  # cut inside the frame header
    ],
)
def test_damaged_jpeg_headers_are_refused(data: bytes) -> None:
    assert jpeg_header(data) is None
    with pytest.raises(PILLOW_REFUSALS):
        pillow_view(data)
