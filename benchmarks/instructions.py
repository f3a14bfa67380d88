"""Instructions per call under Valgrind's callgrind: the A/B figure the machine's load cannot move.

CPU time on these shared machines moves by 10 to 50% from one run to the next; the number of
instructions a process executes does not (the same code, inputs and environment give the same
count within about 2%, whatever else the machine runs). So a cut to this project's own code is
best judged here first, then confirmed by the timing benchmarks. Two parts, each in one run:

* ``sdk``: one interpreter under callgrind makes the same sync calls as
  ``benchmarks/sdk_overhead.py`` (a raw pooled ``httpx.Client`` POST of the exact multipart
  bytes the SDK sends, the baseline; ``tracking.image_edit`` with no integrations; with each of
  the four integrations on its own; with all four). Before each variant's calls the counters
  are zeroed and after them (background sinks flushed) dumped, so a variant is charged the
  instructions of every thread of the process, its sinks' writer threads included.
* ``async``: the same in one event loop with 32 calls in flight, as
  ``benchmarks/async_throughput.py``: a bare ``aiohttp.ClientSession`` posting the same bytes (the
  baseline), ``tracking.aimage_edit`` with no integrations and with all four.
* ``proxy``: ``tracking serve`` (full tracking, as ``benchmarks/proxy/run.py``) and the minimal
  durable forwarder, each under callgrind with the counters off until a warm-up is done; then a
  client outside Valgrind posts the same 143 KB image ``--requests`` times at concurrency 8.
* ``stream``: the same two servers, the same image posted with ``stream=true`` and
  ``partial_images=1`` (the canned fake streams one partial image and the completed event) one
  call at a time, ``--stream-requests`` times, each answer read whole: the streamed path of
  ``benchmarks/streaming_first_event.py``. The forwarder reads the upstream's event stream and
  answers its bytes in one body after its ledger row (it does not parse events); ``tracking
  serve`` relays each event as it arrives, the completed one with the call's cost. The count is
  the whole call's, what comes after the first event included.

``--against REV`` measures the same parts with ``tracking`` from git revision ``REV`` (extracted
with ``git archive``) in the same run and reports this tree / ``REV``.

Instructions are not time: they leave out the kernel's work for system calls, cache misses and
waits, and a copy of the request body (``rep movsb``) counts about one instruction per byte.
They answer "does our code execute less?", not "how many requests per second?".
Needs ``valgrind`` (Debian's package); ``--quick`` makes a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from _harness import (
    CALL_PARAMS,
    Integrations,
    all_integrations,
    fake_upstream,
    make_png,
    parse_args,
    print_table,
    raw_request,
    workdir,
    write_json,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "proxy"))
import run as proxy_run  # noqa: E402 - benchmarks/proxy/run.py: the proxy benchmark's pieces

BASELINE = "raw httpx (same bytes)"
NO_INTEGRATIONS = "tracking, no integrations"
ALL_ON = "tracking, all integrations"
FORWARDER = "minimal forwarder"
SERVE = "tracking serve"
PROXY_CONCURRENCY = 8
STREAM_FIELDS = {"stream": "true", "partial_images": "1"}
ASYNC_CONCURRENCY = 32
ASYNC_BASELINE = "raw aiohttp (same bytes)"
WARMUP_CALLS = 30


def _callgrind(out: Path, *, counting: bool = True) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        f"--instr-atstart={'yes' if counting else 'no'}",
    ]


def _control(pid: int, *command: str) -> None:
    subprocess.run(
        ["callgrind_control", *command, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _dumped(path: Path) -> int:
    """The instruction total of one callgrind dump (waits for the file to be complete)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise SystemExit(f"callgrind wrote no totals to {path}")


def _counted(
    run: Callable[[int], object], calls: int, enabled: Integrations | None, dump: Path
) -> float:
    """Instructions per call of ``run(calls)`` in this process (every thread), after a warm-up,
    with ``enabled``'s integrations on (None: off) and their sinks flushed inside."""
    if enabled is None:
        Integrations.off()
    else:
        enabled.on()
    # Started with instrumentation off (Python's start and imports run several times faster
    # so): it is turned on for the warm-up, whose counts are zeroed before the measured calls.
    _control(os.getpid(), "--instr=on")
    run(WARMUP_CALLS)
    if enabled is not None:
        enabled.flush()
    _control(os.getpid(), "--zero")
    run(calls)
    if enabled is not None:
        enabled.flush()
    _control(os.getpid(), "--dump")
    return _dumped(dump) / calls


