"""Side by side with LiteLLM, one command: ``python benchmarks/vs_litellm/run.py``.

Installs LiteLLM (the pinned version in ``requirements-litellm.txt``) into its own virtualenv
under ``.bench-venvs/`` at the repository root (git-ignored; made once, reused after), then
measures, in the same run and against the same canned fake upstream (``tracking fake-openai
--canned``, pinned to core 1):

* sync SDK: ``litellm.image_edit`` against ``tracking.image_edit`` (bare and with every
  integration on) and a raw pooled ``httpx.Client`` posting the SDK's exact bytes;
* async SDK at concurrency 32: ``litellm.aimage_edit`` against ``tracking.aimage_edit`` (bare and
  all on) and a bare ``aiohttp.ClientSession`` posting the same bytes;
* proxy under wrk at concurrency 16 and 64: LiteLLM's proxy (``litellm --config``, one worker, no
  database), ``tracking serve`` (one worker, full tracking, durable SQLite ledger) and the minimal
  durable forwarder of ``benchmarks/proxy/``, with the fake upstream itself for reference.

Each library runs in its own interpreter (``worker.py``, pinned to core 0), driven over a pipe
in interleaved rounds (the order rotates), so the machine's load hits every variant alike;
figures are medians over the rounds, ratios the medians of per-round ratios. Every call sends
``gpt-image-2`` (a live model LiteLLM 1.110.2 prices; its proxy routes it as
``openai/gpt-image-2`` to the custom api_base). ``--quick`` installs nothing: without the
LiteLLM virtualenv the LiteLLM side is skipped with the reason printed. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _harness import (  # noqa: E402 - the shared harness lives one folder up
    CLIENT_CORE,
    FakeProcess,
    can_pin,
    fake_upstream,
    make_png,
    parse_args,
    pin_self,
    print_table,
    workdir,
    write_json,
)

SCRIPT = "benchmarks/vs_litellm/run.py"
REQUIREMENTS = HERE / "requirements-litellm.txt"
MODEL = "gpt-image-2"
LITELLM_PROXY_MODEL = f"openai/{MODEL}"
RAW_SYNC, RAW_ASYNC = "raw httpx", "raw aiohttp"
OURS, OURS_ALL, LITELLM = "tracking", "tracking, all integrations", "litellm"
ASYNC_CONCURRENCY = 32
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}


def litellm_version() -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        if line.startswith("litellm=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"{REQUIREMENTS} pins no litellm version")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--venvs",
        type=Path,
        default=HERE.parent.parent / ".bench-venvs",
        help="where LiteLLM's virtualenv is made (default: %(default)s)",
    )
    parser.add_argument("--no-install", action="store_true", help="never install LiteLLM")
    parser.add_argument("--skip-proxy", action="store_true", help="measure the SDKs only")


def litellm_venv(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """LiteLLM's virtualenv (made and filled on first use), or why there is none."""
    version = litellm_version()
    venv = args.venvs / f"litellm-{version}"
    marker = venv / ".installed"
    if marker.exists():
        return venv, None
    if args.quick or args.no_install:
        return None, (
            f"no LiteLLM virtualenv at {venv}: --quick installs nothing "
            "(run `python benchmarks/vs_litellm/run.py` once to make it)"
        )
    print(f"installing litellm=={version} into {venv} (once) ...", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
    if made.returncode != 0:
        return None, f"python -m venv failed: {made.stderr.decode()[-300:]}"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
    installed = subprocess.run(pip, capture_output=True, text=True)
    if installed.returncode != 0:
        return None, f"installing LiteLLM failed: {installed.stderr.strip()[-500:]}"
    marker.write_text(version + "\n")
    return venv, None


class Worker:
    """One side's interpreter running ``worker.py``, answering one JSON line per command."""

    def __init__(
        self, python: Path | str, side: str, fake: FakeProcess, png: Path, folder: Path, core: int
    ) -> None:
        command = [str(python), str(HERE / "worker.py"), "--side", side, "--png", str(png)]
        command += ["--api-base", fake.api_base, "--model", MODEL, "--workdir", str(folder)]
        command += ["--core", str(core)]
        env = {**os.environ, **LITELLM_ENV} if side == "litellm" else None
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.ask_line()  # {"ready": true}

    def ask_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a benchmark worker exited ({self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.ask_line()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"mode": "quit"}) + "\n")
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rotated(names: list[str], index: int) -> list[str]:
    shift = index % len(names)
    return names[shift:] + names[:shift]


