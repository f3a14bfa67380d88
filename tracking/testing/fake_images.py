"""The fake upstream's image work: reading an upload's header, and drawing the "edited" result.

The result is a real image that visibly reflects the call: a small preview (longest side
``PREVIEW_SIDE``) of the first input image, cropped to the requested size's aspect, tinted with
a colour derived from the prompt. With a mask only the region the mask marks for editing (its
fully transparent pixels) is tinted; without one the whole picture is. The output is encoded in
the requested ``output_format``; when the background is transparent the input's clear pixels
stay clear in every format that has an alpha channel (png, webp, gif: each frame).
A ``gif`` is an animation of ``frames`` frames of ``frame_ms`` each, the tint growing frame by
frame; an ``svg`` is a small SVG document of the requested size filled with the prompt's colour
(what the 2.6 models answer for those formats: base64 of a GIF or of SVG markup).

Headers are read without Pillow's decompression-bomb check, and sizes are checked here before
anything is decoded, so a hostile upload cannot make the fake allocate gigabytes either.
"""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Any

__all__ = ["PREVIEW_SIDE", "inspect", "prompt_color", "render", "solid_png"]

PREVIEW_SIDE = 64
#: the most pixels the fake will decode (the SDK refuses larger images before sending them)
MAX_DECODED_PIXELS = 40_000_000
#: The longest frame a GIF can say (65,535 hundredths of a second), in ms.
GIF_MAX_FRAME_MS = 655_350


def _open(data: bytes) -> Any:
    """A lazily-decoded Pillow image from the bytes, or None if no known format matches."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept is not None else False
        if verdict and not isinstance(verdict, str):  # a str verdict means "known, unsupported"
            # The plugin factory parses the header only and skips Image.open's bomb warning.
            return factory(io.BytesIO(data), "")
    return None


def inspect(data: bytes) -> tuple[str, int, int, bool] | None:
    """``(format, width, height, has_alpha)`` from the header, or None if not an image."""
    try:
        image = _open(data)
    except Exception:  # any parser failure means "not a valid image" to the fake
        return None
    if image is None:
        return None
    with image:
        alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
        return str(image.format).lower(), image.width, image.height, bool(alpha)


def prompt_color(prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def _preview_size(width: int, height: int) -> tuple[int, int]:
    if width >= height:
        return PREVIEW_SIDE, max(1, PREVIEW_SIDE * height // width)
    return max(1, PREVIEW_SIDE * width // height), PREVIEW_SIDE


def _decoded(data: bytes | None, size: tuple[int, int]) -> Any:
    from PIL import ImageOps

    if data is None:
        return None
    try:
        image = _open(data)
        if image is None or image.width * image.height > MAX_DECODED_PIXELS:
            return None
        with image:
            image.draft("RGB", size)  # JPEG decodes at a fraction of its size: cheaper
            return ImageOps.fit(image.convert("RGBA"), size)
    except Exception:  # an undecodable upload is drawn as a grey canvas instead
        return None


@functools.lru_cache(maxsize=64)  # identical calls (tests, benchmarks) draw once
def render(
    *,
    image: bytes | None,
    mask: bytes | None,
    size: tuple[int, int],
    prompt: str,
    output_format: str = "png",
    transparent: bool = False,
    compression: int | None = None,
    frames: int = 9,
    frame_ms: int = 200,
) -> bytes:
    """The edited preview, encoded as ``output_format`` (png, jpeg, webp, gif or svg)."""
    from PIL import Image

    if output_format == "svg":
        red, green, blue = prompt_color(prompt)
        fill = "none" if transparent else f"#{red:02x}{green:02x}{blue:02x}"
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{size[0]}" height="{size[1]}" '
            f'viewBox="0 0 {size[0]} {size[1]}"><rect width="100%" height="100%" '
            f'fill="{fill}"/></svg>'
        ).encode()

    box = _preview_size(*size)
    base = _decoded(image, box)
    if base is None:
        base = Image.new("RGBA", box, (128, 128, 128, 255))
    tint = Image.new("RGBA", box, (*prompt_color(prompt), 255))
    edited = Image.blend(base, tint, 0.65)
    mask_image = _decoded(mask, box)
    if mask_image is not None:
        # Fully transparent mask pixels mark the region to edit.
        region = mask_image.getchannel("A").point([255] + [0] * 255)
        edited = Image.composite(edited, base, region)
    if not transparent or output_format == "jpeg":
        canvas = Image.new("RGBA", box, (255, 255, 255, 255))
        canvas.alpha_composite(edited)
        edited = canvas.convert("RGB")
    else:  # the input's clear pixels stay clear (the tint's blend made them 65% opaque)
        edited.putalpha(base.getchannel("A"))
    out = io.BytesIO()
    options: dict[str, Any] = {}
    if compression is not None and output_format in ("jpeg", "webp"):
        options["quality"] = max(1, 100 - compression)
    if output_format == "gif":
        # RGBA when transparent: Pillow gives each frame's clear pixels the GIF's transparent index
        mode = "RGBA" if transparent else "RGB"
        still = edited.convert(mode)
        ink = Image.new(mode, box, prompt_color(prompt))
        if transparent:
            ink.putalpha(still.getchannel("A"))
        steps = [Image.blend(still, ink, i / max(1, frames)) for i in range(1, frames)]
        # a GIF holds each frame's delay in 16 bits of hundredths of a second: a longer
        # frame_duration_ms (no rule bounds it) is held at the longest a GIF can say
        delay = min(frame_ms, GIF_MAX_FRAME_MS)
        options.update(save_all=True, append_images=steps, duration=delay, loop=0)
        edited = still
    edited.save(out, format=output_format.upper(), **options)
    return out.getvalue()


def solid_png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()
