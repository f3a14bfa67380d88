"""Masks in the conventions other providers use.

OpenAI's mask marks the area to edit with fully transparent pixels. FLUX Fill and Stability's
inpainting take a black and white image instead, where white is edited: :func:`white_means_edit`
converts one into the other (alpha 0 becomes white, everything else black).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..images import ImageFile

__all__ = ["white_means_edit"]


def white_means_edit(mask: ImageFile) -> bytes:
    """OpenAI's mask (transparent = edit) as a greyscale PNG where white = edit."""
    from PIL import Image

    with Image.open(io.BytesIO(mask.content)) as image:
        alpha = image.convert("RGBA").getchannel("A")
    converted = alpha.point(lambda value: 255 if value == 0 else 0).convert("L")
    out = io.BytesIO()
    converted.save(out, format="PNG")
    return out.getvalue()