def measure_sync(workers: dict[str, Worker], rounds: int, batch: int) -> dict[str, Any]:
    names = list(workers)
    for name in names:  # warm-up: connections, lazy imports, integration set-up
        workers[name].ask(mode="sync", variant=name, calls=max(5, batch // 10))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(rounds):
        for name in rotated(names, index):
            runs[name].append(workers[name].ask(mode="sync", variant=name, calls=batch))
    variants: dict[str, Any] = {}
    raw = runs[RAW_SYNC]
    for name in names:
        cpu = [r["cpu_ms_per_call"] for r in runs[name]]
        variants[name] = {
            "calls": sum(int(r["calls"]) for r in runs[name]),
            "p50_ms": median([r["p50_ms"] for r in runs[name]]),
            "cpu_ms_per_call": median(cpu),
            "added_cpu_ms_per_call": median(
                [c - r["cpu_ms_per_call"] for c, r in zip(cpu, raw, strict=True)]
            ),
            "added_p50_ms": median(
                [a["p50_ms"] - r["p50_ms"] for a, r in zip(runs[name], raw, strict=True)]
            ),
            "cpu_efficiency_vs_raw": median(
                [r["cpu_ms_per_call"] / c for c, r in zip(cpu, raw, strict=True)]
            ),
        }
    return {"rounds": rounds, "batch": batch, "baseline": RAW_SYNC, "variants": variants}


def measure_async(
    workers: dict[str, Worker], rounds: int, warmup: float, window: float
) -> dict[str, Any]:
    names = list(workers)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(rounds):
        for name in rotated(names, index):
            runs[name].append(
                workers[name].ask(
                    mode="async",
                    variant=name,
                    concurrency=ASYNC_CONCURRENCY,
                    warmup=warmup,
                    window=window,
                )
            )
    raw = runs[RAW_ASYNC]
    variants: dict[str, Any] = {}
    for name in names:
        cpu = [r["cpu_ms_per_request"] for r in runs[name]]
        variants[name] = {
            "requests": sum(int(r["requests"]) for r in runs[name]),
            "req_per_s": median([r["req_per_s"] for r in runs[name]]),
            "cpu_ms_per_request": median(cpu),
            "cpu_efficiency_vs_raw": median(
                [r["cpu_ms_per_request"] / c for c, r in zip(cpu, raw, strict=True)]
            ),
            "req_per_s_vs_raw": median(
                [a["req_per_s"] / r["req_per_s"] for a, r in zip(runs[name], raw, strict=True)]
            ),
        }
    return {
        "concurrency": ASYNC_CONCURRENCY,
        "rounds": rounds,
        "warmup_s": warmup,
        "window_s": window,
        "baseline": RAW_ASYNC,
        "variants": variants,
    }


def proxy_bench() -> ModuleType:
    """``benchmarks/proxy/run.py`` as a module: its wrk driver and server commands."""
    spec = importlib.util.spec_from_file_location("proxy_bench", HERE.parent / "proxy" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def litellm_proxy_config(folder: Path, upstream: str, master_key: str) -> Path:
    config = folder / "litellm_config.yaml"
    deployment = {"model": LITELLM_PROXY_MODEL, "api_key": "sk-bench", "api_base": upstream}
    config.write_text(
        json.dumps(
            {
                "model_list": [{"model_name": MODEL, "litellm_params": deployment}],
                "general_settings": {"master_key": master_key},
            }
        )
    )
    return config


@contextlib.contextmanager
def started(
    bench: ModuleType, commands: dict[str, tuple[list[str], dict[str, str] | None]]
) -> Iterator[dict[str, tuple[Any, int, float, float]]]:
    servers: dict[str, tuple[Any, int, float, float]] = {}
    try:
        for name, (command, env) in commands.items():
            port = bench.free_port()
            process, took = bench.start(
                [part.replace("{port}", str(port)) for part in command],
                f"http://127.0.0.1:{port}/health/liveliness",
                env,
            )
            servers[name] = (process, port, took, bench.rss_mb(process.pid))
        yield servers
    finally:
        for process, *_ in servers.values():
            bench.stop(process)


def measure_proxy(
    args: argparse.Namespace, fake: FakeProcess, folder: Path, venv: Path | None
) -> dict[str, Any]:
    if args.skip_proxy:
        return {"available": False, "reason": "--skip-proxy"}
    if shutil.which("wrk") is None:
        return {"available": False, "reason": "wrk is not installed (apt-get install -y wrk)"}
    bench = proxy_bench()
    rounds, duration = (1, 1) if args.quick else (3, 5)
    script, _ = bench.make_body(folder)
    config = bench.tracking_config(folder, fake.api_base)
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        name: (command, None)
        for name, command in bench.server_commands(folder, fake.api_base, config).items()
    }
    if venv is not None:
        litellm_config = litellm_proxy_config(folder, fake.api_base, bench.MASTER_KEY)
        commands["litellm proxy"] = (
            [
                *(str(venv / "bin" / "litellm"), "--config", str(litellm_config)),
                *("--host", "127.0.0.1", "--port", "{port}", "--num_workers", "1"),
            ],
            LITELLM_ENV,
        )
    runs: dict[str, list[dict[str, float]]] = {}
    with started(bench, commands) as servers:
        targets = {
            "fake upstream": (fake.process, fake.port),
            **{name: (process, port) for name, (process, port, _, _) in servers.items()},
        }
        for process, port in targets.values():  # warm-up
            bench.wrk(f"http://127.0.0.1:{port}/v1/images/edits", script, 16, 1, process.pid)
        for index in range(rounds):
            for connections in (16, 64):
                for name in rotated(list(targets), index):
                    process, port = targets[name]
                    url = f"http://127.0.0.1:{port}/v1/images/edits"
                    figures = bench.wrk(url, script, connections, duration, process.pid)
                    runs.setdefault(f"{name} c{connections}", []).append(figures)
        startup = {name: (took, idle) for name, (_, _, took, idle) in servers.items()}
    results: dict[str, Any] = {}
    for key, figures in runs.items():
        name = key.rsplit(" c", 1)[0]
        took, idle = startup.get(name, (None, None))
        results[key] = {
            field: median([f[field] for f in figures])
            for field in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")
        }
        results[key].update(start_s=took, idle_rss_mb=idle, rounds=len(figures))
    ratios: dict[str, dict[str, float]] = {}
    pairs = [("tracking serve", "minimal forwarder")]
    if venv is not None:
        pairs += [("litellm proxy", "minimal forwarder"), ("tracking serve", "litellm proxy")]
    for connections in (16, 64):
        cell = ratios.setdefault(f"c{connections}", {})
        for top, bottom in pairs:
            a, b = f"{top} c{connections}", f"{bottom} c{connections}"
            cell[f"{top} / {bottom} req/s"] = median(bench.round_ratios(runs, a, b, "rps"))
            cell[f"{top} / {bottom} p99"] = median(bench.round_ratios(runs, a, b, "p99_ms"))
    return {
        "available": True,
        "rounds": rounds,
        "duration_s": duration,
        "litellm_proxy_model": LITELLM_PROXY_MODEL if venv is not None else None,
        "targets": results,
        "ratios": ratios,
    }


def print_sdk(title: str, section: dict[str, Any], fields: list[tuple[str, str]]) -> None:
    rows = []
    for name, figures in section["variants"].items():
        if figures.get("available") is False:
            rows.append([name, "not available", *([None] * (len(fields) - 1))])
        else:
            rows.append([name, *(figures[key] for key, _ in fields)])
    print_table(title, ["variant", *(label for _, label in fields)], rows)


def print_proxy(section: dict[str, Any]) -> None:
    if not section["available"]:
        print(f"\nproxy: not measured: {section['reason']}")
        return
    rows = [
        [name, f["rps"], f["p50_ms"], f["p99_ms"], f["cpu_ms_per_request"], f["errors"]]
        for name, f in section["targets"].items()
    ]
    print_table(
        f"Proxy under wrk (medians of {section['rounds']} interleaved rounds of "
        f"{section['duration_s']} s)",
        ["target", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "errors"],
        rows,
    )
    for cell, ratios in section["ratios"].items():
        for pair, value in ratios.items():
            print(f"{cell}: {pair}: {value:.2f}x")


def main() -> None:
    args = parse_args("vs_litellm", __doc__.splitlines()[0], extra=_options, script=SCRIPT)
    pinning = pin_self(args)
    version = litellm_version()
    venv, reason = litellm_venv(args)
    if reason is not None:
        print(f"LiteLLM side skipped: {reason}", flush=True)
    sync_rounds, batch = (2, 20) if args.quick else (15, 100)
    async_rounds, warmup, window = (1, 0.1, 0.3) if args.quick else (5, 0.3, 1.5)
    core = CLIENT_CORE if can_pin(args) else -1
    with workdir() as folder, fake_upstream(args) as fake:
        png = folder / "image.png"
        png.write_bytes(make_png(143))
        ours = Worker(sys.executable, "ours", fake, png, folder, core)
        theirs = (
            Worker(venv / "bin" / "python", "litellm", fake, png, folder, core)
            if venv is not None
            else None
        )
        try:
            sync_workers = {RAW_SYNC: ours, OURS: ours, OURS_ALL: ours}
            async_workers = {RAW_ASYNC: ours, OURS: ours, OURS_ALL: ours}
            if theirs is not None:
                sync_workers[LITELLM] = async_workers[LITELLM] = theirs
            sync = measure_sync(sync_workers, sync_rounds, batch)
            asynchronous = measure_async(async_workers, async_rounds, warmup, window)
        finally:
            ours.close()
            if theirs is not None:
                theirs.close()
        proxy = measure_proxy(args, fake, folder, venv)
    if venv is None:
        for section in (sync, asynchronous):
            section["variants"][LITELLM] = {"available": False, "reason": reason}
    print_sdk(
        f"Sync SDK ({sync_rounds} rounds x {batch} calls, interleaved; {pinning})",
        sync,
        [
            ("p50_ms", "p50 ms"),
            ("cpu_ms_per_call", "CPU ms/call"),
            ("added_cpu_ms_per_call", "added CPU"),
            ("cpu_efficiency_vs_raw", "x raw CPU"),
        ],
    )
    print_sdk(
        f"Async SDK, concurrency {ASYNC_CONCURRENCY} ({async_rounds} rounds x {window} s)",
        asynchronous,
        [
            ("req_per_s", "req/s"),
            ("cpu_ms_per_request", "CPU ms/req"),
            ("cpu_efficiency_vs_raw", "x raw CPU"),
            ("req_per_s_vs_raw", "x raw req/s"),
        ],
    )
    print_proxy(proxy)
    load = os.getloadavg()[0]
    print(f"\nload average (1 min) at the end: {load:.2f} on {os.cpu_count()} cores")
    write_json(
        args.out,
        "vs_litellm",
        args,
        {
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "pinning": pinning,
            "load_average_end": load,
            "model": MODEL,
            "litellm": {
                "available": venv is not None,
                "reason": reason,
                "version": version,
                "venv": str(venv) if venv is not None else None,
            },
            "sync": sync,
            "async": asynchronous,
            "proxy": proxy,
        },
        script=SCRIPT,
    )


if __name__ == "__main__":
    main()
