"""Helpers for the proxy tests: the proxy as a real subprocess, and a misbehaving upstream.

``ProxyProcess`` runs ``tracking serve --config ...`` exactly as a user would, on a free loopback
port, and waits until it answers. ``TroubleUpstream`` is a small aiohttp server on a thread whose
paths choose a failure: ``/status/<code>/v1`` answers that status with an OpenAI-shaped error,
``/slow/<seconds>/v1`` answers a valid edit late, ``/garbage/v1`` answers 200 with a body that is
not JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.conftest import API_KEY
from tracking.testing.app_thread import AppThread

MASTER_KEY = "sk-master-proxy-test-0123456789"

_EDIT_BODY = {
    "created": 1_700_000_000,
    "data": [{"b64_json": "iVBORw0KGgo="}],
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
        "output_tokens": 272,
        "total_tokens": 282,
    },
    "size": "1024x1024",
    "quality": "low",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tracking_command() -> list[str]:
    script = Path(sys.executable).parent / "tracking"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracking.cli"]


#: ``python -c`` code running the ``tracking`` command (its arguments after it) with
#: ``localhost`` resolved as most systems' hosts files resolve it, ``::1`` first and then
#: ``127.0.0.1``, where this machine's may name 127.0.0.1 alone: the resolver's answer stands in
#: for ``/etc/hosts``; the command's own code runs unchanged.
_LOCALHOST_AT_BOTH = """
import socket
import sys

system = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if host != "localhost":
        return system(host, *args, **kwargs)
    return system("::1", *args, **kwargs) + system("127.0.0.1", *args, **kwargs)


socket.getaddrinfo = getaddrinfo
from tracking.cli import main