# -- the sdk part: runs inside valgrind (``--inside-sdk``) -------------------------------------


@contextlib.contextmanager
def _calls_set_up() -> Iterator[tuple[Path, Any, bytes, bytes, dict[str, str], dict[str, Any]]]:
    """A scratch folder, the canned fake, the image, the raw request's body and headers, and
    the SDK's call parameters, for a part measured inside valgrind."""
    with workdir() as tmp, fake_upstream(argparse.Namespace(no_pin=True)) as fake:
        png = make_png(143)
        body, headers = raw_request(png, fake.api_base)
        yield tmp, fake, png, body, headers, {**CALL_PARAMS, "api_base": fake.api_base}


def inside_sdk(calls: int, variants: list[str], result: Path, out: Path) -> None:
    import tracking

    pid = os.getpid()
    figures: dict[str, float] = {}
    with _calls_set_up() as (tmp, fake, png, body, headers, params):
        import httpx

        client = httpx.Client()

        def raw() -> None:
            client.post(fake.edits_url, content=body, headers=headers).raise_for_status()

        def sdk() -> None:
            tracking.image_edit(image=png, **params)

        table: dict[str, tuple[Callable[[], None], Integrations | None]] = {
            BASELINE: (raw, None),
            NO_INTEGRATIONS: (sdk, None),
        }
        # Importing the integrations' libraries under valgrind takes a while: only when asked.
        integrations = Integrations(False)
        if not variants or any(v not in table for v in variants):
            integrations = all_integrations(tmp)
        if integrations.available:
            table[ALL_ON] = (sdk, integrations)
            for name in integrations.names:
                table[f"tracking, only {name}"] = (sdk, replace(integrations, names=(name,)))
        for dump, name in enumerate((v for v in table if v in variants or not variants), 1):
            call, enabled = table[name]

            def run(count: int, call: Callable[[], None] = call) -> None:
                for _ in range(count):
                    call()

            figures[name] = _counted(run, calls, enabled, Path(f"{out}.{pid}.{dump}"))
        client.close()
        integrations.close()
    result.write_text(json.dumps({"figures": figures, "tracking": tracking.__file__}))


# -- the async part: runs inside valgrind (``--inside-async``) ---------------------------------


async def _session() -> Any:
    import aiohttp

    return aiohttp.ClientSession()


async def _in_flight(send: Callable[[], Any], calls: int) -> None:
    gate = asyncio.Semaphore(ASYNC_CONCURRENCY)

    async def one() -> None:
        async with gate:
            await send()

    await asyncio.gather(*(one() for _ in range(calls)))


def inside_async(calls: int, variants: list[str], result: Path, out: Path) -> None:
    import aiohttp

    import tracking

    pid = os.getpid()
    figures: dict[str, float] = {}
    with _calls_set_up() as (tmp, fake, png, body, headers, params):
        integrations = Integrations(False)
        if not variants or ALL_ON in variants:
            integrations = all_integrations(tmp)
        table: dict[str, Integrations | None] = {ASYNC_BASELINE: None, NO_INTEGRATIONS: None}
        if integrations.available:
            table[ALL_ON] = integrations
        for dump, name in enumerate((v for v in table if v in variants or not variants), 1):
            loop = asyncio.new_event_loop()
            session = loop.run_until_complete(_session())

            async def raw(session: aiohttp.ClientSession = session) -> None:
                async with session.post(fake.edits_url, data=body, headers=headers) as answer:
                    await answer.read()
                    answer.raise_for_status()

            async def sdk() -> None:
                await tracking.aimage_edit(image=png, **params)

            send = raw if name == ASYNC_BASELINE else sdk

            def run(count: int, send: Callable[[], Any] = send, loop: Any = loop) -> None:
                loop.run_until_complete(_in_flight(send, count))

            dumped = Path(f"{out}.{pid}.{dump}")
            figures[name] = _counted(run, calls, table[name], dumped)
            loop.run_until_complete(session.close())
            loop.close()
        integrations.close()
    result.write_text(json.dumps({"figures": figures, "tracking": tracking.__file__}))


