"""SIGTERM under load: the proxy stops accepting, lets every in-flight request finish with its
answer, then flushes every sink (a user integration, the SQL ledger) before it exits."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracking.testing import FakeOpenAI

from .conftest import API_KEY
from .proxy_support import ProxyProcess
from .test_reliability_faults import edit, ledger_rows, proxy_config, sink_events

IN_FLIGHT = 24


def test_sigterm_under_load_finishes_in_flight_requests_and_flushes_every_sink(
    tmp_path: Path,
) -> None:
    # Every upstream answer takes a second, so all the calls are in flight at the signal.
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=1;always"]) as upstream:
        proxy = ProxyProcess(proxy_config(tmp_path, upstream.url)).start()
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            calls = [pool.submit(edit, proxy.url) for _ in range(IN_FLIGHT)]
            deadline = time.monotonic() + 60
            while upstream.hits < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.02)
            assert upstream.hits == IN_FLIGHT, "the calls never reached the upstream"
            proxy.terminate()
            answers = [c.result() for c in calls]
        code = proxy.stop()
    assert code in (0, -signal.SIGTERM), proxy.log()
    assert [a.status_code for a in answers] == [200] * IN_FLIGHT
    ids = {a.headers["x-tracking-request-id"] for a in answers}
    events, flushed = sink_events(tmp_path)
    assert flushed and {e[0] for e in events} == ids and len(events) == IN_FLIGHT
    rows = ledger_rows(tmp_path)
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert "Traceback" not in proxy.log()
