"""Async throughput: ``tracking.aimage_edit`` at concurrency 32 and 128 against raw async clients.

The fake upstream (canned mode) runs in its own process pinned to core 1; this process, the load
generator, runs one event loop pinned to core 0. Each variant keeps N requests in flight for a
fixed window after a warm-up; throughput is completions per second of the window, CPU is this
process's CPU per request (all threads). Background sinks are flushed at the end of the window,
inside the measured time and CPU, so deferred work is charged to the run that made it. The fake's
own CPU use is reported too: near 100% it, not the client, is the limit.

Other tenants of a shared machine steal CPU in bursts, so req/s is the best of the rounds (what
the client can do when left alone) and CPU per request, the steadier figure, is their median.
``x raw CPU`` compares CPU per request with the leanest raw client: for a load generator that is
CPU-bound, as here, it is the throughput ratio the client can reach.

The raw clients post the exact multipart body and headers the SDK sends, encoded once:

* ``httpx.AsyncClient``: httpx with its default transport (httpcore).
* ``httpx + AiohttpTransport``: httpx's API over the project's aiohttp transport, which is what
  the SDK's async path uses.
* ``aiohttp``: a bare ``aiohttp.ClientSession``.

Every client may open up to 200 connections. Target: with all integrations on, at
least 0.35x the leanest raw client's CPU efficiency (``x raw CPU``) at concurrency 32.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import httpx
from _harness import (
    CALL_PARAMS,
    FakeProcess,
    Integrations,
    all_integrations,
    fake_upstream,
    keep_in_flight,
    make_png,
    median,
    parse_args,
    pin_self,
    print_table,
    raw_request,
    workdir,
    write_json,
)
from httpx_aiohttp_transport import AiohttpTransport

RAW = ("httpx.AsyncClient", "httpx + AiohttpTransport", "aiohttp")
SDK_BARE = "tracking.aimage_edit, no integrations"
SDK_ALL = "tracking.aimage_edit, all integrations"
CONCURRENCY = (32, 128)
MAX_CONNECTIONS = 200
TARGET_CPU_RATIO = 0.35

Sender = Callable[[], Awaitable[None]]


def _client(name: str, fake: FakeProcess, body: bytes, headers: dict[str, str], png: bytes):
    """An async context manager yielding a coroutine function that sends one request."""

    @asynccontextmanager
    async def httpx_client(transport: httpx.AsyncBaseTransport | None):
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        async with httpx.AsyncClient(transport=transport, limits=limits) as client:

            async def send() -> None:
                answer = await client.post(fake.edits_url, content=body, headers=headers)
                answer.raise_for_status()

            yield send

    @asynccontextmanager
    async def aiohttp_client():
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send() -> None:
                async with session.post(fake.edits_url, data=body, headers=headers) as answer:
                    await answer.read()
                    answer.raise_for_status()

            yield send

    @asynccontextmanager
    async def sdk():
        import tracking

        params: dict[str, Any] = {**CALL_PARAMS, "api_base": fake.api_base}

        async def send() -> None:
            await tracking.aimage_edit(image=png, **params)

        yield send  # the SDK's pooled client closes itself when the loop ends

    if name == "httpx.AsyncClient":
        return httpx_client(None)
    if name == "httpx + AiohttpTransport":
        return httpx_client(AiohttpTransport(max_connections=MAX_CONNECTIONS))
    if name == "aiohttp":
        return aiohttp_client()
    return sdk()


async def _drive(
    client: AbstractAsyncContextManager[Sender],
    concurrency: int,
    warmup: float,
    window: float,
    fake: FakeProcess,
    flush: Callable[[], None],
) -> dict[str, float]:
    fake_cpu = [0.0, 0.0]  # at the window's start and end

    def window_started() -> None:
        fake_cpu[0] = fake.cpu_seconds()

    def window_ended() -> None:
        flush()
        fake_cpu[1] = fake.cpu_seconds()

    async with client as send:
        seen = await keep_in_flight(send, concurrency, warmup, window, window_ended, window_started)
    done, elapsed, cpu = seen.requests, seen.elapsed, seen.cpu
    return {
        "requests": done,
        "req_per_s": done / elapsed,
        "cpu_ms_per_request": cpu / max(done, 1) * 1000,
        "client_cpu_util": cpu / elapsed,
        "fake_cpu_util": (fake_cpu[1] - fake_cpu[0]) / elapsed,
    }


def main() -> None:
    args = parse_args("async_throughput", __doc__.splitlines()[0])
    pinning = pin_self(args)
    rounds, warmup, window = (1, 0.1, 0.3) if args.quick else (3, 0.3, 1.2)

    with workdir() as tmp, fake_upstream(args) as fake:
        png = make_png(143)
        body, headers = raw_request(png, fake.api_base)
        integrations = all_integrations(tmp)
        variants: dict[str, Integrations | None] = {name: None for name in (*RAW, SDK_BARE)}
        if integrations.available:
            variants[SDK_ALL] = integrations
        runs: dict[int, dict[str, list[dict[str, float]]]] = {
            c: {name: [] for name in variants} for c in CONCURRENCY
        }
        names = list(variants)
        for round_index in range(rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for concurrency in CONCURRENCY:
                for name in order:
                    enabled = variants[name]
                    if enabled is not None:
                        enabled.on()
                        flush = enabled.flush
                    else:
                        Integrations.off()

                        def flush() -> None:
                            return None

                    gc.collect()
                    client = _client(name, fake, body, headers, png)
                    result = asyncio.run(_drive(client, concurrency, warmup, window, fake, flush))
                    runs[concurrency][name].append(result)
        integrations.close()

    results: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    rows = []
    for concurrency in CONCURRENCY:
        per_variant: dict[str, Any] = {}
        for name in variants:
            samples = runs[concurrency][name]
            best = max(samples, key=lambda s: s["req_per_s"])
            per_variant[name] = {
                "req_per_s": best["req_per_s"],
                "client_cpu_util": best["client_cpu_util"],
                "fake_cpu_util": best["fake_cpu_util"],
                "cpu_ms_per_request": median([s["cpu_ms_per_request"] for s in samples]),
            }
            per_variant[name]["requests"] = sum(int(s["requests"]) for s in samples)
        fastest = max(RAW, key=lambda n: per_variant[n]["req_per_s"])
        leanest = min(RAW, key=lambda n: per_variant[n]["cpu_ms_per_request"])
        top = per_variant[fastest]["req_per_s"]
        least = per_variant[leanest]["cpu_ms_per_request"]
        for name in variants:
            r = per_variant[name]
            r["ratio_vs_fastest_raw"] = r["req_per_s"] / top
            r["cpu_ratio_vs_leanest_raw"] = least / r["cpu_ms_per_request"]
        if not integrations.available:
            per_variant[SDK_ALL] = {"available": False, "reason": integrations.reason}
        results[str(concurrency)] = {
            "fastest_raw": fastest,
            "leanest_raw": leanest,
            "variants": per_variant,
        }
        for name, r in per_variant.items():
            if r.get("available") is False:
                rows.append([concurrency, name, "not available", None, None, None, None, None])
                continue
            rows.append(
                [
                    concurrency,
                    name,
                    r["req_per_s"],
                    r["ratio_vs_fastest_raw"],
                    r["cpu_ms_per_request"],
                    r["cpu_ratio_vs_leanest_raw"],
                    f"{r['client_cpu_util'] * 100:.0f}%",
                    f"{r['fake_cpu_util'] * 100:.0f}%",
                ]
            )
        for name in (SDK_BARE, SDK_ALL):
            if per_variant[name].get("available") is not False:
                verdicts[f"{name} @ {concurrency}"] = (
                    per_variant[name]["cpu_ratio_vs_leanest_raw"] >= TARGET_CPU_RATIO
                )
    print_table(
        f"Async throughput, {len(png) // 1024} KB image, canned fake "
        f"(best of {rounds} round(s) x {window} s per cell; {pinning})",
        [
            "conc.",
            "variant",
            "req/s",
            "x fastest raw",
            "CPU ms/req",
            "x raw CPU",
            "client CPU",
            "fake CPU",
        ],
        rows,
    )
    if not integrations.available:
        print(f"\n'{SDK_ALL}' not available: {integrations.reason}")
    for concurrency in CONCURRENCY:
        r = results[str(concurrency)]
        bare = r["variants"][SDK_BARE]
        print(
            f"concurrency {concurrency}: fastest raw client {r['fastest_raw']}; no integrations "
            f"{bare['ratio_vs_fastest_raw']:.2f}x its req/s, "
            f"{bare['cpu_ratio_vs_leanest_raw']:.2f}x its CPU efficiency "
            f"(target with all on: >= {TARGET_CPU_RATIO}x its CPU efficiency at 32)"
        )
    write_json(
        args.out,
        "async_throughput",
        args,
        {
            "pinning": pinning,
            "image_bytes": len(png),
            "body_bytes": len(body),
            "rounds": rounds,
            "warmup_s": warmup,
            "window_s": window,
            "max_connections": MAX_CONNECTIONS,
            "integrations": {
                "available": integrations.available,
                "reason": integrations.reason,
                "names": list(integrations.names),
            },
            "target": {"cpu_ratio_vs_leanest_raw_at_least": TARGET_CPU_RATIO, "concurrency": 32},
            "verdicts": verdicts,
            "concurrency": results,
        },
    )


if __name__ == "__main__":
    main()
