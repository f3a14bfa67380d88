"""An upstream that echoes the proxy's provider key in every field it controls (the error's
``message``, ``code`` and ``param``, its ``x-request-id``) and sends absurd ``Retry-After``
values (inf, nan, negative, huge, HTTP dates past and far ahead): the key reaches no client, no
ledger row, no ``/spend/logs`` answer and no log line; every Retry-After becomes a bounded whole
number of seconds on a 429 that names the call's request id, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.accounts_support import bearer, ledger_env, spend_rows, wait_for
from tests.conftest import make_png
from tests.proxy_support import _EDIT_BODY, MASTER_KEY, ProxyProcess, write_config
from tracking.testing.app_thread import AppThread

PROVIDER_KEY = "sk-proj-ECHOEDprovider4b1d9e7c2a6f"
MARKER = "ECHOEDprovider"
RETRY_AFTERS = {
    "inf": "inf",
    "nan": "nan",
    "negative": "-5",
    "huge": "1e308",
    "long": "9" * 400,
    "past-date": "Wed, 21 Oct 2015 07:28:00 GMT",
    "far-date": "Fri, 31 Dec 9999 23:59:59 GMT",
    "garbage": "soon",
}


def _echoing_app() -> web.Application:
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        error = {"message": f"bad key {key}", "type": "invalid_request_error"}
        error |= {"param": f"p-{key}", "code": f"c-{key}"}
        return web.json_response(
            {"error": error}, status=400, headers={"x-request-id": f"req-{key}"}
        )

    async def throttle(request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        error = {"message": "slow down", "type": "rate_limit_error", "param": None, "code": key}
        headers = {"x-request-id": key, "retry-after": RETRY_AFTERS[request.match_info["kind"]]}
        return web.json_response({"error": error}, status=429, headers=headers)

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        return web.json_response(_EDIT_BODY, headers={"x-request-id": f"ok-{key}"})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/refuse/v1/images/edits", refuse)
    app.router.add_post("/throttle/{kind}/v1/images/edits", throttle)
    app.router.add_post("/ok/v1/images/edits", ok)
    return app


@pytest.fixture
def echoing() -> Iterator[str]:
    server = AppThread(_echoing_app(), name="echoing-upstream", shutdown_timeout=0.1)
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _deployment(name: str, api_base: str) -> dict[str, object]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "gpt-image-1",
            "api_key": PROVIDER_KEY,
            "api_base": api_base,
            "max_retries": 0,
        },
    }


def test_echoed_keys_are_masked_everywhere_and_retry_after_is_bounded(echoing, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    models = [_deployment("refuse", f"{echoing}/refuse/v1"), _deployment("ok", f"{echoing}/ok/v1")]
    models += [_deployment(f"throttle-{k}", f"{echoing}/throttle/{k}/v1") for k in RETRY_AFTERS]
    sinks = ["sql", "structlog"]
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": models,
            "litellm_settings": {"success_callback": sinks, "failure_callback": sinks},
            "general_settings": {"master_key": MASTER_KEY, "database_url": url},
        },
    )
    seen: list[str] = []
    with ProxyProcess(config, env=ledger_env(url)) as proxy, httpx.Client(timeout=30) as client:

        def post(model: str) -> httpx.Response:
            response = client.post(
                f"{proxy.url}/v1/images/edits",
                headers=bearer(MASTER_KEY),
                data={"model": model, "prompt": "a hat", "quality": "low", "size": "1024x1024"},
                files={"image": ("a.png", make_png(16, 16), "image/png")},
            )
            seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
            return response

        assert post("ok").status_code == 200
        refused = post("refuse")
        assert refused.status_code == 400 and refused.json()["error"]["code"].startswith("c-")
        for kind in RETRY_AFTERS:
            response = post(f"throttle-{kind}")
            assert response.status_code == 429, (kind, response.text)
            assert response.headers["x-tracking-request-id"]
            wait = response.headers.get("retry-after")
            assert wait is None or 1 <= int(wait) <= 86_400, (kind, wait)
        calls = 2 + len(RETRY_AFTERS)
        wait_for(lambda: spend_rows(client, proxy.url)["total"] == calls)
        rows = spend_rows(client, proxy.url, page_size=1000)
        seen.append(repr(rows))
        assert any(row["upstream_request_id"] for row in rows["data"])
    ledger = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    everything = "\n".join(seen) + proxy.log()
    assert MARKER not in everything
    assert MARKER.encode() not in ledger
    assert "Traceback" not in proxy.log()
