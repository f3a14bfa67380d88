"""Import-cost promises on the sync path: a sync call never loads aiohttp."""

from __future__ import annotations

import subprocess
import sys


def test_sync_call_path_does_not_import_aiohttp():
    # aiohttp backs only the async clients; importing it costs more than httpx itself.
    code = (
        "import sys, tracking; tracking.image_edit; "
        "import tracking.http, tracking.providers.openai; "
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sync_call_against_the_fake_does_not_import_aiohttp(tmp_path):
    # The fake itself runs on aiohttp, so it is served from a separate process here.
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = subprocess.Popen(
        [sys.executable, "-m", "tracking.cli", "fake-openai", "--canned", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "fake-openai did not start"
                time.sleep(0.05)
        code = (
            "import sys, tracking; "
            "r = tracking.image_edit(model='gpt-image-1', image=b'\\x89PNG\\r\\n\\x1a\\n0', "
            f"prompt='x', api_key='sk-test', api_base='http://127.0.0.1:{port}/v1'); "
            "print(len(r.data), 'aiohttp' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1 False"
    finally:
        fake.terminate()
        fake.wait(10)
