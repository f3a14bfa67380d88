"""One side of the LiteLLM comparison, driven by ``run.py`` over stdin/stdout (JSON lines).

Runs under the project's virtualenv (``--side ours``: raw httpx / raw aiohttp and the tracking
SDK) or under the LiteLLM virtualenv (``--side litellm``: ``litellm.image_edit`` and
``litellm.aimage_edit``), so the two libraries never share an interpreter. The LiteLLM side
imports nothing of the tracking package. Each command measures one batch of one variant and
answers its figures; CPU is this process's (every thread), so background work is charged to
the calls.

Commands: ``{"mode": "sync", "variant": NAME, "calls": N}``,
``{"mode": "async", "variant": NAME, "concurrency": C, "warmup": S, "window": S}``,
``{"mode": "quit"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import keep_in_flight, percentile, timed_calls

PROMPT = "Add a red hat to the person in the image"
FIELDS: dict[str, str] = {"size": "1024x1024", "quality": "low", "user": "bench-user"}
API_KEY = "sk-bench"

SyncCall = Callable[[], None]
AsyncCall = Callable[[], Awaitable[None]]


class Side:
    """The variants one interpreter can run: a sync call and an async call per variant."""

    def __init__(self, png: bytes, api_base: str, model: str) -> None:
        self.png = png
        self.api_base = api_base
        self.model = model

    def sync_call(self, variant: str) -> SyncCall:
        raise NotImplementedError

    def async_call(self, variant: str) -> AsyncCall:
        raise NotImplementedError

    def after_batch(self, variant: str) -> None:
        """Deliver deferred work inside the measured window."""

    async def end_of_loop(self) -> None:
        """Close what belongs to the event loop that is ending."""

    def close(self) -> None:
        """Release what the variants hold."""


class LiteLLMSide(Side):
    def __init__(self, png: bytes, api_base: str, model: str) -> None:
        super().__init__(png, api_base, model)
        import litellm

        self.litellm = litellm
        self.params: dict[str, Any] = {
            "prompt": PROMPT,
            "model": model,
            "api_base": api_base,
            "api_key": API_KEY,
            **FIELDS,
        }

    def _image(self) -> io.BytesIO:
        image = io.BytesIO(self.png)
        image.name = "image.png"
        return image

    def sync_call(self, variant: str) -> SyncCall:
        def call() -> None:
            self.litellm.image_edit(image=self._image(), **self.params)

        return call

    def async_call(self, variant: str) -> AsyncCall:
        async def call() -> None:
            await self.litellm.aimage_edit(image=self._image(), **self.params)

        return call


class OurSide(Side):
    """Raw clients posting the SDK's exact bytes; the tracking SDK bare or with everything on."""

    def __init__(self, png: bytes, api_base: str, model: str, workdir: Path) -> None:
        super().__init__(png, api_base, model)
        import httpx
        from _harness import CALL_PARAMS, Integrations, all_integrations, raw_request

        import tracking

        self.tracking = tracking
        self.off = Integrations.off
        self.integrations = all_integrations(workdir)
        self.params: dict[str, Any] = {**CALL_PARAMS, "model": model, "api_base": api_base}
        self.body, self.headers = raw_request(png, api_base)
        self.url = f"{api_base}/images/edits"
        self.client = httpx.Client()
        self.session: Any = None

    def _enable(self, variant: str) -> None:
        if variant.endswith("all integrations"):
            if not self.integrations.available:
                raise SystemExit(f"integrations not available: {self.integrations.reason}")
            self.integrations.on()
        else:
            self.off()

    def sync_call(self, variant: str) -> SyncCall:
        self._enable(variant)
        if variant.startswith("raw"):

            def raw() -> None:
                self.client.post(self.url, content=self.body, headers=self.headers)

            return raw

        def sdk() -> None:
            self.tracking.image_edit(image=self.png, **self.params)

        return sdk

    def async_call(self, variant: str) -> AsyncCall:
        self._enable(variant)
        if variant.startswith("raw"):
            import aiohttp

            async def raw() -> None:
                if self.session is None:
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
                async with self.session.post(
                    self.url, data=self.body, headers=self.headers
                ) as answer:
                    await answer.read()

            return raw

        async def sdk() -> None:
            await self.tracking.aimage_edit(image=self.png, **self.params)

        return sdk

    def after_batch(self, variant: str) -> None:
        if variant.endswith("all integrations"):
            self.integrations.flush()

    async def end_of_loop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def close(self) -> None:
        self.client.close()
        self.integrations.close()


def run_sync(side: Side, variant: str, calls: int) -> dict[str, float]:
    flush = functools.partial(side.after_batch, variant)
    samples, cpu = timed_calls(side.sync_call(variant), calls, flush)
    return {
        "calls": calls,
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "cpu_ms_per_call": cpu * 1000,
    }


async def run_async(
    side: Side, variant: str, concurrency: int, warmup: float, window: float
) -> dict[str, float]:
    flush = functools.partial(side.after_batch, variant)
    seen = await keep_in_flight(side.async_call(variant), concurrency, warmup, window, flush)
    await side.end_of_loop()
    return {
        "requests": seen.requests,
        "req_per_s": seen.requests / seen.elapsed,
        "cpu_ms_per_request": seen.cpu / max(seen.requests, 1) * 1000,
        "client_cpu_util": seen.cpu / seen.elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--side", choices=("ours", "litellm"), required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--core", type=int, default=-1, help="pin to this core (-1: do not)")
    args = parser.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    png = args.png.read_bytes()
    side: Side = (
        LiteLLMSide(png, args.api_base, args.model)
        if args.side == "litellm"
        else OurSide(png, args.api_base, args.model, args.workdir)
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["mode"] == "quit":
            break
        if command["mode"] == "sync":
            result = run_sync(side, command["variant"], command["calls"])
        else:
            result = asyncio.run(
                run_async(
                    side,
                    command["variant"],
                    command["concurrency"],
                    command["warmup"],
                    command["window"],
                )
            )
        print(json.dumps(result), flush=True)
    side.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
