"""Time to the first streamed event, through the proxy and from the upstream direct, one command:
``.venv/bin/python benchmarks/streaming_first_event.py [--rounds 300] [--json FILE]``.

Starts the canned fake upstream (``tracking fake-openai --canned``: a streamed answer is one
``image_edit.partial_image`` event and the ``image_edit.completed`` event) and ``tracking serve``
in front of it (one worker, full tracking: the router, the durable SQLite ledger, Prometheus),
both as subprocesses. One client (httpx, keep-alive) then posts the same multipart
``stream=true`` edit (a small PNG, ``partial_images=1``) to each in turn, in interleaved rounds
(the order alternates), so the machine's load hits both alike. It times each request from its
start to the end of its first complete SSE event, then reads the rest of the stream (the call
completes, and through the proxy its ledger row is written, before the next round). Reported:
median, p10 and p90 of each, and the proxy's added time as the difference of the medians and
as the median of the per-round differences. Target (issue 19): at most 1 ms added. For
comparison the same rounds time a plain (not streamed) call's whole answer both ways: what the
proxy adds to any call. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent / "proxy"))
from run import MASTER_KEY, tracking_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tracking() -> list[str]:
    script = Path(sys.executable).parent / "tracking"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracking.cli"]


def start(command: list[str], health: str, cwd: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command} exited with {process.returncode}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit(f"{command} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def small_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (256, 256), (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


def first_event_ms(client: httpx.Client, url: str, key: str, png: bytes, stream: bool) -> float:
    """Milliseconds from the request's start to its first complete event (the rest is read), or
    with ``stream=False`` to the end of the plain JSON answer."""
    fields = {"model": "gpt-image-2", "prompt": "hat"}
    if stream:
        fields.update(stream="true", partial_images="1")
    began = time.perf_counter()
    with client.stream(
        "POST",
        url,
        data=fields,
        files={"image": ("photo.png", png, "image/png")},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}: {response.read()!r}")
        seen = b""
        elapsed: float | None = None
        for chunk in response.iter_raw():
            if elapsed is None and stream:
                seen += chunk
                if b"\n\n" in seen:
                    elapsed = (time.perf_counter() - began) * 1000
        if not stream:
            elapsed = (time.perf_counter() - began) * 1000
    if elapsed is None:
        raise SystemExit(f"{url}: the stream ended without an event")
    return elapsed


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p10_ms": round(ordered[len(ordered) // 10], 3),
        "p90_ms": round(ordered[len(ordered) * 9 // 10], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    png = small_png()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fake_port, proxy_port = free_port(), free_port()
        fake = start(
            [*tracking(), "fake-openai", "--canned", "--port", str(fake_port)],
            f"http://127.0.0.1:{fake_port}/health",
            folder,
        )
        config = tracking_config(folder, f"http://127.0.0.1:{fake_port}/v1")
        proxy = start(
            [*tracking(), "serve", "--config", str(config), "--port", str(proxy_port)],
            f"http://127.0.0.1:{proxy_port}/health/liveliness",
            folder,
        )
        direct_url = f"http://127.0.0.1:{fake_port}/v1/images/edits"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1/images/edits"
        targets = {
            "upstream direct": (direct_url, "sk-bench", True),
            "through the proxy": (proxy_url, MASTER_KEY, True),
            # for comparison: a plain (not streamed) call's whole answer, both ways
            "plain, direct": (direct_url, "sk-bench", False),
            "plain, proxy": (proxy_url, MASTER_KEY, False),
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        try:
            with httpx.Client(timeout=30) as client:
                for round_index in range(args.warmup + args.rounds):
                    order = list(targets) if round_index % 2 else list(reversed(targets))
                    for name in order:
                        url, key, stream = targets[name]
                        elapsed = first_event_ms(client, url, key, png, stream)
                        if round_index >= args.warmup:
                            times[name].append(elapsed)
        finally:
            stop(proxy)
            stop(fake)
    direct, proxied = times["upstream direct"], times["through the proxy"]
    per_round = [p - d for p, d in zip(proxied, direct, strict=True)]
    result = {
        "rounds": args.rounds,
        "upstream direct": summary(direct),
        "through the proxy": summary(proxied),
        "added_ms_difference_of_medians": round(
            statistics.median(proxied) - statistics.median(direct), 3
        ),
        "added_ms_median_per_round": round(statistics.median(per_round), 3),
        "plain, direct": summary(times["plain, direct"]),
        "plain, proxy": summary(times["plain, proxy"]),
        "plain_added_ms_difference_of_medians": round(
            statistics.median(times["plain, proxy"]) - statistics.median(times["plain, direct"]),
            3,
        ),
        "target_ms": 1.0,
        "load_average": os.getloadavg()[0],
    }
    for name in targets:
        figures = result[name]
        assert isinstance(figures, dict)
        print(
            f"{name:>18}: median {figures['median_ms']:.3f} ms  "
            f"p10 {figures['p10_ms']:.3f}  p90 {figures['p90_ms']:.3f}"
        )
    print(
        f"added by the proxy: {result['added_ms_difference_of_medians']:.3f} ms (medians), "
        f"{result['added_ms_median_per_round']:.3f} ms (median per round); target <= 1 ms; "
        f"load average {result['load_average']:.2f}"
    )
    print(
        f"a plain call, for comparison: the proxy adds "
        f"{result['plain_added_ms_difference_of_medians']:.3f} ms (medians)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
