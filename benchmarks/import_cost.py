"""Import cost: a cold ``import tracking`` and the time until a first call is ready, against httpx.

Every sample is a fresh interpreter (``python -c ...``), the variants interleaved sample by
sample so drift hits them all alike. Measured inside the child with ``perf_counter`` around the
import (interpreter start-up is excluded; the whole process's wall time is reported beside it).

* ``import httpx``: the baseline.
* ``import tracking``: what every user pays.
* ``tracking.image_edit`` resolved: the modules of the sync call path imported, ready to call.
* first response: import, then one sync call to the canned fake upstream, against ``import
  httpx`` and one ``httpx.post`` of the same multipart body to the same fake.

It also counts the modules each variant loads and checks that no integration (prometheus, otel,
sql, structlog) is imported unless registered. Target: under 2x ``import httpx``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from _harness import (
    CALL_PARAMS,
    FakeProcess,
    fake_upstream,
    make_png,
    median,
    parse_args,
    percentile,
    pin_self,
    print_table,
    taskset_prefix,
    workdir,
    write_json,
)

_INTEGRATION_MODULES = (
    "tracking.integrations.prometheus",
    "tracking.integrations.otel",
    "tracking.integrations.sql",
    "tracking.integrations.structlog",
    "prometheus_client",
    "opentelemetry",
    "sqlalchemy",
    "structlog",
)

_CHILD = """
import json, sys, time
before = set(sys.modules)
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
watched = {watched!r}
print(json.dumps({{
    "seconds": elapsed,
    "modules": len(set(sys.modules) - before),
    "integrations_loaded": sorted(m for m in watched if m in sys.modules),
}}))
"""

_PNG_SETUP = "png = open({path!r}, 'rb').read()\n"


def _variants(fake: FakeProcess, png_path: str, body_path: str, headers: str) -> dict[str, str]:
    params = {**CALL_PARAMS, "api_base": fake.api_base}
    return {
        "import httpx": "import httpx",
        "import tracking": "import tracking",
        "tracking.image_edit ready": "import tracking\ntracking.image_edit",
        "first response: httpx.post": (
            f"body = open({body_path!r}, 'rb').read()\n"
            "import httpx\n"
            f"httpx.post({fake.edits_url!r}, content=body, headers={headers}).raise_for_status()"
        ),
        "first response: tracking.image_edit": (
            _PNG_SETUP.format(path=png_path)
            + "import tracking\n"
            + f"tracking.image_edit(image=png, **{params!r})"
        ),
    }


def _split(snippet: str) -> tuple[str, str]:
    """Lines before the first import load data and run before the clock starts."""
    lines = snippet.splitlines()
    first_import = next(i for i, line in enumerate(lines) if line.startswith("import "))
    return "\n".join(lines[:first_import]), "\n".join(lines[first_import:])


def main() -> None:
    args = parse_args("import_cost", __doc__.splitlines()[0])
    pinning = pin_self(args)
    repeats = 2 if args.quick else 15
    prefix = taskset_prefix(args, 0)
    samples: dict[str, list[dict[str, Any]]] = {}
    with workdir() as tmp, fake_upstream(args) as fake:
        from _harness import raw_request

        png = make_png(143)
        body, headers = raw_request(png, fake.api_base)
        (tmp / "image.png").write_bytes(png)
        (tmp / "body.bin").write_bytes(body)
        variants = _variants(fake, str(tmp / "image.png"), str(tmp / "body.bin"), repr(headers))
        children = {}
        for name, snippet in variants.items():
            setup, timed = _split(snippet)
            children[name] = _CHILD.format(body=timed, watched=_INTEGRATION_MODULES).replace(
                "before = set(sys.modules)", setup + "\nbefore = set(sys.modules)", 1
            )
        for repeat in range(repeats + 1):  # the first round warms the OS file cache, unrecorded
            names = list(children)
            if repeat % 2:
                names.reverse()
            for name in names:
                started = time.perf_counter()
                out = subprocess.run(
                    [*prefix, sys.executable, "-c", children[name]],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                wall = time.perf_counter() - started
                if out.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{out.stderr}")
                if repeat == 0:
                    continue
                sample = json.loads(out.stdout.strip().splitlines()[-1])
                sample["process_wall"] = wall
                samples.setdefault(name, []).append(sample)

    def summary(name: str) -> dict[str, Any]:
        seconds = [s["seconds"] for s in samples[name]]
        return {
            "median_ms": median(seconds) * 1000,
            "p90_ms": percentile(seconds, 90) * 1000,
            "process_wall_median_ms": median([s["process_wall"] for s in samples[name]]) * 1000,
            "modules": max(s["modules"] for s in samples[name]),
            "integrations_loaded": sorted(
                {m for s in samples[name] for m in s["integrations_loaded"]}
            ),
            "samples": len(seconds),
        }

    results = {name: summary(name) for name in children}
    httpx_ms = results["import httpx"]["median_ms"]
    first_httpx = results["first response: httpx.post"]["median_ms"]
    for name, result in results.items():
        base = first_httpx if name.startswith("first response") else httpx_ms
        result["ratio_vs_httpx"] = result["median_ms"] / base
    ready_ratio = results["tracking.image_edit ready"]["ratio_vs_httpx"]
    rows = [
        [
            name,
            r["median_ms"],
            r["p90_ms"],
            r["ratio_vs_httpx"],
            r["modules"],
            r["process_wall_median_ms"],
            ",".join(r["integrations_loaded"]) or "none",
        ]
        for name, r in results.items()
    ]
    print_table(
        f"Import cost ({repeats} fresh interpreters each, interleaved; {pinning})",
        [
            "variant",
            "median ms",
            "p90 ms",
            "x httpx",
            "modules",
            "process ms",
            "integrations",
        ],
        rows,
    )
    print(
        f"\nimport tracking: {results['import tracking']['ratio_vs_httpx']:.2f}x import httpx; "
        f"first call ready: {ready_ratio:.2f}x (target: under 2x)"
    )
    write_json(
        args.out,
        "import_cost",
        args,
        {
            "pinning": pinning,
            "repeats": repeats,
            "baseline": "import httpx (first response: import httpx + one httpx.post)",
            "target": {"ready_ratio_vs_httpx_below": 2.0},
            "ready_ratio_vs_httpx": ready_ratio,
            "integrations_loaded_without_registration": sorted(
                {m for r in results.values() for m in r["integrations_loaded"]}
            ),
            "variants": results,
        },
    )


if __name__ == "__main__":
    main()
