"""What every benchmark here shares: arguments, the machine, the fake upstream, tables and JSON.

Each benchmark is one command (``python benchmarks/<name>.py``), measures the project against a
baseline doing the same work without it *in the same run*, prints a table and writes JSON under
``benchmarks/results/``. The machines are small and noisy, so figures are ratios and paired
differences, never absolute targets. On a machine with two or more cores the load generator is
pinned to core 0 and the fake upstream (a separate process, started with ``taskset``) to core 1,
so they never steal each other's CPU and the process CPU we report is the client's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLIENT_CORE = 0
FAKE_CORE = 1
#: The integrations the "all on" variants register by name.
ALL_INTEGRATIONS = ("prometheus", "otel", "sql", "structlog")


def parse_args(
    name: str,
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
    script: str | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes; ``extra`` adds a benchmark's own."""
    parser = argparse.ArgumentParser(
        prog=script or f"benchmarks/{name}.py", description=description
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: a smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / f"{name}.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare two result files."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for package in ("httpx", "aiohttp", "image-edit-tracking"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def can_pin(args: argparse.Namespace) -> bool:
    return (
        not args.no_pin
        and (os.cpu_count() or 1) >= 2
        and hasattr(os, "sched_setaffinity")
        and shutil.which("taskset") is not None
    )


def pin_self(args: argparse.Namespace) -> str:
    """Pin this process (the load generator) to its core; say what was done."""
    if not can_pin(args):
        return "not pinned"
    os.sched_setaffinity(0, {CLIENT_CORE})
    return f"load generator on core {CLIENT_CORE}, fake upstream on core {FAKE_CORE} (taskset)"


def taskset_prefix(args: argparse.Namespace, core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if can_pin(args) else []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class FakeProcess:
    """The canned fake upstream in its own process (``tracking fake-openai --canned``)."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def edits_url(self) -> str:
        return f"{self.api_base}/images/edits"

    def cpu_seconds(self) -> float:
        """User + system CPU the fake has used so far (Linux /proc), 0.0 where unknown."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def fake_upstream(args: argparse.Namespace) -> Iterator[FakeProcess]:
    port = free_port()
    command = [
        *taskset_prefix(args, FAKE_CORE),
        sys.executable,
        "-m",
        "tracking.cli",
        "fake-openai",
        "--canned",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fake = FakeProcess(process, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake upstream did not start") from None
                time.sleep(0.05)
        yield fake
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_png(kilobytes: int) -> bytes:
    """A valid PNG of roughly the given size (incompressible noise), the same every run."""
    from PIL import Image

    side = max(8, int((kilobytes * 1024 / 3) ** 0.5))
    noise = random.Random(12).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), noise).save(out, format="PNG", compress_level=1)
    return out.getvalue()


#: The parameters every SDK call in the benchmarks sends (apart from the image and api_base).
CALL_PARAMS: dict[str, Any] = {
    "model": "gpt-image-2",
    "prompt": "Add a red hat to the person in the image",
    "size": "1024x1024",
    "quality": "low",
    "user": "bench-user",
    "api_key": "sk-bench",
}


def raw_request(png: bytes, api_base: str) -> tuple[bytes, dict[str, str]]:
    """The exact multipart body and headers the SDK sends, built once, for the raw baselines."""
    from tracking.providers import get_provider
    from tracking.request import parse_call

    request, options = parse_call(image=png, api_base=api_base, **CALL_PARAMS)
    prepared = get_provider(request.provider).prepare(request, options)
    return prepared.body, dict(prepared.headers)


@dataclass
class Integrations:
    """The "all integrations on" set-up, or why it is not available in this tree."""

    available: bool
    reason: str | None = None
    names: tuple[str, ...] = ()
    tracer_flush: Callable[[], object] | None = None
    closers: list[Callable[[], object]] = field(default_factory=list)
    instances: list[Any] = field(default_factory=list)

    def on(self) -> None:
        import tracking

        tracking.success_callback[:] = list(self.names)
        tracking.failure_callback[:] = []

    @staticmethod
    def off() -> None:
        import tracking

        tracking.success_callback[:] = []
        tracking.failure_callback[:] = []

    def flush(self) -> None:
        """Deliver what the background sinks hold, so its CPU is charged to the run that made it."""
        import tracking

        flush = getattr(tracking, "flush", None)
        if callable(flush):
            flush(10.0)
        else:  # before the full bus is merged: flush each integration directly
            for integration in self.instances:
                integration.flush(10.0)
        if self.tracer_flush is not None:
            self.tracer_flush()

    def close(self) -> None:
        import tracking

        self.off()
        shutdown = getattr(tracking, "shutdown", None)
        with contextlib.suppress(Exception):
            if callable(shutdown):
                shutdown()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()


def all_integrations(workdir: Path) -> Integrations:
    """Register prometheus, otel, sql (background, a tmp SQLite file) and structlog by name.

    OpenTelemetry gets a real SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter
    that discards, set as the global provider (the library only ever uses the global one).
    structlog renders JSON lines to /dev/null. When any module is missing (the integrations are
    not merged yet, or an extra is not installed), the variant is reported as not available.
    """
    import tracking
    from tracking import bus
    from tracking.errors import TrackingError

    os.environ["TRACKING_DATABASE_URL"] = f"sqlite:///{workdir / 'ledger.db'}"
    closers: list[Callable[[], object]] = []
    try:
        import structlog
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError as exc:
        return Integrations(False, f"{exc.name} is not installed")

    class DiscardingExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
    trace.set_tracer_provider(provider)
    closers.append(provider.shutdown)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run, closed in close()
    closers.append(devnull.close)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=devnull),
        cache_logger_on_first_use=True,
    )
    missing: list[str] = []
    instances: list[Any] = []
    for name in ALL_INTEGRATIONS:
        try:
            instances.append(bus.resolve(name))
        except (TrackingError, ImportError, AttributeError) as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        for closer in closers:
            closer()
        return Integrations(False, "missing: " + "; ".join(missing))
    tracking.success_callback[:] = []
    return Integrations(
        True, None, ALL_INTEGRATIONS, lambda: provider.force_flush(10_000), closers, instances
    )


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as path:
        yield Path(path)


def timed_calls(
    call: Callable[[], object], calls: int, flush: Callable[[], object] | None = None
) -> tuple[list[float], float]:
    """Each call's latency (s) and the process CPU per call (s), ``flush`` inside the window."""
    samples = []
    cpu_started = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    if flush is not None:
        flush()
    return samples, (time.process_time() - cpu_started) / calls


@dataclass
class Window:
    """What one window of :func:`keep_in_flight` saw."""

    requests: int
    elapsed: float
    cpu: float


async def keep_in_flight(
    send: Callable[[], Awaitable[object]],
    concurrency: int,
    warmup: float,
    window: float,
    flush: Callable[[], object] | None = None,
    window_started: Callable[[], object] | None = None,
) -> Window:
    """Keep ``concurrency`` calls in flight; count completions and CPU over ``window`` seconds,
    or longer, until ``concurrency`` calls have completed in it: a window in which fewer ended
    measures the calls' latency, not a rate (a ``--quick`` window of 0.3 s on a loaded machine
    could end with none).

    ``flush`` runs at the end of the window, inside the measured time and CPU (it blocks the
    loop, so nothing new starts while background sinks drain).
    """
    completed = 0
    done_before: int | None = None  # the count when the window started
    stop = False
    enough = asyncio.Event()  # ``concurrency`` calls completed in the window

    async def worker() -> None:
        nonlocal completed
        while not stop:
            await send()
            completed += 1
            if done_before is not None and completed - done_before >= concurrency:
                enough.set()

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    if window_started is not None:
        window_started()
    done_before, cpu_before = completed, time.process_time()
    started = time.perf_counter()
    await asyncio.sleep(window)
    waiting = asyncio.ensure_future(enough.wait())
    await asyncio.wait([waiting, *workers], return_when=asyncio.FIRST_COMPLETED)  # or one failed
    waiting.cancel()
    done = completed - done_before
    if flush is not None:
        flush()
    measured = Window(done, time.perf_counter() - started, time.process_time() - cpu_before)
    stop = True
    await asyncio.gather(*workers)
    return measured


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_json(
    path: Path,
    benchmark: str,
    args: argparse.Namespace,
    payload: dict[str, Any],
    script: str | None = None,
) -> None:
    document = {
        "benchmark": benchmark,
        "command": " ".join(["python", script or f"benchmarks/{benchmark}.py", *sys.argv[1:]]),
        "quick": bool(args.quick),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"\nresults written to {path}")
