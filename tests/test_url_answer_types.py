"""A URL answer's ``content-type`` is the stored image's own, not the answer's ``output_format``.

An answer may name no ``output_format`` (answers of older models, OpenAI-compatible servers) or
one format for images of several (a Gemini answer takes its first image's). The proxy stored
every image under the extension ``output_format`` named, ``png`` when it named none, so a JPEG
image was served as ``image/png``. The stored name now follows the image's bytes.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tracking.ids import new_request_id
from tracking.proxy.image_store import LocalImageStore, parse_store_settings
from tracking.proxy.url_answers import serve_stored, to_url_answer


def _encoded(kind: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=kind)
    return base64.b64encode(buffer.getvalue()).decode()


async def _served(store: LocalImageStore, url: str) -> dict[str, str]:
    parts = urlsplit(url)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await serve_stored(store, parts.path, parts.query.encode(), send)
    return {k.decode(): v.decode() for k, v in sent[0]["headers"]}


@pytest.mark.parametrize(
    ("declared", "kinds", "expected"),
    [
        (None, ["JPEG"], ["image/jpeg"]),
        ("png", ["WEBP"], ["image/webp"]),
        ("jpeg", ["JPEG", "PNG"], ["image/jpeg", "image/png"]),
        ("webp", ["WEBP"], ["image/webp"]),
    ],
)
async def test_each_stored_image_is_served_as_what_its_bytes_are(
    tmp_path, declared, kinds, expected
):
    store = LocalImageStore(parse_store_settings({"path": str(tmp_path)}, None))
    answer: dict[str, Any] = {"created": 1, "data": [{"b64_json": _encoded(k)} for k in kinds]}
    if declared is not None:
        answer["output_format"] = declared
    body, stored = await to_url_answer(
        store, json.dumps(answer).encode(), new_request_id(), "http://proxy.test"
    )
    assert stored > 0
    urls = [item["url"] for item in json.loads(body)["data"]]
    served = [(await _served(store, url))["content-type"] for url in urls]
    assert served == expected
