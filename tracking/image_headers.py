"""Size and alpha of PNG, JPEG and WebP images, read from their first bytes without any decoder.

These are the formats image-edit calls carry, and every proxied request has its image inspected,
so the parsing is done here in a few slicing steps instead of by Pillow (whose plugin objects
cost more than the rest of the check). Each parser returns ``None`` for a header it cannot read
(truncated, a bad checksum, an impossible combination); the caller refuses those as malformed.
The PNG and JPEG parsers report what Pillow reports for the same bytes
(``tests/test_image_headers.py`` compares them on every mode Pillow writes).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .frozen import fast_init

__all__ = ["Header", "jpeg_header", "png_header", "webp_header"]


@fast_init
@dataclass(frozen=True, slots=True)
class Header:
    format: str
    width: int
    height: int
    has_alpha: bool


#: The bit depths PNG allows for each colour type (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def png_header(data: bytes) -> Header | None:
    """IHDR's size and colour type; alpha from the colour type or a ``tRNS`` chunk before the
    image data (as Pillow, which reports such an image's ``transparency``)."""
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    if int.from_bytes(data[29:33], "big") != zlib.crc32(data[12:29]):
        return None
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    if depth not in _PNG_DEPTHS.get(colour, ()):
        return None
    alpha = colour in (4, 6)
    position = 33
    while True:  # the chunks before the first IDAT: PNG puts tRNS (and PLTE) there
        if position + 8 > len(data):
            return None  # no image data at all: truncated
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            return Header("png", width, height, alpha)
        if kind == b"tRNS":
            alpha = True
        elif kind == b"IEND":
            return None
        position += 12 + int.from_bytes(data[position : position + 4], "big")


#: Start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT, JPG or DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers that stand alone, without a length: TEM, RST0-7 and SOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def jpeg_header(data: bytes) -> Header | None:
    """The frame size from the first start-of-frame segment (JPEG has no alpha channel)."""
    position = 2
    end = len(data)
    while position < end:
        if data[position] != 0xFF:
            return None
        while position < end and data[position] == 0xFF:  # fill bytes
            position += 1
        if position + 2 >= end:
            return None
        marker = data[position]
        if marker in _STANDALONE:
            position += 1
            continue
        if marker in (0xD9, 0xDA):  # the end, or the scan, before any frame header
            return None
        length = int.from_bytes(data[position + 1 : position + 3], "big")
        if marker in _SOF:
            if length < 8 or position + 9 > end or data[position + 8] not in (1, 3, 4):
                return None  # Pillow reads 1 (L), 3 (RGB/YCbCr) or 4 (CMYK) components only
            height = int.from_bytes(data[position + 4 : position + 6], "big")
            width = int.from_bytes(data[position + 6 : position + 8], "big")
            return Header("jpeg", width, height, False)
        if length < 2:
            return None
        position += 1 + length
    return None


def webp_header(data: bytes) -> Header | None:
    """Canvas size and alpha from a WebP's first chunk (lossy ``VP8 ``, lossless, extended)."""
    chunk, body = data[12:16], data[20:40]
    if chunk == b"VP8X" and len(body) >= 10:
        width = 1 + int.from_bytes(body[4:7], "little")
        height = 1 + int.from_bytes(body[7:10], "little")
        return Header("webp", width, height, bool(body[0] & 0x10))
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return Header("webp", width, height, bool((bits >> 28) & 1))
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width = int.from_bytes(body[6:8], "little") & 0x3FFF
        height = int.from_bytes(body[8:10], "little") & 0x3FFF
        return Header("webp", width, height, False)
    return None
