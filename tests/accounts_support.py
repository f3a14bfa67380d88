"""Helpers for the tests of the proxy's keys, budgets, rate limits and spend endpoints.

A config for ``tracking serve`` in front of the session's fake upstream with a master key and the
``"sql"`` ledger, and small HTTP helpers: an edit call with a key (and optionally an end user),
and JSON calls to the management endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config
from tracking.config import parse_config
from tracking.proxy.app import ProxyApp, create_app

PNG = make_png(32, 32)


def accounts_config(
    folder: Path,
    fake_url: str,
    database_url: str,
    *,
    redis_url: str | None = None,
    name: str = "config.yaml",
    models: tuple[str, ...] = ("gpt-image-1", "dall-e-2"),
    general: dict[str, Any] | None = None,
    model_list: list[dict[str, Any]] | None = None,
    router_settings: dict[str, Any] | None = None,
) -> Path:
    """The config (``model_list``: these deployments instead of one per name of ``models`` at
    ``fake_url``; ``router_settings`` instead of ``redis_url``'s)."""
    document: dict[str, Any] = {
        "model_list": model_list
        or [
            {
                "model_name": model,
                "litellm_params": {
                    "model": model,
                    "api_key": API_KEY,
                    "api_base": fake_url,
                    "max_retries": 0,
                },
            }
            for model in models
        ],
        "litellm_settings": {"success_callback": ["sql"], "failure_callback": ["sql"]},
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": database_url,
            "auto_migrate": True,
            **(general or {}),
        },
    }
    if redis_url:
        document["router_settings"] = {"redis_url": redis_url}
    if router_settings is not None:
        document["router_settings"] = router_settings
    return write_config(folder / name, document)


def ledger_env(database_url: str) -> dict[str, str]:
    """The ledger integration reads its URL from the environment when it is resolved, which
    happens before the proxy copies ``database_url`` there: name it in the process's env too."""
    return {"TRACKING_DATABASE_URL": database_url}


@contextlib.contextmanager
def proxy_on_ledger(request: Any, fake_url: str, folder: Path) -> Iterator[ProxyProcess]:
    """A proxy (:func:`accounts_config`) on the ledger a fixture's ``request.param`` names:
    ``"sqlite"`` (a file in ``folder``) or ``"postgresql"`` (the module's fresh database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'ledger.db'}"
    else:
        url = request.getfixturevalue("module_postgres_url")
    config = accounts_config(folder, fake_url, url)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def edit(
    client: httpx.Client,
    base: str,
    key: str | None,
    *,
    model: str = "gpt-image-1",
    user: str | None = None,
    **fields: str,
) -> httpx.Response:
    data = {"model": model, "prompt": "make it blue", "quality": "low", "size": "1024x1024"}
    if model == "dall-e-2":
        data = {"model": model, "prompt": "make it blue", "size": "256x256"}
    if user is not None:
        data["user"] = user
    data.update(fields)
    return client.post(
        f"{base}/v1/images/edits",
        headers=bearer(key),
        data=data,
        files={"image": ("a.png", PNG, "image/png")},
    )


def generate(client: httpx.Client, base: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{base}/key/generate", headers=bearer(MASTER_KEY), json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Returns as soon as ``predicate()`` holds; ``timeout`` is a bound for "never" (a loaded
    2-core CI machine is slow: no test measures time with it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def spend_rows(client: httpx.Client, base: str, key: str = MASTER_KEY, **query: Any) -> Any:
    response = client.get(f"{base}/spend/logs", headers=bearer(key), params=query)
    assert response.status_code == 200, response.text
    return response.json()


def restart_redis(stopped: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The same redis-server command again (same port), empty."""
    server = subprocess.Popen(stopped.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = int(str(stopped.args[2]))  # type: ignore[index]
    wait_for(lambda: _listening(port))
    return server


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def in_process_proxy(
    document: dict[str, Any] | None = None, *, ledger: str = ""
) -> Iterator[ProxyApp]:
    """The proxy's app of the config ``document`` (else one deployment, never called, with the
    master key and the ledger at ``ledger``), to call in-process (:func:`asgi_request`). Its
    image store is a temporary folder unless the config names one: the default is beside an
    SQLite ledger, or ``./tracking-images`` in the working directory, the repository's."""
    if document is None:
        document = one_deployment_config(
            "http://127.0.0.1:9",  # never called
            general_settings={"master_key": MASTER_KEY, "database_url": ledger},
        )
    with tempfile.TemporaryDirectory() as images:
        general = dict(document.get("general_settings") or {})
        general.setdefault("image_store", {"path": images})
        proxy = create_app(parse_config({**document, "general_settings": general}))
        try:
            yield proxy
        finally:
            proxy.accounts.store.close()
            proxy.dispatcher.close()  # type: ignore[attr-defined]


def asgi_request(
    app: ProxyApp, method: str, path: str, key: str | None = MASTER_KEY, **kwargs: Any
) -> httpx.Response:
    """One request to ``app`` over ASGI (httpx), with ``key`` as the bearer (None: no key)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return await client.request(method, path, headers=bearer(key), **kwargs)

    return asyncio.run(send())
