"""``tracking quickstart``: the proxy tried offline, end to end, as a new user runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from decimal import Decimal

import httpx
import pytest

from tests.proxy_support import tracking_command
from tests.services import require_tool


def test_quickstart_runs_the_seed_proxy_examples_offline():
    require_tool("curl", "curl")  # the quickstart runs the seed's curl example
    result = subprocess.run(
        [*tracking_command(), "quickstart"], capture_output=True, text=True, timeout=120
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "api_key: os.environ/OPENAI_API_KEY" in out  # the seed's config shape
    # its master key is printed and the same everywhere: the proxy listens on loopback only
    (start,) = [line for line in out.splitlines() if " serve --config " in line]
    assert "--host 127.0.0.1 --port 0" in start, start
    assert out.count("HTTP 200: 1 image(s), size=1024x1024") == 2  # the seed's curl, as written
    assert "GET url (no key needed): HTTP 200, image/png" in out
    assert "x-tracking-request-id=" in out
    assert "4. Spend: 3 successful call(s) through the proxy" in out
    # The ledger holds a row per call, and its total is exactly what the headers said.
    headers = [Decimal(cost) for cost in re.findall(r"cost=\$([0-9.]+)", out)]
    assert len(headers) == 3
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("gpt-image-2 ")]
    _model, requests, failures, images, cost_usd, unpriced = row
    assert (requests, failures, images, unpriced) == ("3", "0", "3", "0")
    assert Decimal(cost_usd) == sum(headers)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_kept_running_quickstart_ended_by_a_signal_stops_its_proxy(stop):
    """``tracking quickstart --keep-running`` ended by ``kill`` (or a closed terminal) died
    alone: the ``tracking serve`` it started stayed up, orphaned, on its port. The signal now
    ends it as Ctrl-C does, stopping the proxy first."""
    require_tool("curl", "curl")
    process = subprocess.Popen(
        [*tracking_command(), "quickstart", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # whatever happens, the test ends the whole group
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            found = re.search(r"The proxy stays up on (http://[0-9.:]+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the quickstart never said its proxy stays up"
        assert httpx.get(f"{url}/health/liveliness", timeout=10).status_code == 200
        process.send_signal(stop)
        assert process.wait(60) == 128 + stop
        with pytest.raises(httpx.ConnectError):  # the proxy was stopped before the exit
            httpx.get(f"{url}/health/liveliness", timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()  # and closes its output pipe


def test_a_quickstart_whose_proxy_cannot_listen_is_one_line():
    """The proxy it starts exits first (its port is taken): one line naming why and where the
    log is, and status 1, where the quickstart ended in a traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # the quickstart's proxy listens on loopback only
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [*tracking_command(), "quickstart", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "tracking quickstart: error: the proxy exited with code 1 before it listened "
        f"(tracking serve: error: cannot listen on 127.0.0.1:{port}: the port is in use "
    ), line
    assert line.endswith("proxy.log"), line