def sdk_part(
    calls: int, variants: list[str], folder: Path, tree: Path | None, inside: str = "--inside-sdk"
) -> dict[str, float]:
    folder.mkdir()
    result, out = folder / "sdk.json", folder / "sdk"
    command = [
        *_callgrind(out, counting=False),
        sys.executable,
        str(Path(__file__).resolve()),
        inside,
        "--calls",
        str(calls),
        "--result",
        str(result),
        "--dumps",
        str(out),
        "--variants",
        ";".join(variants),
    ]
    environment = dict(os.environ)
    if tree is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(tree), str(HERE)])
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    if finished.returncode != 0 or not result.exists():
        raise SystemExit(f"the sdk part failed:\n{finished.stdout}\n{finished.stderr[-3000:]}")
    written = json.loads(result.read_text())
    root = (tree or HERE.parent).resolve()
    if root not in Path(written["tracking"]).resolve().parents:  # the code meant, not another
        raise SystemExit(f"the sdk part imported tracking from {written['tracking']}, not {root}")
    figures: dict[str, float] = written["figures"]
    return figures


# -- the proxy part -------------------------------------------------------------------------


async def _post(
    url: str, body: bytes, boundary: str, requests: int, concurrency: int = PROXY_CONCURRENCY
) -> None:
    import httpx

    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "authorization": f"Bearer {proxy_run.MASTER_KEY}",
    }
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:

        async def one() -> None:
            async with gate:
                answer = await client.post(url, content=body, headers=headers)
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")

        await asyncio.gather(*(one() for _ in range(requests)))


def _serve_counted(
    name: str,
    command: list[str],
    environment: dict[str, str],
    folder: Path,
    post: tuple[bytes, str],
    requests: int,
    concurrency: int = PROXY_CONCURRENCY,
) -> float:
    """Instructions per request of the server ``command`` starts, for ``post`` (body and
    multipart boundary) sent ``requests`` times after a warm-up, ``concurrency`` at a time."""
    body, boundary = post
    port = proxy_run.free_port()
    out = folder / name.replace(" ", "_").replace("@", "at_")
    process, _ = proxy_run.start(  # Python starts slowly under valgrind: start() waits
        [
            *_callgrind(out, counting=False),
            *(part.replace("{port}", str(port)) for part in command),
        ],
        f"http://127.0.0.1:{port}/health/liveliness",
        environment,
    )
    url = f"http://127.0.0.1:{port}/v1/images/edits"
    try:
        asyncio.run(_post(url, body, boundary, WARMUP_CALLS, concurrency))
        _control(process.pid, "--instr=on")
        asyncio.run(_post(url, body, boundary, requests, concurrency))
        _control(process.pid, "--dump")
        return _dumped(Path(f"{out}.{process.pid}.1")) / requests
    finally:
        proxy_run.stop(process)


def _with_fields(body: bytes, boundary: str, fields: dict[str, str]) -> bytes:
    """``body`` (a multipart form) with ``fields`` added before its first part."""
    added = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    return added + body


def proxy_part(
    requests: int, folder: Path, tree: Path | None, label: str, stream: bool = False
) -> dict[str, float]:
    """Instructions per request of each server (see the module docstring: ``proxy`` and, with
    ``stream``, ``stream``)."""
    _, boundary = proxy_run.make_body(folder)
    body = (folder / "body.bin").read_bytes()
    post = (_with_fields(body, boundary, STREAM_FIELDS) if stream else body, boundary)
    concurrency = 1 if stream else PROXY_CONCURRENCY
    fake_port = proxy_run.free_port()
    fake, _ = proxy_run.start(
        [*proxy_run.tracking(), "fake-openai", "--canned", "--port", str(fake_port)],
        f"http://127.0.0.1:{fake_port}/health",
    )
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    commands = proxy_run.server_commands(
        folder, upstream, proxy_run.tracking_config(folder, upstream)
    )
    plan: dict[str, tuple[list[str], dict[str, str]]] = {
        FORWARDER: (commands[FORWARDER], {}),
        SERVE: (commands[SERVE], {}),
    }
    if tree is not None:
        plan[label] = proxy_run.revision_serve(tree, folder, upstream)
    try:
        return {
            name: _serve_counted(name, argv, environment, folder, post, requests, concurrency)
            for name, (argv, environment) in plan.items()
        }
    finally:
        proxy_run.stop(fake)


# -- the report -----------------------------------------------------------------------------


