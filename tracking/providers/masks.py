"""Masks in the conventions other providers use, and the multipart request that carries them.

OpenAI's mask marks the area to edit with fully transparent pixels. FLUX Fill and Stability's
inpainting take a black and white image instead, where white is edited: :func:`white_means_edit`
converts one into the other (alpha 0 becomes white, everything else black). A mask Pillow cannot
decode whole (a truncated file, corrupt pixel data), or one of more than :data:`MAX_MASK_PIXELS`
pixels (refused from its header, undecoded), is a :class:`~tracking.errors.ValidationError` on
``mask`` before anything is sent.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..images import ImageFile
from ..multipart import encode_multipart
from .base import PreparedRequest, request_headers

if TYPE_CHECKING:
    from ..request import CallOptions

__all__ = ["MAX_MASK_PIXELS", "bearer_multipart", "mask_part", "white_means_edit"]


#: The most pixels a mask converted here may have: 20 Mi pixels (20,971,520: a 4579x4579 square),
#: at or above the largest input image the providers that take such a mask document (FLUX:
#: 20 megapixels; Recraft: 16 MP, no side above 4096; Stability: 9,437,184 pixels). It is read
#: from the header and a larger mask is refused before it is decoded: its pixels, not its upload
#: size, are what decoding costs (a 300 KB PNG can hold 9000x9000 pixels, 324 MB as RGBA).
MAX_MASK_PIXELS = 20 * 1024 * 1024
#: The formats a mask is read in (those :mod:`tracking.images` recognises): no other Pillow
#: plugin ever parses a caller's bytes.
_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
#: alpha 0 (to edit) becomes white, any other alpha black
_WHITE_WHERE_TRANSPARENT = [255] + [0] * 255


def white_means_edit(mask: ImageFile) -> bytes:
    """OpenAI's mask (transparent = edit) as a greyscale PNG where white = edit.

    A mask of more than :data:`MAX_MASK_PIXELS` pixels is refused from its header, undecoded;
    one that cannot be decoded whole (a truncated file, corrupt pixel data, not a PNG, JPEG,
    WebP or GIF) is refused too: both are a :class:`~tracking.errors.ValidationError` on
    ``mask``, raised before anything is sent. Only the alpha band is kept once decoded.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(mask.content), formats=_FORMATS) as image:
            width, height = image.size  # from the header: no pixel is decoded yet
            if width * height > MAX_MASK_PIXELS:
                raise ValidationError(
                    f"mask: {width}x{height} pixels, more than the {MAX_MASK_PIXELS:,} a mask "
                    "may have; refused without decoding it",
                    param="mask",
                    rule="dimensions",
                )
            if "A" in image.getbands():  # RGBA, LA, PA: the alpha band alone, no RGBA copy
                alpha = image.getchannel("A")
            elif image.mode == "P" or "transparency" in image.info:
                # a palette or a colour key may still mark transparent pixels
                alpha = image.convert("RGBA").getchannel("A")
            else:  # no transparency at all (a JPEG, an opaque PNG): decoded to check it only
                image.load()
                alpha = Image.new("L", image.size, 255)
    except ValidationError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        raise ValidationError(
            f"mask: {mask.filename!r} could not be decoded as a PNG, JPEG, WebP or GIF image "
            f"(truncated, corrupt or another format: {type(exc).__name__})",
            param="mask",
            rule="malformed",
        ) from None
    converted = alpha.point(_WHITE_WHERE_TRANSPARENT)
    del alpha
    out = io.BytesIO()
    converted.save(out, format="PNG")
    return out.getvalue()


def mask_part(mask: ImageFile) -> tuple[str, ImageFile]:
    """The ``mask`` multipart file in the white-means-edit convention."""
    return ("mask", ImageFile("mask.png", white_means_edit(mask), "image/png", "png"))


def bearer_multipart(
    url: str,
    api_key: str,
    fields: list[tuple[str, str]],
    files: list[tuple[str, ImageFile]],
    options: CallOptions,
    **prepared: Any,
) -> PreparedRequest:
    """A multipart POST with a bearer key that asks for JSON (Stability, Recraft)."""
    body, content_type = encode_multipart(fields, files)
    return PreparedRequest(
        url=url,
        headers=request_headers(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
            options.extra_headers,
        ),
        body=body,
        secrets=(api_key,),
        **prepared,
    )