sys.exit(main(sys.argv[1:]))
"""


def require_ipv6_loopback() -> None:
    """Skip the test (fail it under CI) where the machine has no IPv6 loopback to bind."""
    from tests.services import unavailable

    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError as exc:
            unavailable(f"no IPv6 loopback to bind (::1: {exc.strerror or exc})")


def localhost_at_both_command() -> list[str]:
    """The ``tracking`` command with ``localhost`` at ``::1`` and ``127.0.0.1`` (above); needs
    the IPv6 loopback (:func:`require_ipv6_loopback`)."""
    require_ipv6_loopback()
    return [sys.executable, "-c", _LOCALHOST_AT_BOTH]


def serve_once(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tracking serve`` on ``config`` that is expected to refuse it at start (and exit)."""
    return subprocess.run(
        [*tracking_command(), "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class ProxyProcess:
    """``tracking serve`` in a subprocess; its output goes to a log file the tests can read."""

    def __init__(
        self,
        config: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.port = free_port()
        self.log_path = config.parent / f"proxy-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.workers = workers
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def launch(self) -> subprocess.Popen[bytes]:
        command = [
            *tracking_command(),
            "serve",
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.extra_args,
        ]
        with self.log_path.open("wb") as log:
            # The config's folder is the working directory: the default ledger,
            # ./tracking.db, lands beside the config, never in the repository.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.config.parent
            )
        return self.process

    def start(self, timeout: float | None = None) -> ProxyProcess:
        if timeout is None:
            # A bound for "never", not a timing assertion: the loop returns as soon as the proxy
            # answers. On a 2-core machine shared with the suite's other workers, PostgreSQL,
            # Redis and their subprocesses, one worker took longer than 20 s to start, and
            # workers import everything anew, each.
            timeout = 60.0 if self.workers <= 1 else 120.0
        process = self.launch()
        deadline = time.monotonic() + timeout
        # One client for every poll: a new one per poll (httpx.get) costs ~30 ms of CPU for its
        # TLS context, a third of a core taken from the proxy starting (and the other tests).
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    log = self.log()
                    raise AssertionError(f"the proxy exited with {process.returncode}:\n{log}")
                try:
                    if client.get(f"{self.url}/health/liveliness").status_code == 200:
                        return self
                except httpx.TransportError:
                    time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the proxy did not start in {timeout} s:\n{self.log()}")

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code once the proxy has drained and exited (``timeout``: a
        bound for "never", on a loaded machine)."""
        if self.process is None:
            return 0
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"the proxy ignored SIGTERM:\n{self.log()}") from None

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return web.json_response(body, status=status, headers=extra.get("headers"))


#: An answer as OpenAI formats them (indented, non-ASCII text unescaped): the proxy must pass
#: these bytes on exactly.
PRETTY_BODY = json.dumps(
    {**_EDIT_BODY, "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": "un chapeau rouge ☂"}]},
    indent=2,
    ensure_ascii=False,
).encode()


class TroubleUpstream:
    """An upstream that fails on purpose, chosen by path; counts the requests it got."""

    def __init__(self) -> None:
        self.hits = 0
        self.started = threading.Event()  # set when a slow request has arrived
        self.port = 0
        self._server: AppThread | None = None

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/v1"

    def _app(self) -> web.Application:
        async def status(request: web.Request) -> web.Response:
            self.hits += 1
            await request.read()
            code = int(request.match_info["code"])
            headers = {"retry-after": "0"} if code == 429 else None
            return _error(code, f"upstream says {code}", headers=headers)

        async def slow(request: web.Request) -> web.Response:
            self.hits += 1
            await request.read()
            self.started.set()
            await asyncio.sleep(float(request.match_info["seconds"]))
            return web.json_response(_EDIT_BODY)

        async def garbage(request: web.Request) -> web.Response:
            self.hits += 1
            await request.read()
            return web.Response(body=b"<html>not json</html>", content_type="text/html")

        async def pretty(request: web.Request) -> web.Response:
            self.hits += 1
            await request.read()
            return web.Response(body=PRETTY_BODY, content_type="application/json")

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/pretty/v1/images/edits", pretty)
        app.router.add_post("/status/{code}/v1/images/edits", status)
        app.router.add_post("/slow/{seconds}/v1/images/edits", slow)
        app.router.add_post("/garbage/v1/images/edits", garbage)
        return app

    def __enter__(self) -> TroubleUpstream:
        self._server = AppThread(self._app(), name="trouble-upstream", shutdown_timeout=0.1)
        self.port = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.stop()


def write_config(path: Path, document: dict[str, Any]) -> Path:
    """Config files are YAML; JSON is YAML, and keeps the tests free of formatting details."""
    path.write_text(json.dumps(document, indent=2))
    return path


#: An upstream no test calls: a proxy whose tests use only its management routes points here.
NO_UPSTREAM = "http://127.0.0.1:9/v1"


def managed_proxy(
    folder: Path, api_base: str = NO_UPSTREAM, **general_settings: Any
) -> ProxyProcess:
    """A proxy (not started) serving ``gpt-image-2`` at ``api_base``, with ``MASTER_KEY`` and a
    SQLite ledger in ``folder``; ``general_settings`` add to or replace those (``master_key=None``
    leaves it open, ``database_url=...`` another ledger)."""
    settings = {
        "master_key": MASTER_KEY,
        "database_url": f"sqlite:///{folder / 'ledger.db'}",
        **general_settings,
    }
    document = one_deployment_config(
        api_base,
        model_name="gpt-image-2",
        general_settings={name: value for name, value in settings.items() if value is not None},
    )
    return ProxyProcess(write_config(folder / "config.yaml", document))


@contextlib.contextmanager
def master_client(proxy: ProxyProcess) -> Iterator[httpx.Client]:
    """``proxy`` started, and an HTTP client on it holding ``MASTER_KEY``."""
    with (
        proxy,
        httpx.Client(
            base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60
        ) as client,
    ):
        yield client


@contextlib.contextmanager
def managed_client(folder: Path, **general_settings: Any) -> Iterator[httpx.Client]:
    """An HTTP client holding ``MASTER_KEY``, on a started :func:`managed_proxy`."""
    with master_client(managed_proxy(folder, **general_settings)) as client:
        yield client


def same_name_config(
    folder: Path, names: tuple[str, ...], api_base: str, master_key: str = MASTER_KEY
) -> Path:
    """A config file in ``folder`` serving each of ``names`` as the same model at
    ``api_base`` (with ``API_KEY``), with ``master_key`` and a SQLite ledger beside it."""
    deployment = {"api_key": API_KEY, "api_base": api_base}
    document = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": name, **deployment}} for name in names
        ],
        "general_settings": {
            "master_key": master_key,
            "database_url": f"sqlite:///{folder / 'ledger.db'}",
        },
    }
    return write_config(folder / "config.yaml", document)


def one_deployment_config(
    api_base: str | None = None,
    *,
    model_name: str = "gpt-image-1",
    model: str | None = None,
    api_key: str | None = API_KEY,
    general_settings: dict[str, Any] | None = None,
    litellm_settings: dict[str, Any] | None = None,
    router_settings: dict[str, Any] | None = None,
    environment_variables: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """A config document (for ``write_config`` or ``parse_config``) whose ``model_list`` is one
    deployment: ``model_name`` served by ``model`` (the same name unless given) at ``api_base``
    with ``api_key``; ``params`` are further ``litellm_params`` (``max_retries=0``, ``rpm=…``).

    ``api_base=None`` or ``api_key=None`` leaves that key out. A section is written only when it
    is given, exactly as given (an empty one too)."""
    litellm_params: dict[str, Any] = {"model": model or model_name}
    if api_key is not None:
        litellm_params["api_key"] = api_key
    if api_base is not None:
        litellm_params["api_base"] = api_base
    document: dict[str, Any] = {
        "model_list": [{"model_name": model_name, "litellm_params": {**litellm_params, **params}}]
    }
    sections = {
        "environment_variables": environment_variables,
        "litellm_settings": litellm_settings,
        "router_settings": router_settings,
        "general_settings": general_settings,
    }
    document.update({name: value for name, value in sections.items() if value is not None})
    return document


def edit_through_proxy(
    folder: Path, model_name: str, litellm_params: dict[str, Any], **edit: Any
) -> Any:
    """One edit with the official ``openai`` client through a proxy serving one deployment.

    The proxy runs on ``folder`` (its config and SQLite ledger go there) and stops afterwards;
    ``edit`` holds the ``images.edit`` arguments besides ``model`` (paths are opened here).
    Returns the client's raw response (headers and ``parse()``)."""
    import contextlib

    import openai

    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [{"model_name": model_name, "litellm_params": litellm_params}],
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with (
        ProxyProcess(config) as proxy,
        openai.OpenAI(base_url=proxy.url, api_key="sk-any", max_retries=0) as client,
        contextlib.ExitStack() as files,
    ):
        opened = {
            name: files.enter_context(value.open("rb")) if isinstance(value, Path) else value
            for name, value in edit.items()
        }
        return client.images.with_raw_response.edit(model=model_name, **opened)


def ledger_row(proxy: ProxyProcess, request_id: str) -> dict[str, Any]:
    """The ``spend_logs`` row of ``request_id`` in the SQLite ledger beside the proxy's config."""
    import sqlalchemy as sa

    from tracking.integrations.sql import spend_logs

    engine = sa.create_engine(f"sqlite:///{proxy.config.parent / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            query = spend_logs.select().where(spend_logs.c.request_id == request_id)
            (row,) = connection.execute(query).mappings()
            return dict(row)
    finally:
        engine.dispose()
