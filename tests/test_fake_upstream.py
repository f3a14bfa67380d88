"""The fake upstream is faithful: real images that show the edit, and its own OpenAI-like checks."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import localhost_at_both_command, tracking_command
from tracking.testing.fake_images import prompt_color

ORIGINAL = (200, 30, 30)  # make_png's colour


def half_mask(width: int = 64, height: int = 64) -> bytes:
    """Transparent (edit here) in the top half, opaque (keep) in the bottom half."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width, height // 2))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def decoded(response: tracking.ImageResponse, index: int = 0) -> Image.Image:
    data = response.data[index].b64_json
    assert data is not None
    return Image.open(io.BytesIO(base64.b64decode(data)))


def tinted(prompt: str) -> tuple[int, int, int]:
    tint = prompt_color(prompt)
    return tuple(round(o + (t - o) * 0.65) for o, t in zip(ORIGINAL, tint, strict=True))


def close(pixel, expected, slack: int = 3) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], expected, strict=True))


def test_the_masked_region_is_tinted_and_the_rest_kept(upstream):
    prompt = "paint the sky teal"
    response = tracking.image_edit(
        image=make_png(64, 64), mask=half_mask(), prompt=prompt, model="gpt-image-1", **upstream
    )
    picture = decoded(response).convert("RGB")
    assert picture.size == (64, 64)
    assert close(picture.getpixel((32, 5)), tinted(prompt))  # top: edited
    assert close(picture.getpixel((32, 60)), ORIGINAL)  # bottom: kept


def test_without_a_mask_the_whole_image_is_edited(upstream):
    prompt = "make it all blue"
    picture = decoded(
        tracking.image_edit(image=make_png(), prompt=prompt, model="gpt-image-1", **upstream)
    ).convert("RGB")
    assert close(picture.getpixel((5, 5)), tinted(prompt))
    assert close(picture.getpixel((60, 60)), tinted(prompt))


def test_the_picture_has_the_requested_aspect_and_format(upstream):
    response = tracking.image_edit(
        image=make_png(),
        prompt="p",
        model="gpt-image-1",
        size="1536x1024",
        output_format="jpeg",
        output_compression=50,
        **upstream,
    )
    picture = decoded(response)
    assert (picture.format, picture.size) == ("JPEG", (64, 42))
    webp = decoded(
        tracking.image_edit(
            image=make_png(), prompt="p", model="gpt-image-1", output_format="webp", **upstream
        )
    )
    assert webp.format == "WEBP"


def test_a_transparent_background_keeps_the_alpha_channel(upstream):
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = io.BytesIO()
    clear.save(out, format="PNG")
    transparent = out.getvalue()
    picture = decoded(
        tracking.image_edit(
            image=transparent, prompt="p", model="gpt-image-1", background="transparent", **upstream
        )
    )
    assert picture.mode == "RGBA"
    assert picture.getpixel((10, 10))[3] < 255
    opaque = decoded(
        tracking.image_edit(image=transparent, prompt="p", model="gpt-image-1", **upstream)
    )
    assert opaque.mode == "RGB"


