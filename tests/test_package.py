"""Packaging promises: a cheap import, the CLI, the demo."""

from __future__ import annotations

import subprocess
import sys


def test_import_tracking_loads_no_http_stack():
    code = (
        "import sys, tracking; "
        "heavy = [m for m in ('httpx', 'aiohttp', 'PIL') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_tracking_bus_is_reachable_right_after_import_as_the_docs_use_it():
    code = "import tracking; print(sorted(tracking.bus.counters()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "callback_errors" in out.stdout


def test_public_names_resolve():
    import tracking

    for name in tracking.__all__:
        assert getattr(tracking, name) is not None


def test_demo_runs_offline_and_shows_the_corrections():
    out = subprocess.run(
        [sys.executable, "-m", "tracking.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "refused before any network call: response_format" in out.stdout
    assert "Generated 3 image variations" in out.stdout
    assert "The fake upstream received 5 requests." in out.stdout


def test_fake_openai_command_serves_until_stopped(tmp_path):
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracking.cli", "fake-openai", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "fake-openai did not start"
                time.sleep(0.1)
        assert answer.json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
