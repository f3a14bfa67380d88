"""Reading a multipart form in the fake upstreams (Stability, Recraft): text fields and files."""

from __future__ import annotations

from aiohttp import BodyPartReader, web

__all__ = ["read_form"]


async def read_form(request: web.Request) -> tuple[dict[str, str], dict[str, bytes]] | None:
    """``(fields, files)`` of a multipart body, or None when it is malformed."""
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            return None
        data = bytes(await part.read())
        if part.filename is not None:
            files[part.name] = data
        else:
            fields[part.name] = data.decode()
    return fields, files