@pytest.mark.parametrize("output_format", ["png", "webp", "gif"])
def test_a_transparent_background_keeps_the_input_s_clear_pixels_clear(upstream, output_format):
    # The edit's tint was blended over them, alpha and all (65% opaque), and a GIF lost its
    # transparency altogether: a test of how an app shows a transparent answer saw none.
    picture = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    picture.paste((200, 30, 30, 255), (16, 16, 48, 48))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    answer = decoded(
        tracking.image_edit(
            image=out.getvalue(),
            prompt="p",
            model="gpt-image-2.6-flare",
            background="transparent",
            output_format=output_format,
            **upstream,
        )
    ).convert("RGBA")
    width, height = answer.size
    assert answer.getpixel((1, 1))[3] == 0  # a corner: clear in the input
    assert answer.getpixel((width // 2, height // 2))[3] == 255  # the middle: opaque


def test_dall_e_2_urls_serve_the_edited_picture(upstream):
    prompt = "a sunset"
    response = tracking.image_edit(
        image=make_png(64, 64),
        mask=half_mask(),
        prompt=prompt,
        model="dall-e-2",
        size="256x256",
        response_format="url",
        **upstream,
    )
    url = response.data[0].url
    assert url is not None
    picture = Image.open(io.BytesIO(httpx.get(url).content)).convert("RGB")
    assert close(picture.getpixel((32, 5)), tinted(prompt))
    assert close(picture.getpixel((32, 60)), ORIGINAL)


# -- the fake's own checks, reached directly (the SDK would refuse these first) ---------------


def post(fake, fields, files):
    return httpx.post(
        f"{fake.url}/images/edits",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data=fields,
        files=files,
    )


PNG_FILE = ("image", ("i.png", make_png(64, 64), "image/png"))


@pytest.mark.parametrize(
    ("fields", "files", "status", "param", "code"),
    [
        ({"model": "gpt-image-1", "prompt": "p", "response_format": "url"}, [PNG_FILE], 400,
         "response_format", "unknown_parameter"),
        ({"model": "gpt-image-1", "prompt": "p", "size": "512x512"}, [PNG_FILE], 400, "size",
         "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "p", "size": "1000x1000"}, [PNG_FILE], 400, "size",
         "invalid_value"),
        ({"model": "gpt-image-1-mini", "prompt": "p", "input_fidelity": "high"}, [PNG_FILE], 400,
         "input_fidelity", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "p", "input_fidelity": "high"}, [PNG_FILE], 400,
         "input_fidelity", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "p", "background": "transparent"}, [PNG_FILE], 400,
         "background", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "p", "output_compression": "50"}, [PNG_FILE], 400,
         "output_compression", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "p", "background": "transparent",
          "output_format": "jpeg"}, [PNG_FILE], 400, "background", "invalid_value"),
        ({"model": "dall-e-2", "prompt": "p"},
         [("image", ("i.png", make_png(96, 64), "image/png"))], 400, "image", "invalid_image"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, [PNG_FILE], 400, "prompt", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "p"},
         [PNG_FILE, ("mask", ("m.png", make_png(32, 32), "image/png"))], 400, "mask",
         "invalid_image"),
        ({"model": "gpt-image-1", "prompt": "p"},
         [PNG_FILE, ("mask", ("m.png", make_png(64, 64, alpha=False), "image/png"))], 400,
         "mask", "invalid_image"),
        ({"model": "gpt-image-1", "prompt": "p"},
         [("image", ("i.gif", b"GIF89a" + b"\0" * 30, "image/gif"))], 400, "image",
         "invalid_image_format"),
        ({"model": "gpt-image-1"}, [PNG_FILE], 400, "prompt", "missing_required"),
        ({"model": "gpt-image-9", "prompt": "p"}, [PNG_FILE], 404, "model", "model_not_found"),
    ],
)  # fmt: skip
def test_the_fake_refuses_what_openai_refuses(fake, fields, files, status, param, code):
    answer = post(fake, fields, files)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]


def test_the_fake_does_not_share_the_sdks_rules():
    code = (
        "import sys, tracking.testing; "
        "print(sorted(m for m in ('tracking.families', 'tracking.rules', 'tracking.request') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@contextlib.contextmanager
def _fake_openai(tracking: list[str], *args: str) -> Iterator[str]:
    """``tracking fake-openai ARGS`` (``tracking`` the command run) until its "Running on" line,
    which is yielded; the fake is stopped at the end."""
    process = subprocess.Popen(
        [*tracking, "fake-openai", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    said = ""
    try:
        for said in process.stdout:
            if "Running on" in said:
                break
        yield said
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def test_fake_openai_on_port_0_names_the_port_it_serves():
    """``tracking fake-openai`` binds its socket once, itself, and aiohttp serves on it (it
    bound the port again after the command's own check): with ``--port 0`` the line names the
    port the system chose, and the fake answers there."""
    with _fake_openai(tracking_command(), "--host", "127.0.0.1", "--port", "0") as said:
        found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", said)
        assert found is not None and int(found[1]) != 0, said
        assert httpx.get(f"http://127.0.0.1:{found[1]}/health", timeout=30).status_code == 200


def test_fake_openai_serves_a_host_name_at_every_address_on_one_port():
    """``tracking fake-openai --host localhost`` was bound at its first IPv4 address alone:
    each address the name resolves to is bound now (one aiohttp site each), and ``--port 0``
    gives them one port."""
    with _fake_openai(localhost_at_both_command(), "--host", "localhost", "--port", "0") as said:
        ports = re.findall(r"http://(?:\[::1\]|127\.0\.0\.1):(\d+)", said)
        assert len(ports) == 2 and len(set(ports)) == 1 and ports[0] != "0", said
        for host in ("127.0.0.1", "[::1]"):
            assert httpx.get(f"http://{host}:{ports[0]}/health", timeout=30).status_code == 200
