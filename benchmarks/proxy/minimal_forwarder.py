"""The ceiling for the proxy benchmark: the least a tracking proxy must do, and nothing else.

Raw ASGI, the multipart body parsed with python-multipart and rebuilt, forwarded with one pooled
aiohttp session, and one SQLite WAL row per request written by a group-commit thread whose
acknowledgement the response waits for, committed with ``synchronous=FULL`` as the ledger's
SQLite files are (until 2026-12-04 it committed with ``NORMAL``, which skips the fsync and so
was less durable than what it was compared with).
Run: ``python minimal_forwarder.py PORT UPSTREAM_URL DB``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading
import uuid
from typing import Any

import aiohttp
import uvicorn
from python_multipart.multipart import MultipartParser, parse_options_header

from tracking.images import ImageFile
from tracking.multipart import encode_multipart


class GroupCommit:
    def __init__(self, path: str) -> None:
        self.queue: queue.Queue[tuple[str, asyncio.Future[None], asyncio.AbstractEventLoop]] = (
            queue.Queue()
        )
        self.path = path
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # as durable as the ledger (module docstring)
        db.execute("CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, size INTEGER)")
        while True:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            db.executemany("INSERT INTO rows VALUES (?, 0)", [(row,) for row, _, _ in batch])
            db.commit()
            for _, future, loop in batch:
                loop.call_soon_threadsafe(future.set_result, None)

    async def write(self, row: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.queue.put((row, future, loop))
        await future


class App:
    def __init__(self, upstream: str, db: str) -> None:
        self.upstream = upstream
        self.ledger = GroupCommit(db)
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        if scope["path"] == "/health/liveliness":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        headers = dict(scope["headers"])
        _, options = parse_options_header(headers.get(b"content-type", b"").decode())
        parts: list[dict[str, Any]] = []
        header: dict[str, bytes] = {}
        field = bytearray()
        value = bytearray()

        def on_part_begin() -> None:
            parts.append({"data": bytearray()})
            header.clear()

        def on_header_end() -> None:
            header[bytes(field).lower()] = bytes(value)
            field.clear()
            value.clear()

        def on_headers_finished() -> None:
            _, disp = parse_options_header(header.get(b"content-disposition"))
            parts[-1]["name"] = disp[b"name"].decode()
            parts[-1]["filename"] = disp.get(b"filename", b"").decode() or None

        callbacks = {
            "on_part_begin": on_part_begin,
            "on_part_data": lambda d, s, e: parts[-1]["data"].extend(d[s:e]),
            "on_header_field": lambda d, s, e: field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: value.extend(d[s:e]),
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        }
        parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
        more = True
        while more:
            message = await receive()
            parser.write(message.get("body", b""))
            more = message.get("more_body", False)
        parser.finalize()
        fields = [(p["name"], p["data"].decode()) for p in parts if p["filename"] is None]
        files = [
            (p["name"], ImageFile(p["filename"], bytes(p["data"]), "image/png"))
            for p in parts
            if p["filename"] is not None
        ]
        body, content_type = encode_multipart(fields, files)
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.post(
            self.upstream,
            data=body,
            headers={"Content-Type": content_type, "Authorization": "Bearer sk-bench"},
        ) as answer:
            payload = await answer.read()
            status = answer.status
        await self.ledger.write(str(uuid.uuid4()))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    port, upstream, db = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(App(upstream, db), host="127.0.0.1", port=port, log_level="warning")
