"""The proxy's life: start-up checks, the open-proxy warning, readiness, SIGTERM draining
in-flight requests and flushing sinks, and ``--workers 2`` with correct ``/metrics`` totals."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.proxy_support import (
    MASTER_KEY,
    ProxyProcess,
    TroubleUpstream,
    one_deployment_config,
    tracking_command,
    write_config,
)
from tests.relay import TcpRelay

CUSTOM_SINK = '''\
"""A user's integration, named in the config as custom_sink.sink."""
import json
import shutil
import signal
import pathlib

OUT = pathlib.Path(__file__).with_name("sink.json")


class Sink:
    def __init__(self):
        self.events = []
        self.flushed = False

    def on_start(self, call):
        pass

    def on_end(self, event):
        self.events.append(event.request_id)

    def flush(self, timeout=None):
        self.flushed = True
        return True

    def shutdown(self, timeout=None):
        OUT.write_text(json.dumps({"events": self.events, "flushed": self.flushed}))


sink = Sink()
'''


def _edit(url: str, key: str | None = MASTER_KEY, model: str = "gpt-image-1") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{url}/v1/images/edits",
        data={"model": model, "prompt": "a hat"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers=headers,
        timeout=30,
    )


def test_sigterm_drains_in_flight_requests_and_flushes_sinks(tmp_path):
    (tmp_path / "custom_sink.py").write_text(CUSTOM_SINK)
    with TroubleUpstream() as trouble:
        config = write_config(
            tmp_path / "config.yaml",
            one_deployment_config(
                trouble.url("slow/1.5"),
                api_key="sk-x",
                litellm_settings={"success_callback": ["custom_sink.sink"]},
                general_settings={"master_key": MASTER_KEY},
            ),
        )
        proxy = ProxyProcess(config).start()
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(_edit(proxy.url)))
        caller.start()
        assert trouble.started.wait(10), "the request never reached the upstream"
        proxy.terminate()  # SIGTERM while the request is in flight
        caller.join(20)
        code = proxy.stop()
    # uvicorn re-raises the signal once it has shut down cleanly, as a SIGTERM'd process should.
    assert code in (0, -signal.SIGTERM), proxy.log()
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    written = json.loads((tmp_path / "sink.json").read_text())
    assert written == {"events": [answer.headers["x-tracking-request-id"]], "flushed": True}


def _serve(config_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tracking_command(), "serve", "--config", str(config_path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_config_and_unknown_callback_fail_at_start(tmp_path):
    bad = write_config(
        tmp_path / "bad.yaml",
        {"model_list": [{"model_name": "m", "litellm_params": {"api_key": "sk-hidden-123456"}}]},
    )
    result = _serve(bad)
    assert result.returncode == 2
    assert "model_list[0].litellm_params.model: required" in result.stderr
    assert "sk-hidden-123456" not in result.stderr + result.stdout

    unknown = write_config(
        tmp_path / "unknown.yaml",
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-image-1"}}],
            "litellm_settings": {"success_callback": ["nope"]},
        },
    )
    result = _serve(unknown)
    assert result.returncode == 2
    assert "unknown callback 'nope'" in result.stderr
    assert "built-in integrations: otel, prometheus, sql, structlog" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "given"),
    [("os.path", "the module 'posixpath'"), ("os.sep", "str '/'")],
)
def test_a_dotted_callback_naming_no_callback_fails_at_start(tmp_path, name, given):
    """``litellm_settings.callbacks: ["os.path"]`` started the proxy, whose every call then
    failed; the start fails, naming the entry, what it names and what a callback may be."""
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            "http://127.0.0.1:9",
            api_key="sk-x",
            litellm_settings={"callbacks": [name]},
            general_settings={"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        ),
    )
    result = _serve(config)
    assert result.returncode == 2, result.stderr
    assert f"callback {name!r}: not a callback: {given}" in result.stderr
    assert "a tracking.CustomLogger instance" in result.stderr
    assert "Traceback" not in result.stderr


def test_open_proxy_warns_loudly_and_applies_the_default_size_limit(tmp_path, fake):
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            fake.url,
            api_key=None,  # from OPENAI_API_KEY
            general_settings={"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        ),
    )
    with ProxyProcess(config, env={"OPENAI_API_KEY": API_KEY}) as proxy:
        assert "no master_key is set: this proxy is OPEN" in proxy.log()
        assert _edit(proxy.url, key=None).status_code == 200
        readiness = httpx.get(f"{proxy.url}/health/readiness")
        assert readiness.json() == {"status": "ready", "database": "connected"}
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=abc\r\n"
                b"Content-Length: %d\r\n\r\n" % (65 * 1024 * 1024)
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def _postgres_config(tmp_path, url: str, **general) -> object:
    return write_config(
        tmp_path / "config.yaml",
        one_deployment_config(
            model_name="m",
            model="gpt-image-1",
            api_key=API_KEY,
            general_settings={"master_key": MASTER_KEY, "database_url": url, **general},
        ),
    )


def test_postgresql_ledger_must_be_migrated_unless_auto_migrate(tmp_path, postgres_url):
    proxy = ProxyProcess(_postgres_config(tmp_path, postgres_url))
    with pytest.raises(AssertionError, match="exited with") as failed:
        proxy.start()
    assert "tracking migrate" in str(failed.value)
    with ProxyProcess(_postgres_config(tmp_path, postgres_url, auto_migrate=True)) as migrated:
        readiness = httpx.get(f"{migrated.url}/health/readiness", timeout=20)
        assert readiness.json() == {"status": "ready", "database": "connected"}


def test_readiness_reports_an_unreachable_database(tmp_path, postgres_url):
    """The ledger's PostgreSQL behind a relay the test cuts: readiness turns 503."""
    relay = TcpRelay(postgres_url)
    config = _postgres_config(tmp_path, relay.url, auto_migrate=True)
    try:
        with ProxyProcess(config) as proxy:
            readiness = httpx.get(f"{proxy.url}/health/readiness", timeout=20)
            assert readiness.json() == {"status": "ready", "database": "connected"}
            relay.cut()
            readiness = httpx.get(f"{proxy.url}/health/readiness", timeout=20)
            assert readiness.status_code == 503
            assert readiness.json() == {"status": "unready", "database": "unreachable"}
            assert "postgres@" not in proxy.log()  # a URL may embed a password: never logged
    finally:
        relay.close()


def _metric(text: str, name: str, reason: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{reason="{reason}"}}'):
            return float(line.rpartition(" ")[2])
    raise AssertionError(f"{name} {reason} not in the exposition")


def _per_worker_rejections(folder) -> dict[str, float]:
    """Each worker's own auth-rejection count, read from its multiprocess file alone."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    counts = {}
    for path in folder.glob("counter_*.db"):
        alone = folder.parent / f"alone-{path.stem}"
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        text = generate_latest(registry).decode()
        if 'image_edit_proxy_rejections_total{reason="auth"}' not in text:
            continue  # a file of another process (the server's supervisor), not a worker's
        counts[path.stem] = _metric(text, "image_edit_proxy_rejections_total", "auth")
    return counts


@pytest.mark.slow
def test_two_workers_report_the_same_totals(tmp_path, fake):
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(fake.url, general_settings={"master_key": MASTER_KEY}),
    )
    folder = tmp_path / "prometheus"
    with ProxyProcess(config, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}) as proxy:
        served = 12

        def refuse(_: int) -> int:
            # A fresh connection each time, so both workers take their share.
            return _edit(proxy.url, key="sk-wrong-key-for-workers").status_code

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _edit(proxy.url).status_code, range(served)))
            # Which worker accepts a connection is the kernel's choice: one may take a whole
            # batch, and on a loaded machine many in a row. Batches go on until both workers
            # have refused some (a few at most when the machine is quiet).
            statuses: list[int] = []
            for _ in range(40):
                statuses += pool.map(refuse, range(160))
                if len([c for c in _per_worker_rejections(folder).values() if c > 0]) == 2:
                    break
        refused = len(statuses)
        assert statuses == [401] * refused
        assert answers == [200] * served
        # Every scrape, whichever worker answers it, sums both workers' counts.
        scrapes = [httpx.get(f"{proxy.url}/metrics").text for _ in range(6)]
        assert {_metric(s, "image_edit_proxy_rejections_total", "auth") for s in scrapes} == {
            float(refused)
        }
        success = (
            'image_edit_requests_total{error_type="",model="gpt-image-1",'
            'operation="image_edit",provider="openai",served_model="gpt-image-1",status="success"}'
        )
        for scrape in scrapes:
            (line,) = [line for line in scrape.splitlines() if line.startswith(success)]
            assert float(line.rpartition(" ")[2]) == served
        # Both workers really served: each one's own file holds part of the total.
        per_worker = _per_worker_rejections(folder)
        assert len(per_worker) == 2, per_worker  # one file per worker process
        assert sum(per_worker.values()) == refused, per_worker
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert sum(per_worker.values()) == refused


@pytest.mark.slow
def test_workers_log_as_one_process_does(tmp_path, fake):
    """Each ``--workers`` process is a process of its own, which inherited none of ``tracking
    serve``'s logging: no access line was ever written under ``--workers N``, no INFO line of
    ours, and a warning came out bare (no level, no logger), through Python's last-resort
    handler, as did each worker's copy of the config's warnings."""
    from tests.accounts_support import wait_for

    document = one_deployment_config(fake.url, general_settings={"master_key": MASTER_KEY})
    document["general_settings"]["master_kye"] = "misspelt"
    config = write_config(tmp_path / "config.yaml", document)
    with ProxyProcess(config, workers=2) as proxy:
        response = _edit(proxy.url)  # gpt-image-1, shut down: a warning from the worker
        assert response.status_code == 200, response.text
        request_id = response.headers["x-tracking-request-id"]
        wait_for(lambda: request_id in proxy.log())
        log = proxy.log().splitlines()
    (access,) = [line for line in log if request_id in line]
    assert access.startswith("INFO:     tracking.proxy.access: method=POST")
    assert "status=200" in access and "model=gpt-image-1" in access
    retired = [line for line in log if "was shut down by its provider" in line]
    assert retired and all(line.startswith("WARNING:     tracking:") for line in retired)
    misspelt = [line for line in log if "master_kye" in line]  # said once, by tracking serve
    assert len(misspelt) == 1 and misspelt[0].startswith("WARNING:     tracking.config:")
