"""Stopping a fake upstream that holds a request (a ``latency`` fault) ends its server's thread
before ``stop`` returns: the held handler is cancelled after the server's shutdown timeout.

Before, aiohttp was given 60 s to let the handler finish and ``stop`` waited 10 s for the thread:
it returned with the thread still serving, and every test that left a call held upstream (a
process killed mid-call, a cancelled call) spent 10 s in its teardown.
"""

from __future__ import annotations

import threading

import httpx

from tests.accounts_support import wait_for
from tests.conftest import API_KEY, make_png
from tracking.testing import FakeOpenAI


def test_a_fake_stopped_while_it_holds_a_request_has_ended_its_thread():
    before = set(threading.enumerate())
    fake = FakeOpenAI(api_keys=[API_KEY], faults=["latency=60;always"]).start()
    (server,) = set(threading.enumerate()) - before
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(
                httpx.post(
                    f"{fake.url}/images/edits",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    data={"model": "gpt-image-2", "prompt": "a hat"},
                    files={"image": ("a.png", make_png(16, 16), "image/png")},
                    timeout=120,
                )
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: fake.hits == 1, timeout=30)
    finally:
        fake.stop()
    assert not server.is_alive(), "stop returned while the server still held the request"
    caller.join(30)
    assert not caller.is_alive()
    (ended,) = outcome
    assert isinstance(ended, httpx.HTTPError), ended  # the held request was ended, not answered
