"""Proxy benchmark, one command: ``.venv/bin/python benchmarks/proxy/run.py [--duration 5]``.

wrk (Debian's package) posts a ~143 KB PNG as multipart at concurrency 16 and 64 to, in the same
run: the canned fake upstream directly, a minimal forwarding proxy (``minimal_forwarder.py``:
raw ASGI + aiohttp + multipart parse + one SQLite WAL row per request) as the ceiling, and
``tracking serve`` (one worker, full tracking: router, durable SQLite ledger, Prometheus) in
front of the same fake. The three run side by side and are measured in interleaved rounds
(``--rounds``, each target once per round and concurrency), so a change in the machine's load
hits all of them alike; figures are medians over the rounds, and the ratio to the minimal
forwarder is the median of the per-round ratios. Reported per target: requests/s, p50/p99
latency, server CPU per request (from /proc), idle memory and start-up time. Everything runs on
loopback.

``--against REV`` adds a fourth target: ``tracking serve`` from the git revision ``REV`` (its
files extracted with ``git archive`` into a temporary folder and put first on ``PYTHONPATH``),
measured in the same interleaved rounds, with the ratio of this tree to it: the A/B figure a cut
is kept or dropped by.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
MASTER_KEY = "sk-bench-master"
#: Targets against the minimal forwarder, at concurrency 16 and 64 alike.
TARGET_RPS_RATIO = 0.75
TARGET_P99_RATIO = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tracking() -> list[str]:
    script = Path(sys.executable).parent / "tracking"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracking.cli"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(command: list[str], health: str, env: dict[str, str] | None = None):
    began = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{command} exited with {process.returncode}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.01)
    return process, time.perf_counter() - began


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_body(folder: Path, key: str = MASTER_KEY, name: str = "post") -> tuple[Path, str]:
    """The request body (a ~143 KB PNG and the form's fields) and a wrk script posting it
    with ``key``."""
    from PIL import Image

    side = 218  # random RGB pixels barely compress: about 143 KB of PNG
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    png = io.BytesIO()
    image.save(png, format="PNG")
    boundary = "benchboundary7f3a"
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            "gpt-image-2\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
            "Add a red hat\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="size"\r\n\r\n'
            "1024x1024\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="quality"\r\n\r\n'
            "low\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'.encode(),
            png.getvalue(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    path = folder / "body.bin"
    path.write_bytes(body)
    script = folder / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f'local f = io.open("{path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    print(f"request body: {len(body) / 1024:.0f} KB (PNG {len(png.getvalue()) / 1024:.0f} KB)")
    return script, boundary


def _ms(text: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)\b", text)
    if found is None:
        return float("nan")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (``tracking serve --workers N``: uvicorn's workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += tree_cpu_seconds(int(child))
            except (OSError, IndexError):  # exited in between
                continue
    return total


def wrk(
    url: str, script: Path, connections: int, duration: int, pid: int, tree: bool = False
) -> dict[str, float]:
    """One wrk run; the server's CPU (with ``tree``, its children's too) per request."""
    cpu_of = tree_cpu_seconds if tree else cpu_seconds
    before = cpu_of(pid)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    command += ["-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = cpu_of(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # The latency distribution's own lines: "72.50%" in the thread stats above must not match.
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "cpu_ms_per_request": 1000 * cpu / max(1, requests),
        "errors": float(errors.group(1)) if errors else 0.0,
        "requests": float(requests),
    }


def tracking_config(
    folder: Path,
    upstream: str,
    database_url: str | None = None,
    router_settings: dict[str, str] | None = None,
) -> Path:
    """A one-deployment ``tracking serve`` config in front of ``upstream`` with full tracking
    (the ledger in ``database_url``, by default a SQLite file in ``folder``)."""
    config = folder / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "gpt-image-2",
                        "litellm_params": {
                            "model": "gpt-image-2",
                            "api_key": "sk-bench",
                            "api_base": upstream,
                        },
                    }
                ],
                # Full tracking: the router, the durable SQLite ledger and Prometheus are the
                # proxy's defaults; structlog (one JSON line per call) is left out here.
                "general_settings": {
                    "master_key": MASTER_KEY,
                    "database_url": database_url or f"sqlite:///{folder / 'ledger.db'}",
                    # beside the ledger by default; with another database it would be
                    # ./tracking-images in the working directory (the repository)
                    "image_store": {"path": str(folder / "images")},
                },
                "router_settings": router_settings or {},
            }
        )
    )
    return config


def server_commands(folder: Path, upstream: str, config: Path) -> dict[str, list[str]]:
    """The minimal forwarder and ``tracking serve`` (``{port}`` is filled in at start)."""
    return {
        "minimal forwarder": [
            sys.executable,
            str(HERE / "minimal_forwarder.py"),
            "{port}",
            f"{upstream}/images/edits",
            str(folder / "minimal.db"),
        ],
        "tracking serve": [
            *tracking(),
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
        ],
    }


def extract_revision(revision: str, folder: Path) -> Path:
    """The repository's files at ``revision`` (``git archive``), in a folder under ``folder``.

    Archived from the repository's root: run in a subdirectory, ``git archive`` takes only that
    subdirectory (until 2026-12-04 this extracted ``benchmarks/proxy`` alone, no ``tracking``).
    """
    target = folder / "against"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent.parent), "archive", "--format=tar", revision],
        capture_output=True,
    )
    if archive.returncode != 0:
        reason = archive.stderr.decode(errors="replace").strip()
        raise SystemExit(f"--against {revision}: git archive failed: {reason}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def revision_python(tree: Path) -> tuple[list[str], dict[str, str]]:
    """The interpreter command and environment that import ``tracking`` from ``tree``.

    ``PYTHONPATH`` alone is not enough: ``python -m`` and ``python -c`` put the current
    directory first on ``sys.path``, and from the repository's root that is this tree's own
    ``tracking/`` (until 2026-12-04 ``--against`` measured this tree twice). ``-P`` (Python
    3.11) leaves it out; a probe run the same way checks where ``tracking`` comes from.
    """
    command, environment = [sys.executable, "-P"], {"PYTHONPATH": str(tree)}
    probe = subprocess.run(
        [*command, "-c", "import tracking; print(tracking.__file__)"],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
    )
    where = Path(probe.stdout.strip() or "?").resolve()
    if probe.returncode != 0 or tree.resolve() not in where.parents:
        raise SystemExit(f"--against: tracking is imported from {where}, not from {tree}")
    return command, environment


def revision_serve(tree: Path, folder: Path, upstream: str) -> tuple[list[str], dict[str, str]]:
    """``tracking serve`` from ``tree`` (``{port}`` filled in at start), with a config and a
    ledger file of its own: a ledger migrated by newer code is refused by older code."""
    own = folder / "revision"
    own.mkdir(exist_ok=True)
    serve = server_commands(own, upstream, tracking_config(own, upstream))["tracking serve"]
    python, environment = revision_python(tree)
    return [*python, "-m", "tracking.cli", *serve[len(tracking()) :]], environment


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def round_ratios(
    runs: dict[str, list[dict[str, float]]], new: str, old: str, field: str
) -> list[float]:
    """``field`` of target ``new`` over target ``old``, round by round (same rounds); NaN for a
    round in which ``old`` measured 0 (no request ended in its window)."""
    return [
        a[field] / b[field] if b[field] else float("nan")
        for a, b in zip(runs[new], runs[old], strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run tracking serve from this git revision and compare this tree with it",
    )
    parser.add_argument(
        "--two-workers",
        action="store_true",
        help="instead: two workers with PostgreSQL and Redis, and a budget exhausted under load "
        "(benchmarks/proxy/two_workers.py)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    if args.two_workers:
        import two_workers

        shared = two_workers.run(sys.modules[__name__], args.rounds, args.duration)
        two_workers.report(shared)
        if args.json:
            args.json.write_text(json.dumps(shared, indent=2) + "\n")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    script, _ = make_body(folder)
    # Before any process starts: a revision that cannot be extracted leaves nothing running.
    against = extract_revision(args.against, folder) if args.against else None

    fake_port = free_port()
    fake, _ = start(
        [*tracking(), "fake-openai", "--canned", "--port", str(fake_port)],
        f"http://127.0.0.1:{fake_port}/health",
    )
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    config = tracking_config(folder, upstream)
    commands = server_commands(folder, upstream, config)
    environments: dict[str, dict[str, str]] = {}
    baseline = f"tracking serve @{args.against}"
    if against is not None:
        commands[baseline], environments[baseline] = revision_serve(against, folder, upstream)
    servers: dict[str, tuple[subprocess.Popen[bytes], int, float, float]] = {
        "fake upstream": (fake, fake_port, float("nan"), rss_mb(fake.pid))
    }
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        for name, command in commands.items():
            port = free_port()
            process, started = start(
                [part.replace("{port}", str(port)) for part in command],
                f"http://127.0.0.1:{port}/health/liveliness",
                environments.get(name),
            )
            servers[name] = (process, port, started, rss_mb(process.pid))
        for process, port, _, _ in servers.values():
            wrk(f"http://127.0.0.1:{port}/v1/images/edits", script, 16, 1, process.pid)  # warm-up
        for _ in range(args.rounds):
            for connections in (16, 64):
                for name, (process, port, _, _) in servers.items():
                    url = f"http://127.0.0.1:{port}/v1/images/edits"
                    figures = wrk(url, script, connections, args.duration, process.pid)
                    runs.setdefault(f"{name} c{connections}", []).append(figures)
    finally:
        for process, *_ in servers.values():
            stop(process)
    results: dict[str, dict[str, float]] = {}
    for key, figures in runs.items():
        name = key.rsplit(" c", 1)[0]
        _, _, started, idle = servers[name]
        results[key] = {
            field: median([f[field] for f in figures])
            for field in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")
        }
        results[key].update(start_s=started, idle_rss_mb=idle, rounds=len(figures))
    print(
        f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s"
    )
    print(
        f"{'target':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
        f"{'errors':>8}{'idle MB':>9}{'start s':>9}"
    )
    for name, f in results.items():
        print(
            f"{name:<26}{f['rps']:>9.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
            f"{f['cpu_ms_per_request']:>12.3f}{f['errors']:>8.0f}{f['idle_rss_mb']:>9.1f}"
            f"{f['start_s']:>9.2f}"
        )
    for connections in (16, 64):
        ours, forwarder = f"tracking serve c{connections}", f"minimal forwarder c{connections}"
        ratios = round_ratios(runs, ours, forwarder, "rps")
        p99_runs = round_ratios(runs, ours, forwarder, "p99_ms")
        p99 = median(p99_runs)
        # wrk's connections are a closed loop: the mean latency is connections / req/s (Little),
        # so the p99 ratio is 1 / the req/s ratio times this one: p99 over the mean, ours over
        # the forwarder's (docs/benchmarks.md, the eighteenth session)
        shape = [p * r for p, r in zip(p99_runs, ratios, strict=True)]
        met = median(ratios) >= TARGET_RPS_RATIO and p99 <= TARGET_P99_RATIO
        results[f"ratio c{connections}"] = {  # type: ignore[assignment]
            "median": median(ratios),
            "runs": ratios,
            "p99_ratio": p99,
            "p99_runs": p99_runs,
            "p99_over_mean_ratio": median(shape),
            "target_met": met,
        }
        print(
            f"tracking serve / minimal forwarder at c{connections}: {median(ratios):.2f}x req/s "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}), {p99:.2f}x p99 (rounds: "
            f"{', '.join(f'{r:.2f}' for r in p99_runs)}; p99 over the mean latency "
            f"{median(shape):.2f}x the forwarder's); target >= {TARGET_RPS_RATIO}x req/s and "
            f"<= {TARGET_P99_RATIO}x p99: {'met' if met else 'missed'}"
        )
    if args.against:
        for connections in (16, 64):
            ours, old = f"tracking serve c{connections}", f"{baseline} c{connections}"
            rps = median(round_ratios(runs, ours, old, "rps"))
            cpu = median(round_ratios(runs, ours, old, "cpu_ms_per_request"))
            results[f"against c{connections}"] = {  # type: ignore[assignment]
                "rps_ratio": rps,
                "cpu_ratio": cpu,
                "revision_root": str(against),
            }
            print(
                f"this tree / {args.against} at c{connections}: {rps:.3f}x req/s, "
                f"{cpu:.3f}x CPU per request (medians of per-round ratios)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
