"""``tracking demo``: OpenAI's image-edit examples as SDK calls, offline against the bundled fake.

Each example runs as OpenAI's documentation has it, on gpt-image-2 (gpt-image-1 was shut down on
2026-10-23; the fake still serves it for compatibility tests). Where the real API would refuse a
parameter (GPT image models take no ``response_format="url"`` and no 512x512), the demo shows the
clear error the SDK raises and then runs the corrected call.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path
from typing import Any

import tracking

from .testing import FakeOpenAI

__all__ = ["main", "write_images"]


def write_images(folder: Path) -> dict[str, Path]:
    """The demo's input PNGs, written into ``folder``: name -> path (the quickstart uses them)."""
    from PIL import Image, ImageDraw

    paths = {}
    for name, color in (("original_image", (70, 130, 180)), ("portrait", (200, 160, 120))):
        img = Image.new("RGBA", (256, 256), (*color, 255))
        ImageDraw.Draw(img).ellipse((64, 40, 192, 200), fill=(240, 220, 200, 255))
        paths[name] = folder / f"{name}.png"
        img.save(paths[name])
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 255, 100), fill=(0, 0, 0, 0))  # transparent: edit here
    paths["mask_image"] = folder / "mask_image.png"
    mask.save(paths["mask_image"])
    return paths


def _show(title: str, response: tracking.ImageResponse) -> None:
    usage = response.usage
    cost = "unpriced" if response.cost_usd is None else f"${response.cost_usd}"
    print(
        f"  {title}: {response.images_returned} image(s), size={response.size}, "
        f"quality={response.quality}, cost={cost}, request_id={response.request_id}"
    )
    if usage is not None:
        print(
            f"    usage: {usage.input_tokens} input tokens "
            f"({usage.input_text_tokens} text, {usage.input_image_tokens} image), "
            f"{usage.output_tokens} output tokens"
        )
    for i, item in enumerate(response.data, 1):
        shown = item.url or f"<{len(item.b64_json or '')} base64 characters>"
        print(f"    image {i}: {shown}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        paths = write_images(Path(tmp))
        common: dict[str, Any] = {"api_base": fake.url, "api_key": "sk-demo-offline"}
        print(f"Fake OpenAI upstream on {fake.url}\n")

        print("1. Basic image edit")
        with open(paths["original_image"], "rb") as image:
            _show(
                "gpt-image-2",
                tracking.image_edit(
                    model="gpt-image-2",
                    image=image,
                    prompt="Add a red hat to the person in the image",
                    n=1,
                    size="1024x1024",
                    **common,
                ),
            )

        print("\n2. Image edit with mask (asking gpt-image-2 for url output at 512x512)")
        try:
            with open(paths["original_image"], "rb") as image, open(paths["mask_image"], "rb") as m:
                tracking.image_edit(
                    model="gpt-image-2",
                    image=image,
                    mask=m,
                    prompt="Replace the background with a beach scene",
                    n=2,
                    size="512x512",
                    response_format="url",
                    **common,
                )
        except tracking.ValidationError as exc:
            print(f"  refused before any network call: {exc}")
        with open(paths["original_image"], "rb") as image, open(paths["mask_image"], "rb") as m:
            _show(
                "corrected (b64_json, 1024x1024)",
                tracking.image_edit(
                    model="gpt-image-2",
                    image=image,
                    mask=m,
                    prompt="Replace the background with a beach scene",
                    n=2,
                    size="1024x1024",
                    **common,
                ),
            )

        print("\n3. Async image edit")

        async def edit_image() -> tracking.ImageResponse:
            # As the documentation writes it; a blocking open is fine in a demo.
            with open(paths["original_image"], "rb") as image:  # noqa: ASYNC230
                # **common could hold stream=True for all mypy knows: name the plain result
                response: tracking.ImageResponse = await tracking.aimage_edit(
                    model="gpt-image-2",
                    image=image,
                    prompt="Make the image look like a painting",
                    n=1,
                    size="1024x1024",
                    response_format="b64_json",
                    **common,
                )
            return response

        _show("aimage_edit", asyncio.run(edit_image()))

        print("\n4. Image edit with custom parameters, for end user user-123")
        try:
            with open(paths["portrait"], "rb") as image:
                tracking.image_edit(
                    model="gpt-image-2",
                    image=image,
                    prompt="Add sunglasses and a smile",
                    n=3,
                    size="1024x1024",
                    response_format="url",
                    user="user-123",
                    timeout=60,
                    extra_headers={"Custom-Header": "value"},
                    **common,
                )
        except tracking.ValidationError as exc:
            print(f"  refused before any network call: {exc}")
        with open(paths["portrait"], "rb") as image:
            response = tracking.image_edit(
                model="gpt-image-2",
                image=image,
                prompt="Add sunglasses and a smile",
                n=3,
                size="1024x1024",
                user="user-123",
                timeout=60,
                extra_headers={"Custom-Header": "value"},
                **common,
            )
        _show("corrected (no response_format)", response)
        print(f"  Generated {len(response.data)} image variations")

        print(
            "\n5. Compatibility: dall-e-2 (shut down on 2026-05-12) answered with URLs; the"
            " fake still serves it, so the SDK's reading of URL answers stays tested"
        )
        _show(
            "dall-e-2",
            tracking.image_edit(
                model="dall-e-2",
                image=io.BytesIO(paths["original_image"].read_bytes()),
                prompt="Add a beautiful sunset in the background",
                n=2,
                size="512x512",
                response_format="url",
                **common,
            ),
        )
        print(f"\nThe fake upstream received {len(fake.requests)} requests.")
    return 0
