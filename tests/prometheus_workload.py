"""An SDK process exposing /metrics, driven by tests/test_dashboards.py (not a test module).

Run as ``python -m tests.prometheus_workload FAKE_URL API_KEY METRICS_PORT``. It registers the
built-in ``"prometheus"`` integration exactly as a user would, serves the integration's registry
over HTTP with prometheus_client on 127.0.0.1:METRICS_PORT, runs one round of a mixed workload
against the fake upstream and prints a JSON summary line. Each further ``round`` line on stdin
runs the same round again; ``exit`` (or end of input) stops it.

Each round: two priced-model successes (sync and async, different sizes and qualities), one call
to a model no price entry covers, one call with a wrong API key (401) and one validation error.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from typing import Any

from PIL import Image

import tracking

WRONG_KEY = "sk-wrong-key-0000000000000000LEAK"
UNPRICED_MODEL = "acme-image-edit-1"  # unknown to every price table; the fake answers it


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (30, 200, 30, 255)).save(out, format="PNG")
    return out.getvalue()


def run_round(api_base: str, api_key: str) -> dict[str, Any]:
    image = _png()
    summary: dict[str, Any] = {"calls": 0, "successes": 0, "failures": 0, "priced": 0}

    def record(response: tracking.ImageResponse | None) -> None:
        summary["calls"] += 1
        if response is None:
            summary["failures"] += 1
            return
        summary["successes"] += 1
        summary["priced"] += response.cost_usd is not None

    common = {"image": image, "prompt": "add a red hat", "api_base": api_base, "user": "user-7"}
    record(
        tracking.image_edit(
            model="gpt-image-1", size="1024x1024", quality="low", api_key=api_key, **common
        )
    )
    record(
        asyncio.run(
            tracking.aimage_edit(
                model="gpt-image-1", size="1536x1024", quality="high", api_key=api_key, **common
            )
        )
    )
    record(tracking.image_edit(model=UNPRICED_MODEL, api_key=api_key, max_retries=0, **common))
    try:
        tracking.image_edit(model="gpt-image-1", api_key=WRONG_KEY, max_retries=0, **common)
    except tracking.AuthenticationError:
        record(None)
    try:
        tracking.image_edit(model="gpt-image-1", n=99, api_key=api_key, **common)
    except tracking.ValidationError:
        record(None)
    return summary


def main(argv: list[str]) -> int:
    api_base, api_key, port = argv[0], argv[1], int(argv[2])
    from prometheus_client import REGISTRY, start_http_server

    from tracking.bus import resolve

    tracking.success_callback = ["prometheus"]
    integration = resolve("prometheus")
    # The integration's registry is injectable; serve whichever one it writes to.
    registry = getattr(integration, "registry", None) or REGISTRY
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        print(json.dumps(run_round(api_base, api_key)), flush=True)
        for line in sys.stdin:
            if line.strip() != "round":
                break
            print(json.dumps(run_round(api_base, api_key)), flush=True)
    finally:
        flush = getattr(tracking, "flush", None)  # absent until the bus grows batching
        if flush is not None:
            flush()
        server.shutdown()
        server.server_close()
        thread.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
