"""Costs of the HTTP layer: a sync call never loads aiohttp; pooled clients keep no cookies."""

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
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "fake-openai did not start"
                time.sleep(0.05)
        code = (
            "import io, sys, tracking; from PIL import Image; png = io.BytesIO(); "
            "Image.new('RGB', (8, 8)).save(png, 'PNG'); "
            "r = tracking.image_edit(model='gpt-image-1', image=png.getvalue(), "
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


def _answer_setting_a_cookie(url: str):
    import httpx

    return httpx.Response(
        200, headers={"set-cookie": "session=abc; Path=/"}, request=httpx.Request("POST", url)
    )


def test_pooled_sync_client_never_keeps_a_cookie_for_the_next_caller(fake):
    from tracking.http import POOL

    client = POOL.sync_client(fake.base_url)
    client.cookies.extract_cookies(_answer_setting_a_cookie(fake.url + "/images/edits"))
    assert not client.cookies
    request = client.build_request("POST", fake.url + "/images/edits")
    assert "cookie" not in request.headers


async def test_pooled_async_client_never_keeps_a_cookie_for_the_next_caller(fake):
    from tracking.http import POOL

    sender = await POOL.async_client(fake.base_url)
    jar = sender.session.cookie_jar
    jar.update_cookies({"session": "abc"})
    assert len(jar) == 0


def _live_responses() -> int:
    import gc

    import httpx

    return sum(isinstance(o, httpx.Response | httpx.Request) for o in gc.get_objects())


def _call_params(upstream, png) -> dict:
    return {"model": "gpt-image-1", "image": png(), "prompt": "a hat", **upstream}


def test_sync_call_frees_its_response_and_request_body_without_the_gc(upstream, png):
    # httpx links a response and its stream both ways; unlinked, the request (and its image
    # body) is freed when the call returns instead of at the next garbage collection.
    import gc

    import tracking

    params = _call_params(upstream, png)
    tracking.image_edit(**params)
    gc.collect()
    gc.disable()
    try:
        before = _live_responses()
        for _ in range(5):
            tracking.image_edit(**params)
        assert _live_responses() == before
    finally:
        gc.enable()


async def test_async_call_frees_its_response_and_request_body_without_the_gc(upstream, png):
    import gc

    import tracking

    params = _call_params(upstream, png)
    await tracking.aimage_edit(**params)
    gc.collect()
    gc.disable()
    try:
        before = _live_responses()
        for _ in range(5):
            await tracking.aimage_edit(**params)
        assert _live_responses() == before
    finally:
        gc.enable()
