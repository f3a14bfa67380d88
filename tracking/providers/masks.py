"""Masks in the conventions other providers use, and the multipart request that carries them.

OpenAI's mask marks the area to edit with fully transparent pixels. FLUX Fill and Stability's
inpainting take a black and white image instead, where white is edited: :func:`white_means_edit`
converts one into the other (alpha 0 becomes white, everything else black). A mask Pillow cannot
decode whole (a truncated file, corrupt pixel data) is a :class:`~tracking.errors.ValidationError`
on ``mask`` before anything is sent.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..images import ImageFile
from ..multipart import encode_multipart
from .base import PreparedRequest

if TYPE_CHECKING:
    from ..request import CallOptions

__all__ = ["bearer_multipart", "mask_part", "white_means_edit"]


def white_means_edit(mask: ImageFile) -> bytes:
    """OpenAI's mask (transparent = edit) as a greyscale PNG where white = edit."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(mask.content)) as image:
            alpha = image.convert("RGBA").getchannel("A")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        raise ValidationError(
            f"mask: {mask.filename!r} could not be decoded as an image (truncated or corrupt: "
            f"{type(exc).__name__})",
            param="mask",
            rule="malformed",
        ) from None
    converted = alpha.point(lambda value: 255 if value == 0 else 0).convert("L")
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
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": content_type,
            "Accept": "application/json",
            **options.extra_headers,
        },
        body=body,
        secrets=(api_key,),
        **prepared,
    )
