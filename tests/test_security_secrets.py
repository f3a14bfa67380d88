"""Planted secrets never leak. A proxy run with every integration on (structlog to stdout, the
SQL ledger, Prometheus, OpenTelemetry spans exported over OTLP/HTTP to a receiver the test runs),
a planted provider key, a planted master key, wrong keys from clients and an upstream that echoes
the key it refused: none of these secrets appears in the proxy's log output, the exported spans,
``/metrics``, the ledger file, any response (body or headers) nor an SDK exception."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import tracking
from tracking.errors import TrackingError
from tracking.testing import FakeOpenAI

from .conftest import make_png
from .proxy_support import ProxyProcess, write_config
from .test_reliability_faults import ledger_rows

PROVIDER_KEY = "sk-proj-PLANTEDprovider7f3a9c2e5b1d"
WRONG_PROVIDER_KEY = "sk-proj-PLANTEDwrongprov0b9d8c7a6e"
MASTER = "sk-PLANTEDmaster-51c0ffee9b2a"
CLIENT_GUESS = "sk-PLANTEDclientguess-77aa11bb"
#: The distinctive middle of each secret: a masked form ("sk-***") must not keep any of it.
MARKERS = ("PLANTEDprovider", "PLANTEDwrongprov", "PLANTEDmaster", "PLANTEDclientguess")


class _OtlpReceiver(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback OTLP/HTTP endpoint keeping the raw export bodies (protobuf keeps strings
    as they are, so a secret in any attribute would be found in these bytes)."""
    received: list[bytes] = []
    handler = type("Receiver", (_OtlpReceiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _deployment(name: str, key: str, api_base: str) -> dict:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "gpt-image-1",
            "api_key": key,
            "api_base": api_base,
            "max_retries": 0,
        },
    }


def _leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [m for m in MARKERS if m.encode() in data]


def test_planted_keys_never_appear_in_any_output_of_a_proxy_run(tmp_path: Path, otlp) -> None:
    endpoint, exported = otlp
    sinks = ["structlog", "sql", "prometheus", "otel"]
    with FakeOpenAI(api_keys=[PROVIDER_KEY]) as upstream:
        config = write_config(
            tmp_path / "config.yaml",
            {
                "model_list": [
                    _deployment("good", "os.environ/PLANTED_PROVIDER_KEY", upstream.url),
                    _deployment("refused", WRONG_PROVIDER_KEY, upstream.url),
                ],
                "litellm_settings": {"success_callback": sinks, "failure_callback": sinks},
                "general_settings": {
                    "master_key": "os.environ/PLANTED_MASTER_KEY",
                    "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
                },
            },
        )
        env = {
            "PLANTED_PROVIDER_KEY": PROVIDER_KEY,
            "PLANTED_MASTER_KEY": MASTER,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        proxy = ProxyProcess(config, env=env, extra_args=("--log-level", "debug")).start()
        seen: list[str] = []
        try:
            with httpx.Client(base_url=proxy.url, timeout=30) as http:

                def post(key: str | None, model: str, **headers: str) -> httpx.Response:
                    if key:
                        headers["authorization"] = f"Bearer {key}"
                    response = http.post(
                        "/v1/images/edits",
                        data={"model": model, "prompt": "a hat", "user": "alice"},
                        files={"image": ("a.png", make_png(16, 16), "image/png")},
                        headers=headers,
                    )
                    seen.append(f"{response.status_code} {response.headers} {response.text}")
                    return response

                assert post(MASTER, "good").status_code == 200
                assert post(MASTER, "refused").status_code == 502  # the upstream echoed the key
                assert post(CLIENT_GUESS, "good").status_code == 401
                assert post(None, "good", **{"x-api-key": CLIENT_GUESS}).status_code == 401
                assert post(f"{MASTER}x", "good").status_code == 401
                assert post(MASTER, "unknown-model").status_code == 404
                for path in ("/metrics", "/v1/models", "/health/readiness"):
                    response = http.get(path, headers={"authorization": f"Bearer {MASTER}"})
                    seen.append(f"{response.headers} {response.text}")
        finally:
            proxy.stop()
    log = proxy.log()
    assert '"status": "success"' in log or '"status":"success"' in log  # structlog lines exist
    assert exported, "no spans reached the OTLP receiver"
    ledger = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert len(ledger_rows(tmp_path)) == 2  # the success and the refused call
    leaks = {
        "proxy log": _leaks(log),
        "spans": _leaks(b"".join(exported)),
        "ledger": _leaks(ledger),
        "responses": _leaks("\n".join(seen)),
    }
    assert leaks == {k: [] for k in leaks}


def test_sdk_exceptions_never_carry_the_key_in_any_form(fake) -> None:
    """str, repr, args and the formatted traceback of every failure kind."""
    failures: list[BaseException] = []
    image = make_png(16, 16)
    for api_base in (fake.url, "http://127.0.0.1:9/v1"):  # refused by the upstream / unreachable
        try:
            tracking.image_edit(
                model="gpt-image-1",
                image=image,
                prompt="a hat",
                api_key=WRONG_PROVIDER_KEY,
                api_base=api_base,
                max_retries=0,
            )
        except TrackingError as exc:
            failures.append(exc)
    try:
        tracking.image_edit(
            model="gpt-image-1",
            image=image,
            prompt="a hat",
            api_key=WRONG_PROVIDER_KEY,
            api_base=fake.url,
            max_retries=0,
            timeout=0.2,
            extra_headers={"x-fake-fault": "latency=2"},
        )
    except TrackingError as exc:
        failures.append(exc)
    assert len(failures) == 3
    for exc in failures:
        text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)
        text += repr(vars(exc))
        assert _leaks(text) == [], type(exc).__name__
