"""SDK overhead: sync ``tracking.image_edit`` against a raw httpx POST of the same body.

The fake upstream (canned mode: it reads the body and answers a pre-built response) runs in its
own process pinned to core 1; this process, the load generator, is pinned to core 0, so the
process CPU measured here (``time.process_time``: every thread of the process, background
workers included) is the client's alone.

Variants, interleaved batch by batch in a rotating order so drift hits them all alike:

* ``raw httpx (same bytes)``: the baseline. One pooled ``httpx.Client`` posting the exact
  multipart body and headers the SDK sends, encoded once up front.
* ``raw httpx (files=)``: for context, httpx encoding the multipart body itself each call, as
  code without this project would.
* ``tracking, no integrations``.
* ``tracking, all integrations``: prometheus, otel (a real SDK tracer provider, batch span
  processor, discarding exporter), sql (background mode, a tmp SQLite file) and structlog
  registered by name. After each of its batches the background sinks are flushed inside the
  measured CPU window, so work they defer is charged to the calls that made it.
* with ``--each``, ``tracking, only <name>`` for each of the four on its own, flushed the same way.

"Added" figures are the median over batches of the paired difference against the baseline's
batch of the same round. Targets with everything on: added p50 under 0.25 ms, added
CPU at most 0.3 ms per call.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from _harness import (
    CALL_PARAMS,
    Integrations,
    all_integrations,
    fake_upstream,
    make_png,
    median,
    parse_args,
    percentile,
    pin_self,
    print_table,
    raw_request,
    timed_calls,
    workdir,
    write_json,
)

BASELINE = "raw httpx (same bytes)"
TARGET_ADDED_P50_MS = 0.25
TARGET_ADDED_CPU_MS = 0.3


def main() -> None:
    args = parse_args(
        "sdk_overhead",
        __doc__.splitlines()[0],
        extra=lambda parser: parser.add_argument(
            "--each", action="store_true", help="also each integration on its own"
        ),
    )
    pinning = pin_self(args)
    rounds, batch = (2, 20) if args.quick else (30, 200)

    import tracking

    with workdir() as tmp, fake_upstream(args) as fake:
        png = make_png(143)
        body, headers = raw_request(png, fake.api_base)
        fields = {k: str(v) for k, v in CALL_PARAMS.items() if k != "api_key"}
        files_headers = {"Authorization": headers["Authorization"], "Accept": "application/json"}
        client = httpx.Client()
        integrations = all_integrations(tmp)
        params: dict[str, Any] = {**CALL_PARAMS, "api_base": fake.api_base}

        def raw_bytes() -> None:
            client.post(fake.edits_url, content=body, headers=headers).raise_for_status()

        def raw_files() -> None:
            client.post(
                fake.edits_url,
                data=fields,
                files={"image": ("image.png", png, "image/png")},
                headers=files_headers,
            ).raise_for_status()

        def sdk() -> None:
            tracking.image_edit(image=png, **params)

        variants: dict[str, tuple[Callable[[], None], Integrations | None]] = {
            BASELINE: (raw_bytes, None),
            "raw httpx (files=)": (raw_files, None),
            "tracking, no integrations": (sdk, None),
        }
        all_on = "tracking, all integrations"
        if integrations.available:
            variants[all_on] = (sdk, integrations)
            if args.each:  # what each integration costs on its own, flushed the same way
                for name in integrations.names:
                    variants[f"tracking, only {name}"] = (sdk, replace(integrations, names=(name,)))

        latencies: dict[str, list[float]] = {name: [] for name in variants}
        round_p50: dict[str, list[float]] = {name: [] for name in variants}
        round_cpu: dict[str, list[float]] = {name: [] for name in variants}

        def run_batch(name: str, calls: int) -> tuple[list[float], float]:
            call, enabled = variants[name]
            if enabled is not None:
                enabled.on()
            else:
                Integrations.off()
            return timed_calls(call, calls, enabled.flush if enabled is not None else None)

        for name in variants:  # warm-up: connections, lazy imports, integration set-up
            run_batch(name, max(5, batch // 10))
        gc.collect()
        names = list(variants)
        for round_index in range(rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                samples, cpu = run_batch(name, batch)
                latencies[name].extend(samples)
                round_p50[name].append(percentile(samples, 50))
                round_cpu[name].append(cpu)
        client.close()
        integrations.close()

    results: dict[str, Any] = {}
    for name in variants:
        added_p50 = [a - b for a, b in zip(round_p50[name], round_p50[BASELINE], strict=True)]
        added_cpu = [a - b for a, b in zip(round_cpu[name], round_cpu[BASELINE], strict=True)]
        results[name] = {
            "calls": len(latencies[name]),
            "p50_ms": percentile(latencies[name], 50) * 1000,
            "p90_ms": percentile(latencies[name], 90) * 1000,
            "p99_ms": percentile(latencies[name], 99) * 1000,
            "cpu_ms_per_call": median(round_cpu[name]) * 1000,
            "added_p50_ms": median(added_p50) * 1000,
            "added_cpu_ms_per_call": median(added_cpu) * 1000,
        }
    if not integrations.available:
        results[all_on] = {"available": False, "reason": integrations.reason}

    rows = []
    for name, r in results.items():
        if r.get("available") is False:
            rows.append([name, "not available", None, None, None, None, None])
            continue
        rows.append(
            [
                name,
                r["p50_ms"],
                r["p90_ms"],
                r["cpu_ms_per_call"],
                None if name == BASELINE else r["added_p50_ms"],
                None if name == BASELINE else r["added_cpu_ms_per_call"],
                r["calls"],
            ]
        )
    print_table(
        f"Sync SDK overhead, {len(png) // 1024} KB image, canned fake "
        f"({rounds} rounds x {batch} calls, interleaved; {pinning})",
        ["variant", "p50 ms", "p90 ms", "CPU ms/call", "added p50", "added CPU", "calls"],
        rows,
    )
    if not integrations.available:
        print(f"\n'{all_on}' not available: {integrations.reason}")
    verdicts = {}
    for name in ("tracking, no integrations", all_on):
        r = results[name]
        if r.get("available") is False:
            continue
        verdicts[name] = {
            "added_p50_ok": r["added_p50_ms"] < TARGET_ADDED_P50_MS,
            "added_cpu_ok": r["added_cpu_ms_per_call"] <= TARGET_ADDED_CPU_MS,
        }
        print(
            f"{name}: added p50 {r['added_p50_ms']:+.3f} ms (target < {TARGET_ADDED_P50_MS}), "
            f"added CPU {r['added_cpu_ms_per_call']:+.3f} ms/call (target <= {TARGET_ADDED_CPU_MS})"
        )
    write_json(
        args.out,
        "sdk_overhead",
        args,
        {
            "pinning": pinning,
            "image_bytes": len(png),
            "body_bytes": len(body),
            "rounds": rounds,
            "batch": batch,
            "baseline": BASELINE,
            "integrations": {
                "available": integrations.available,
                "reason": integrations.reason,
                "names": list(integrations.names),
            },
            "target": {
                "added_p50_ms_below": TARGET_ADDED_P50_MS,
                "added_cpu_ms_at_most": TARGET_ADDED_CPU_MS,
            },
            "verdicts": verdicts,
            "variants": results,
        },
    )


if __name__ == "__main__":
    main()
