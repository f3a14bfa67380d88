"""System calls per request, one command: ``.venv/bin/python benchmarks/proxy/syscalls.py``.

The question it answers: is the gap between ``tracking serve`` and the minimal durable forwarder
(``run.py``) in the kernel, or in Python? Each server runs in front of the same canned fake, as in
``run.py``; after a warm-up, ``strace -f -c`` (Debian's ``strace``) is attached to it while wrk
posts the same 143 KB image for ``--duration`` seconds at concurrency ``--connections``, and the
calls it counted are divided by the requests wrk completed. strace slows every system call a
lot, so the rates here mean nothing; the counts per request are what the servers do.

On Python 3.11 ``getpid`` is asyncio's: the C ``get_running_loop`` checks the process id at every
call (3.12 dropped that), so it counts the loop lookups of asyncio's own primitives.

Before the traced run, an untraced one of the same length reads every thread's
``/proc/PID/task/TID/stat`` and ``status`` around it: CPU (user and system), voluntary and
involuntary context switches and minor page faults per request, for the event loop's thread
(the main one) and for the others together (the ledger's writer, the forwarder's committer). A
thread sleeps voluntarily when it waits for the GIL, a lock, the disk or the next event, so the
switches count the hand-offs between threads that the system calls alone do not show
(2026-12-07).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run  # benchmarks/proxy/run.py: the proxy benchmark's pieces


def counted(summary: str, requests: int) -> dict[str, float]:
    """``strace -c``'s table as calls per request, by system call (and ``total``)."""
    per_request: dict[str, float] = {}
    for line in summary.splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall", the last row's name "total"
        if len(fields) >= 5 and fields[3].isdigit() and re.fullmatch(r"[\d.]+", fields[0]):
            per_request[fields[-1]] = int(fields[3]) / requests
    return per_request


def thread_figures(pid: int) -> dict[str, dict[str, float]]:
    """Per thread of ``pid``: CPU seconds (user, system), context switches, minor faults."""
    figures: dict[str, dict[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        switches = dict(
            line.split(":\t") for line in status.splitlines() if "ctxt_switches" in line
        )
        figures[task.name] = {
            "user_us": int(stat[11]) / run.CLK_TCK * 1e6,
            "system_us": int(stat[12]) / run.CLK_TCK * 1e6,
            "voluntary": float(switches["voluntary_ctxt_switches"]),
            "involuntary": float(switches["nonvoluntary_ctxt_switches"]),
            "minor_faults": float(stat[7]),
        }
    return figures


def per_thread(pid: int, url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    """An untraced run's figures per request: the loop's thread, and the others summed."""
    before = thread_figures(pid)
    requests = max(1, int(run.wrk(url, script, connections, duration, pid)["requests"]))
    after = thread_figures(pid)
    groups: dict[str, dict[str, float]] = {"loop": {}, "other threads": {}}
    for tid, figures in after.items():
        group = groups["loop" if tid == str(pid) else "other threads"]
        for key, value in figures.items():
            moved = (value - before.get(tid, {}).get(key, 0.0)) / requests
            group[key] = group.get(key, 0.0) + moved
    return groups


def traced(pid: int, url: str, script: Path, connections: int, duration: int, out: Path) -> int:
    """Requests wrk completed while strace counted ``pid``'s system calls into ``out``."""
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # strace attaches to every thread before the load starts
    try:
        figures = run.wrk(url, script, connections, duration, pid)
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches and writes the table
        tracer.wait(30)
    return int(figures["requests"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    for tool in ("wrk", "strace"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool})")
    folder = Path(tempfile.mkdtemp(prefix="tracking-syscalls-"))
    script, _ = run.make_body(folder)
    fake_port = run.free_port()
    fake, _ = run.start(
        [*run.tracking(), "fake-openai", "--canned", "--port", str(fake_port)],
        f"http://127.0.0.1:{fake_port}/health",
    )
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    commands = run.server_commands(folder, upstream, run.tracking_config(folder, upstream))
    results: dict[str, dict[str, float]] = {}
    threads: dict[str, dict[str, Any]] = {}
    try:
        for name, command in commands.items():
            port = run.free_port()
            server, _ = run.start(
                [part.replace("{port}", str(port)) for part in command],
                f"http://127.0.0.1:{port}/health/liveliness",
            )
            url = f"http://127.0.0.1:{port}/v1/images/edits"
            try:
                run.wrk(url, script, args.connections, 1, server.pid)  # warm-up, untraced
                threads[name] = per_thread(server.pid, url, script, args.connections, args.duration)
                out = folder / f"{name.replace(' ', '-')}.strace"
                requests = traced(server.pid, url, script, args.connections, args.duration, out)
            finally:
                run.stop(server)
            results[name] = counted(out.read_text(), max(1, requests))
            results[name]["requests"] = float(requests)
    finally:
        run.stop(fake)
        shutil.rmtree(folder, ignore_errors=True)
    names = list(results)
    calls = sorted(
        {c for r in results.values() for c in r} - {"requests", "total"},
        key=lambda c: -max(r.get(c, 0.0) for r in results.values()),
    )
    print(f"\nsystem calls per request (strace -f -c, wrk c{args.connections}, {args.duration} s)")
    print(f"{'system call':<18}" + "".join(f"{n:>20}" for n in names))
    for call in [*calls, "total"]:
        row = [results[n].get(call, 0.0) for n in names]
        if call == "total" or max(row) >= 0.05:
            print(f"{call:<18}" + "".join(f"{v:>20.2f}" for v in row))
    print("requests traced   " + "".join(f"{results[n]['requests']:>20.0f}" for n in names))
    print(f"\nper request, untraced (/proc per thread, wrk c{args.connections}, {args.duration} s)")
    columns = ("user_us", "system_us", "voluntary", "involuntary", "minor_faults")
    print(f"{'thread':<34}" + "".join(f"{c:>13}" for c in columns))
    for name, groups in threads.items():
        for group, figures in groups.items():
            label = f"{name}: {group}"
            print(f"{label:<34}" + "".join(f"{figures.get(c, 0.0):>13.2f}" for c in columns))
    if args.json:
        document = {**results, **{f"{name} threads": t for name, t in threads.items()}}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