def report(
    title: str, figures: dict[str, float], baseline: str, against: dict[str, float] | None
) -> dict[str, Any]:
    base = figures[baseline]
    rows, payload = [], {}
    for name, value in figures.items():
        entry: dict[str, Any] = {
            "instructions": round(value),
            "over_baseline": round(value) - round(base),  # the two figures reported, subtracted
            "ratio_to_baseline": round(value / base, 4),
        }
        if against is not None and name in against:
            entry["ratio_to_against"] = round(value / against[name], 4)
        payload[name] = entry
        rows.append(
            [
                name,
                value / 1e6,
                (value - base) / 1e6,
                value / base,
                entry.get("ratio_to_against"),
            ]
        )
    print_table(
        title,
        ["variant", "M instr", f"over {baseline} (M)", "x baseline", "this tree / --against"],
        rows,
    )
    return payload


def main() -> None:
    inside = {"--inside-sdk": inside_sdk, "--inside-async": inside_async}
    if given_inside := [flag for flag in inside if flag in sys.argv]:
        inner = argparse.ArgumentParser()
        inner.add_argument(given_inside[0], action="store_true")
        inner.add_argument("--calls", type=int)
        inner.add_argument("--result", type=Path)
        inner.add_argument("--dumps", type=Path)
        inner.add_argument("--variants", default="")
        given = inner.parse_args()
        wanted = [v for v in given.variants.split(";") if v]
        inside[given_inside[0]](given.calls, wanted, given.result, given.dumps)
        return

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--part", choices=("sdk", "async", "proxy", "stream", "all"), default="all"
        )
        parser.add_argument("--calls", type=int, default=200, help="sync calls per variant")
        parser.add_argument("--requests", type=int, default=300, help="proxy requests per server")
        parser.add_argument(
            "--stream-requests", type=int, default=100, help="streamed calls per server"
        )
        parser.add_argument("--against", metavar="REV", help="also measure this git revision")

    args = parse_args("instructions", __doc__.splitlines()[0], extra=options)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y valgrind)")
    calls, requests = (5, 10) if args.quick else (args.calls, args.requests)
    streamed = 10 if args.quick else args.stream_requests
    variants = [BASELINE, NO_INTEGRATIONS] if args.quick else []
    payload: dict[str, Any] = {
        "calls": calls,
        "requests": requests,
        "stream_requests": streamed,
        "against": args.against,
    }
    with tempfile.TemporaryDirectory(prefix="tracking-instructions-") as scratch:
        folder = Path(scratch)
        tree = proxy_run.extract_revision(args.against, folder) if args.against else None
        label = f"{SERVE} @{args.against}"
        if args.part in ("sdk", "all"):
            ours = sdk_part(calls, variants, folder / "ours", None)
            theirs = sdk_part(calls, variants, folder / "rev", tree) if tree else None
            payload["sdk"] = report(
                f"sdk: instructions per sync call ({calls} calls per variant)",
                ours,
                BASELINE,
                theirs,
            )
        if args.part in ("async", "all"):
            wanted = [ASYNC_BASELINE, NO_INTEGRATIONS] if args.quick else []
            ours = sdk_part(calls, wanted, folder / "async", None, "--inside-async")
            theirs = (
                sdk_part(calls, wanted, folder / "async-rev", tree, "--inside-async")
                if tree
                else None
            )
            payload["async"] = report(
                f"async: instructions per call ({calls} calls per variant, "
                f"{ASYNC_CONCURRENCY} in flight)",
                ours,
                ASYNC_BASELINE,
                theirs,
            )
        if args.part in ("proxy", "all"):
            figures = proxy_part(requests, folder, tree, label)
            against = {SERVE: figures.pop(label)} if tree else None
            payload["proxy"] = report(
                f"proxy: instructions per request ({requests} requests, concurrency "
                f"{PROXY_CONCURRENCY}, every thread of the server)",
                figures,
                FORWARDER,
                against,
            )
        if args.part in ("stream", "all"):
            (folder / "stream").mkdir()
            figures = proxy_part(streamed, folder / "stream", tree, label, stream=True)
            against = {SERVE: figures.pop(label)} if tree else None
            payload["stream"] = report(
                f"stream: instructions per streamed call ({streamed} calls one at a time, "
                "every thread of the server)",
                figures,
                FORWARDER,
                against,
            )
    write_json(args.out, "instructions", args, payload)


if __name__ == "__main__":
    main()
