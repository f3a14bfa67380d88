"""What a type checker sees for a router's calls: with ``stream=True`` a stream of events, else
the response, as for the module-level ``tracking.image_edit`` / ``aimage_edit``.

The router's methods were annotated with the response alone, so ``for event in
router.image_edit(..., stream=True)`` was a type error in the user's code (an ImageResponse is
not iterable) and the stream's methods were unknown to their editor.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import mypy.api

SNIPPET = """\
import tracking

async def main(router: tracking.Router) -> None:
    reveal_type(router.image_edit(image=b"", prompt="p", model="m", stream=True))
    reveal_type(router.image_edit(image=b"", prompt="p", model="m"))
    reveal_type(await router.aimage_edit(image=b"", prompt="p", model="m", stream=True))
    reveal_type(await router.aimage_edit(image=b"", prompt="p", model="m"))
    reveal_type(router.image_generation(prompt="p", model="m", stream=True))
    reveal_type(await router.aimage_generation(prompt="p", model="m", stream=True))
    reveal_type(await router.aimage_generation(prompt="p", model="m"))
    router.image_edit(image=b"", prompt="p", model="m", no_such_param=1)
"""


def test_router_calls_are_typed_as_streams_with_stream_true(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET))
    out, err, _ = mypy.api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(snippet)]
    )
    revealed = re.findall(r'Revealed type is "([^"]+)"', out)
    assert revealed == [
        "tracking.streaming.ImageEditStream",
        "tracking.response.ImageResponse",
        "tracking.streaming.AsyncImageEditStream",
        "tracking.response.ImageResponse",
        "tracking.streaming.ImageEditStream",
        "tracking.streaming.AsyncImageEditStream",
        "tracking.response.ImageResponse",
    ], out + err
    # The parameters are still checked: one that does not exist is an error.
    (error,) = [line for line in out.splitlines() if ": error:" in line]
    assert "snippet.py:11: error:" in error, out
